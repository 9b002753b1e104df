import numpy as np
import pytest

from keras_encoder.training.metrics import classification_report, confusion_matrix


def test_confusion_matrix_counts():
    matrix = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_report_matches_hand_computation():
    matrix = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    report = classification_report(matrix, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(4 / 6)
    # a: p=1/2 r=1/2 f=1/2; b: p=1/2 r=1 f=2/3; c: p=1 r=2/3 f=4/5
    assert report["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)
    assert report["per_class"]["c"]["support"] == 3


def test_class_never_predicted_scores_zero_not_nan():
    report = classification_report(np.array([[3, 0], [2, 0]]), ["x", "y"])
    assert report["per_class"]["y"]["f1"] == 0.0
    assert np.isfinite(report["macro_f1"])


# === Tagging metrics ===

from keras_encoder.training.metrics import entity_report  # noqa: E402
from keras_encoder.training.metrics import token_accuracy  # noqa: E402


def test_entity_report_matches_hand_computation():
    truth = [
        ["B-PER", "I-PER", "O", "B-LOC"],  # PER(0,2), LOC(3,4)
        ["B-LOC", "I-LOC", "I-LOC", "O", "B-PER"],  # LOC(0,3), PER(4,5)
        ["O", "O", "B-LOC"],  # LOC(2,3)
        ["B-PER", "O"],  # PER(0,1)
    ]
    predicted = [
        ["B-PER", "I-PER", "O", "B-PER"],  # hit; PER(3,4) is a wrong type
        ["B-LOC", "I-LOC", "O", "O", "B-PER"],  # LOC(0,2) partial; PER hit
        ["O", "O", "B-LOC"],  # hit
        ["B-PER", "O"],  # hit
    ]
    report = entity_report(truth, predicted)
    # PER: 3 hits, 4 predicted, 3 actual -> p=3/4, r=1, f1=6/7
    # LOC: 1 hit, 2 predicted, 3 actual -> p=1/2, r=1/3, f1=2/5
    # micro: 4 hits, 6 predicted, 6 actual -> 2/3 each
    assert sorted(report["per_type"]) == ["LOC", "PER"]
    per = report["per_type"]["PER"]
    assert per["precision"] == pytest.approx(3 / 4)
    assert per["recall"] == pytest.approx(1.0)
    assert per["f1"] == pytest.approx(6 / 7)
    assert per["support"] == 3
    loc = report["per_type"]["LOC"]
    assert loc["precision"] == pytest.approx(1 / 2)
    assert loc["recall"] == pytest.approx(1 / 3)
    assert loc["f1"] == pytest.approx(2 / 5)
    assert loc["support"] == 3
    assert report["precision"] == pytest.approx(2 / 3)
    assert report["recall"] == pytest.approx(2 / 3)
    assert report["f1"] == pytest.approx(2 / 3)
    assert report["support"] == 6
    # Micro F1 (pooled counts) is not the mean of the per-type F1s.
    assert report["f1"] != pytest.approx((6 / 7 + 2 / 5) / 2)


def test_entity_report_perfect_prediction():
    tags = [["B-ORG", "I-ORG", "O", "B-PER"], ["O"], ["B-LOC"]]
    report = entity_report(tags, [list(t) for t in tags])
    assert (report["precision"], report["recall"], report["f1"], report["support"]) == (1.0, 1.0, 1.0, 3)
    assert {kind: row["f1"] for kind, row in report["per_type"].items()} == {
        "LOC": 1.0,
        "ORG": 1.0,
        "PER": 1.0,
    }


def test_wrong_type_is_a_false_positive_and_a_false_negative():
    report = entity_report([["O", "B-PER", "I-PER"]], [["O", "B-LOC", "I-LOC"]])
    assert report["per_type"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # LOC was predicted once, never true: precision 0, support 0.
    assert report["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert (report["precision"], report["recall"], report["f1"], report["support"]) == (0.0, 0.0, 0.0, 1)


def test_wrong_type_among_hits():
    truth = [["B-PER", "O", "B-PER", "O"]]
    predicted = [["B-PER", "O", "B-ORG", "O"]]
    report = entity_report(truth, predicted)
    # One hit out of 2 predicted and 2 actual.
    assert report["precision"] == pytest.approx(1 / 2)
    assert report["recall"] == pytest.approx(1 / 2)
    assert report["per_type"]["PER"]["precision"] == pytest.approx(1.0)
    assert report["per_type"]["PER"]["recall"] == pytest.approx(1 / 2)
    assert report["per_type"]["ORG"]["precision"] == 0.0
    assert report["per_type"]["ORG"]["support"] == 0


@pytest.mark.parametrize(
    "predicted",
    [
        ["B-PER", "I-PER", "O", "O"],  # too short
        ["O", "B-PER", "I-PER", "O"],  # shifted
        ["B-PER", "I-PER", "I-PER", "I-PER"],  # too long
        ["B-PER", "B-PER", "I-PER", "O"],  # split in two
    ],
)
def test_partially_overlapping_span_is_wrong(predicted):
    truth = [["B-PER", "I-PER", "I-PER", "O"]]
    report = entity_report(truth, [predicted])
    assert report["recall"] == 0.0
    assert report["precision"] == 0.0
    assert report["f1"] == 0.0
    assert report["per_type"]["PER"]["support"] == 1


def test_entity_report_decodes_predictions_leniently():
    # An I- tag that starts an entity still forms a span (as in conlleval).
    report = entity_report([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]])
    assert (report["precision"], report["recall"], report["f1"]) == (1.0, 1.0, 1.0)


def test_all_o_gives_zeros_without_dividing_by_zero():
    report = entity_report([["O", "O"], ["O"]], [["O", "O"], ["O"]])
    assert report == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "per_type": {}}
    assert entity_report([], []) == report
    assert entity_report([[]], [[]]) == report
    # Entities predicted where there are none: precision 0, recall 0 (not NaN).
    spurious = entity_report([["O", "O"]], [["B-LOC", "O"]])
    assert (spurious["precision"], spurious["recall"], spurious["f1"], spurious["support"]) == (0.0, 0.0, 0.0, 0)
    # Entities missed entirely.
    missed = entity_report([["B-LOC", "O"]], [["O", "O"]])
    assert (missed["precision"], missed["recall"], missed["f1"], missed["support"]) == (0.0, 0.0, 0.0, 1)


def test_entity_report_mismatched_lengths():
    with pytest.raises(ValueError, match=r"^Sentence 1 has 3 true tags but 2 predicted\.$"):
        entity_report([["O"], ["B-PER", "I-PER", "O"]], [["O"], ["B-PER", "I-PER"]])
    with pytest.raises(ValueError):
        entity_report([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError):
        entity_report([["O"]], [["O"], ["O"]])


def test_token_accuracy_hand_example():
    truth = [["B-PER", "I-PER", "O"], ["n", "v"], ["O"]]
    predicted = [["B-PER", "O", "O"], ["n", "n"], ["O"]]
    assert token_accuracy(truth, predicted) == pytest.approx(4 / 6)
    assert token_accuracy([["a", "b"]], [["a", "b"]]) == 1.0
    assert token_accuracy([["a", "b"]], [["b", "a"]]) == 0.0
    assert token_accuracy([], []) == 0.0
    assert token_accuracy([[]], [[]]) == 0.0


def test_token_accuracy_mismatched_lengths():
    with pytest.raises(ValueError, match=r"^2 true tags but 1 predicted in one sentence\.$"):
        token_accuracy([["a"], ["a", "b"]], [["a"], ["a"]])
    with pytest.raises(ValueError):
        token_accuracy([["a"]], [["a"], ["b"]])
