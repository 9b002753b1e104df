"""Classification metrics from a confusion matrix (numpy only)."""

import numpy as np


def confusion_matrix(labels, predictions, num_classes):
    """Counts `(num_classes, num_classes)`: rows true, columns predicted."""
    matrix = np.zeros((num_classes, num_classes), dtype="int64")
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def classification_report(matrix, label_names):
    """Accuracy, macro-F1 and per-class precision/recall/F1 from counts."""
    matrix = np.asarray(matrix, dtype="float64")
    true_positive = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(predicted), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(actual), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    total = matrix.sum()
    return {
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "macro_f1": float(f1.mean()) if len(f1) else 0.0,
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(label_names, precision, recall, f1, actual)
        },
    }


def entity_report(true_tags, predicted_tags):
    """Entity-level precision/recall/F1: exact span and type match.

    Args:
        true_tags, predicted_tags: lists of BIO tag sequences (lists of
            str), aligned sentence by sentence and unit by unit.

    Returns:
        dict: micro-averaged `precision`, `recall`, `f1` over all entity
        types, and `per_type` {type: precision, recall, f1, support}.
        Spans are decoded leniently (`bio_spans`), as the CoNLL script does.
    """
    from keras_encoder.data.tagging import bio_spans

    counts = {}  # type -> [true positives, predicted, actual]
    for sentence, (truth, predicted) in enumerate(zip(true_tags, predicted_tags, strict=True)):
        if len(truth) != len(predicted):
            raise ValueError(
                f"Sentence {sentence} has {len(truth)} true tags but {len(predicted)} predicted."
            )
        actual_spans = set(bio_spans(truth))
        predicted_spans = set(bio_spans(predicted))
        for kind, *_ in actual_spans:
            counts.setdefault(kind, [0, 0, 0])[2] += 1
        for span in predicted_spans:
            row = counts.setdefault(span[0], [0, 0, 0])
            row[1] += 1
            row[0] += span in actual_spans

    def scores(hits, predicted, actual):
        precision = hits / predicted if predicted else 0.0
        recall = hits / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "support": actual}

    totals = [sum(row[i] for row in counts.values()) for i in range(3)]
    return {
        **scores(*totals),
        "per_type": {kind: scores(*counts[kind]) for kind in sorted(counts)},
    }


def token_accuracy(true_tags, predicted_tags):
    """Share of units whose predicted tag equals the true one."""
    total = correct = 0
    for truth, predicted in zip(true_tags, predicted_tags, strict=True):
        if len(truth) != len(predicted):
            raise ValueError(f"{len(truth)} true tags but {len(predicted)} predicted in one sentence.")
        total += len(truth)
        correct += sum(a == b for a, b in zip(truth, predicted))
    return correct / total if total else 0.0


def tagging_report(true_tags, predicted_tags, tag_names, bio):
    """Every tagging score, from aligned true and predicted tag sequences.

    Returns:
        dict: `token_accuracy`, `confusion_matrix` (tag counts, rows true),
        `per_tag` (precision/recall/F1 per tag) and, when `bio`,
        `entity_precision`, `entity_recall`, `entity_f1` and `per_type`
        from `entity_report`.
    """
    index = {name: i for i, name in enumerate(tag_names)}
    matrix = confusion_matrix(
        [index[tag] for sentence in true_tags for tag in sentence],
        [index[tag] for sentence in predicted_tags for tag in sentence],
        len(tag_names),
    )
    report = {
        "token_accuracy": token_accuracy(true_tags, predicted_tags),
        "confusion_matrix": matrix,
        "per_tag": classification_report(matrix, tag_names)["per_class"],
    }
    if bio:
        entities = entity_report(true_tags, predicted_tags)
        report.update(
            entity_precision=entities["precision"],
            entity_recall=entities["recall"],
            entity_f1=entities["f1"],
            per_type=entities["per_type"],
        )
    return report
