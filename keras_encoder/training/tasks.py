"""What differs between tasks in a training run: data, head, metrics, export.

`run()` drives a task through the same steps whatever it is:

    task = make_task(config, echo)   # read and split the data (no files yet)
    task.texts("train")              # texts the vocabulary is learned from
    task.prepare(tokenizer)          # token ids and tf.data pipelines
    task.build_model(encoder_config, encoder) ; task.compile_args(model)
    task.callbacks(run_dir)          # validation pictures and metrics
    task.evaluate(model)             # test-split metrics for metrics.json
    task.export(model, path)         # raw-string SavedModel
"""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_encoder.data import load_classification_data, split_dataset
from keras_encoder.data.pipeline import (
    bio_transitions,
    classification_dataset,
    tagging_dataset,
    tagging_sequences,
    tokenize_all,
    tokenize_units_all,
)
from keras_encoder.data.tagging import TAGGING_CORPORA, load_tagging_data, split_sentences
from keras_encoder.errors import ConfigError, DataError
from keras_encoder.export import export_classifier, export_tagger
from keras_encoder.layers import ChainCRFLoss
from keras_encoder.models import build_classifier, build_token_classifier, find_crf
from keras_encoder.training.callbacks import (
    ConfusionMatrixCallback,
    TagPredictor,
    TaggingMetricsCallback,
    predict_labels,
)
from keras_encoder.training.keras_metrics import WeightedTokenAccuracy
from keras_encoder.training.metrics import (
    classification_report,
    confusion_matrix,
    tagging_report,
)

SPLITS = ("train", "validation", "test")


def make_task(config, echo=print):
    if config.resolved_task == "tag":
        return TaggingTask(config, echo)
    if config.data in TAGGING_CORPORA:
        raise ConfigError(
            f"--data {config.data} is a tagging corpus; use it with --task tag (or --task auto)."
        )
    return ClassificationTask(config, echo)


def _monitor(wanted, default, available, kind):
    name = default if wanted == "auto" else wanted
    if name not in available:
        raise ConfigError(
            f"--monitor {name} is not computed for {kind}; choose one of {', '.join(available)}."
        )
    return name, "min" if name.endswith("loss") else "max"


def _token_dropout(config, tokenizer, split):
    """Dataset arguments for `--token-dropout`: training batches only."""
    return {
        "token_dropout": config.token_dropout if split == "train" else 0.0,
        "unk_id": tokenizer.unk_id,
        "first_regular_id": tokenizer.first_regular_id,
    }


def _check_splits(splits, total, source):
    for name in SPLITS:
        if len(splits[name]) == 0:
            raise DataError(
                f"{source}: the {name} split is empty with "
                f"{total} examples; use more data or a larger --{name}-fraction"
            )


class ClassificationTask:
    """One label per text: pooled encoder output -> class logits."""

    name = "classify"
    example_noun = "examples"

    def __init__(self, config, echo):
        self.config = config
        self.data = load_classification_data(config.data, config.text_column, config.label_column)
        echo(self.data.summary())
        self.splits = split_dataset(
            self.data,
            validation_fraction=config.validation_fraction,
            test_fraction=config.test_fraction,
            seed=config.seed,
        )
        _check_splits(self.splits, len(self.data), self.data.source)
        self.label_names = self.data.label_names

    def sizes(self):
        return {name: len(self.splits[name]) for name in SPLITS}

    def texts(self, split):
        return self.splits[split].texts

    def prepare(self, tokenizer):
        """Token ids per split (ragged, for pretraining and probes) and batches."""
        self.tokenizer = tokenizer
        self.ids = {name: tokenize_all(tokenizer, part.texts) for name, part in self.splits.items()}
        self.datasets = {
            name: classification_dataset(
                self.ids[name],
                self.splits[name].labels,
                self.config.batch_size,
                shuffle=name == "train",
                seed=self.config.seed,
                **_token_dropout(self.config, tokenizer, name),
            )
            for name in SPLITS
        }

    def build_model(self, encoder_config, encoder):
        return build_classifier(
            encoder_config, len(self.label_names), encoder=encoder, ngram_buckets=self.config.resolved_ngram_features()
        )

    def monitor(self, wanted):
        """`(name, mode)` of the validation score for `--monitor wanted`."""
        return _monitor(wanted, "val_loss", ("val_loss", "val_accuracy", "val_macro_f1"), "classification")

    def compile_args(self, model):
        return {
            "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        }

    def callbacks(self, run_dir):
        return [
            ConfusionMatrixCallback(
                os.path.join(run_dir, "validation"), self.datasets["validation"], self.label_names
            )
        ]

    def evaluate(self, model):
        labels, predictions = predict_labels(model, self.datasets["test"])
        matrix = confusion_matrix(labels, predictions, len(self.label_names))
        report = classification_report(matrix, self.label_names)
        metrics = {
            "test_accuracy": report["accuracy"],
            "test_macro_f1": report["macro_f1"],
            "test_per_class": report["per_class"],
            "test_confusion_matrix": matrix.tolist(),
            "label_names": self.label_names,
        }
        line = f"Test accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f}"
        return metrics, line

    def export(self, model, path):
        export_classifier(model, self.tokenizer, self.label_names, path)


class TaggingTask:
    """One tag per unit (character or word): sequence output -> tag logits.

    BIO tag sets are scored by entity F1 (exact spans), others by token
    accuracy; both count each labelled unit once, never padding or
    `[CLS]`/`[SEP]`.
    """

    name = "tag"
    example_noun = "sentences"

    def __init__(self, config, echo):
        self.config = config
        self.data = load_tagging_data(config.data, scheme=config.tag_scheme)
        echo(self.data.summary())
        self.splits = split_sentences(
            self.data,
            validation_fraction=config.validation_fraction,
            test_fraction=config.test_fraction,
            seed=config.seed,
        )
        _check_splits(self.splits, len(self.data), self.data.source)
        self.tag_names = self.data.tag_names
        self.bio = self.data.scheme == "bio"

    def sizes(self):
        return {name: len(self.splits[name]) for name in SPLITS}

    def texts(self, split):
        return self.splits[split].texts()

    def prepare(self, tokenizer):
        self.tokenizer = tokenizer
        self.sequences = {}
        self.datasets = {}
        for name in SPLITS:
            part = self.splits[name]
            pieces = tokenize_units_all(tokenizer, part.units)
            tag_ids = part.tag_ids()
            tag_ids = tf.RaggedTensor.from_row_lengths(
                np.asarray([t for sentence in tag_ids for t in sentence], dtype="int32"),
                np.asarray([len(sentence) for sentence in tag_ids], dtype="int64"),
            )
            self.sequences[name] = tagging_sequences(tokenizer, pieces, tag_ids)
            self.datasets[name] = tagging_dataset(
                self.sequences[name],
                self.config.batch_size,
                shuffle=name == "train",
                seed=self.config.seed,
                **_token_dropout(self.config, tokenizer, name),
            )
        # Token ids of every window, for masked-LM pretraining and probes.
        self.ids = {name: self.sequences[name][0] for name in SPLITS}

    def num_train_tokens(self):
        """Tokens (pieces, with `[CLS]`/`[SEP]`) of the training windows."""
        return int(self.ids["train"].row_lengths().numpy().sum())

    def build_model(self, encoder_config, encoder):
        allowed = bio_transitions(self.tag_names)[0].tolist() if self.bio else None
        return build_token_classifier(
            encoder_config,
            len(self.tag_names),
            encoder=encoder,
            crf=self.config.crf,
            allowed=allowed,
            window_buckets=self.config.resolved_window_features(
                len(self.tag_names), num_tokens=self.num_train_tokens()
            ),
            window_scale=self.config.resolved_window_scale(),
        )

    def monitor(self, wanted):
        """`(name, mode)` of the validation score for `--monitor wanted`."""
        # With --crf the per-token argmax `accuracy` is not computed: the
        # CRF's emission scores alone are not its predictions.
        scores = ("val_loss", "val_token_accuracy") + (() if self.config.crf else ("val_accuracy",))
        if self.bio:
            return _monitor(wanted, "val_entity_f1", scores + ("val_entity_f1",), "BIO tagging")
        return _monitor(wanted, "val_token_accuracy", scores, "tagging without BIO tags")

    def compile_args(self, model):
        # Batches carry per-token weights (1 at each unit's first piece, 0
        # elsewhere): the loss is averaged over labelled units only (and the
        # CRF chains labelled units only).
        crf = find_crf(model)
        return {
            "loss": ChainCRFLoss(crf)
            if crf is not None
            else keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight"
            ),
            "weighted_metrics": [] if crf is not None else [WeightedTokenAccuracy(name="accuracy")],
        }

    def callbacks(self, run_dir):
        part = self.splits["validation"]
        return [
            TaggingMetricsCallback(
                os.path.join(run_dir, "validation"),
                TagPredictor(self.tokenizer, self.tag_names, bio=self.bio),
                part.units,
                part.tags,
                self.tag_names,
                bio=self.bio,
            )
        ]

    def evaluate(self, model):
        part = self.splits["test"]
        predicted = TagPredictor(self.tokenizer, self.tag_names, bio=self.bio)(model, part.units)
        report = tagging_report(part.tags, predicted, self.tag_names, self.bio)
        metrics = {
            "test_token_accuracy": report["token_accuracy"],
            "tag_names": self.tag_names,
            "tag_scheme": self.data.scheme,
            "unit": self.data.unit,
            "num_test_units": part.num_units,
            "test_per_tag": report["per_tag"],
        }
        line = f"Test token accuracy {report['token_accuracy']:.4f}"
        if self.bio:
            for name in ("entity_precision", "entity_recall", "entity_f1", "per_type"):
                metrics[f"test_{name}"] = report[name]
            per_type = ", ".join(
                f"{kind} {scores['f1']:.4f}" for kind, scores in report["per_type"].items()
            )
            line = (
                f"Test entity F1 {report['entity_f1']:.4f} ({per_type}); "
                f"token accuracy {report['token_accuracy']:.4f}"
            )
        return metrics, line

    def export(self, model, path):
        export_tagger(
            model, self.tokenizer, self.tag_names, path, scheme=self.data.scheme, unit=self.data.unit
        )


