"""What a training run does differently per task: data, model, scores.

`run()` drives either task through the same steps:

    task = load_task(config.data, ...)  # read and split the data (no files yet)
    task.texts("train")                 # texts the vocabulary is learned from
    task.prepare(tokenizer, config)     # token ids and tf.data pipelines
    task.build_model(config, backbone, preprocessor)   # the task model
    task.callbacks(run_dir)             # validation pictures and scores
    task.evaluate(model)                # test-split scores for metrics.json

The task models themselves own their loss, decoding and export.
"""

import os

import numpy as np
import tensorflow as tf

from keras_encoder.data import load_classification_data, split_dataset
from keras_encoder.data.pipeline import (
    DEFAULT_BUCKET_BOUNDARIES,
    classification_dataset,
    masked_lm_dataset,
    padded_length_bounds,
    tagging_dataset,
    tagging_sequences,
    tokenize_all,
    tokenize_units_all,
)
from keras_encoder.data.pretraining import (
    PRETRAINING_CORPORA,
    PRETRAINING_EXTENSIONS,
    load_pretraining_text,
    split_texts,
)
from keras_encoder.data.tagging import (
    TAGGING_CORPORA,
    TAGGING_EXTENSIONS,
    load_tagging_data,
    split_sentences,
)
from keras_encoder.errors import ConfigError, DataError
from keras_encoder.models import EncoderClassifier, EncoderMaskedLM, EncoderPreprocessor, EncoderTagger
from keras_encoder.training.callbacks import (
    ConfusionMatrixCallback,
    TaggingMetricsCallback,
    predict_labels,
)
from keras_encoder.training.metrics import classification_report, confusion_matrix, tagging_report

SPLITS = ("train", "validation", "test")


def task_of(data, task=None):
    """`"tag"` for a tagging corpus or a `.conll`/`.bio` file, `"pretrain"`
    for a built-in pretraining corpus or a `.txt` file, else `"classify"` (or `task`, when given)."""
    if task:
        return task
    if data in PRETRAINING_CORPORA or os.path.splitext(str(data))[1].lower() in PRETRAINING_EXTENSIONS:
        return "pretrain"
    extension = os.path.splitext(str(data))[1].lower()
    return "tag" if data in TAGGING_CORPORA or extension in TAGGING_EXTENSIONS else "classify"


def load_task(data, task, text_column="text", label_column="label", tag_scheme="",
              validation_fraction=0.1, test_fraction=0.1, seed=1234, echo=print, held_out_seeds=None):
    """Read and split the data: a `ClassificationTask`, `TaggingTask` or `PretrainTask`.

    `held_out_seeds` (pretraining on a built-in corpus; other tasks ignore
    it): the split seeds whose held-out task text is left out (`None`:
    `seed` alone).
    """
    if task == "pretrain":
        return PretrainTask(data, validation_fraction, test_fraction, seed, echo, held_out_seeds)
    if data in PRETRAINING_CORPORA:
        raise ConfigError(f"--data {data} is unlabelled text; use it with --task pretrain.")
    if task == "tag":
        return TaggingTask(data, tag_scheme, validation_fraction, test_fraction, seed, echo)
    if data in TAGGING_CORPORA:
        raise ConfigError(f"--data {data} is a tagging corpus; use it with a tagging preset.")
    return ClassificationTask(
        data, text_column, label_column, validation_fraction, test_fraction, seed, echo
    )


def _monitor_check(name, available, kind):
    if name not in available:
        raise ConfigError(
            f"--monitor {name} is not computed for {kind}; choose one of {', '.join(available)}."
        )
    return name, "min" if name.endswith("loss") else "max"


def _batch_options(config, tokenizer, split):
    """Dataset arguments: `--token-dropout` (training batches only), and
    with `--jit-compile` batches padded to the bucket bounds, every split,
    so that XLA compiles each of a few shapes once."""
    return {
        "token_dropout": config.token_dropout if split == "train" else 0.0,
        "unk_id": tokenizer.unk_id,
        "first_regular_id": tokenizer.first_regular_id,
        "padded_lengths": (
            padded_length_bounds(DEFAULT_BUCKET_BOUNDARIES, config.max_length) if config.jit_compile else ()
        ),
    }


def _check_splits(splits, total, source):
    for name in SPLITS:
        if len(splits[name]) == 0:
            raise DataError(
                f"{source}: the {name} split is empty with "
                f"{total} examples; use more data or a larger --{name}-fraction"
            )


class _TextSplits:
    """Sizes and texts of `self.splits`, parts that hold one text per example."""

    def sizes(self):
        return {name: len(self.splits[name]) for name in SPLITS}

    def data_sizes(self):
        """What the presets adapt to: training examples."""
        return {"num_train_examples": len(self.splits["train"])}

    def texts(self, split):
        return self.splits[split].texts


class ClassificationTask(_TextSplits):
    """One label per text: `EncoderClassifier`, scored by accuracy and macro-F1."""

    name = "classify"
    example_noun = "examples"
    scheme = ""

    def __init__(self, data, text_column, label_column, validation_fraction, test_fraction, seed, echo):
        self.data = load_classification_data(data, text_column, label_column)
        echo(self.data.summary())
        self.splits = split_dataset(
            self.data,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
        _check_splits(self.splits, len(self.data), self.data.source)
        self.label_names = self.data.label_names

    def prepare(self, tokenizer, config):
        """Token ids per split (ragged, for probes) and batches."""
        self.tokenizer = tokenizer
        self.ids = {name: tokenize_all(tokenizer, part.texts) for name, part in self.splits.items()}
        self.datasets = {
            name: classification_dataset(
                self.ids[name],
                self.splits[name].labels,
                config.batch_size,
                shuffle=name == "train",
                seed=config.seed,
                **_batch_options(config, tokenizer, name),
            )
            for name in SPLITS
        }

    def build_model(self, config, backbone, preprocessor):
        return EncoderClassifier(
            backbone,
            num_classes=len(self.label_names),
            preprocessor=preprocessor,
            label_names=self.label_names,
            dropout=config.dropout,
        )

    def preprocessor(self, tokenizer):
        return EncoderPreprocessor(tokenizer)

    def monitor(self, name, crf=False):
        """`(name, mode)` of the validation score `name`."""
        return _monitor_check(name, ("val_loss", "val_accuracy", "val_macro_f1"), "classification")

    def callbacks(self, run_dir):
        return [
            ConfusionMatrixCallback(
                os.path.join(run_dir, "validation"), self.datasets["validation"], self.label_names
            )
        ]

    def evaluate(self, model, split="test"):
        """`(metrics, line)`: `model`'s scores on `split`, keys prefixed by it."""
        labels, predictions = predict_labels(model, self.datasets[split])
        matrix = confusion_matrix(labels, predictions, len(self.label_names))
        report = classification_report(matrix, self.label_names)
        metrics = {
            f"{split}_accuracy": report["accuracy"],
            f"{split}_macro_f1": report["macro_f1"],
            f"{split}_per_class": report["per_class"],
            f"{split}_confusion_matrix": matrix.tolist(),
            "label_names": self.label_names,
        }
        line = f"{split.capitalize()} accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f}"
        return metrics, line


class TaggingTask:
    """One tag per unit (character or word): `EncoderTagger`.

    BIO tag sets are scored by entity F1 (exact spans), others by token
    accuracy; both count each labelled unit once, never padding or
    `[CLS]`/`[SEP]`.
    """

    name = "tag"
    example_noun = "sentences"

    def __init__(self, data, tag_scheme, validation_fraction, test_fraction, seed, echo):
        self.data = load_tagging_data(data, scheme=tag_scheme or "auto")
        echo(self.data.summary())
        self.splits = split_sentences(
            self.data,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            seed=seed,
        )
        _check_splits(self.splits, len(self.data), self.data.source)
        self.tag_names = self.data.tag_names
        self.scheme = self.data.scheme
        self.bio = self.scheme == "bio"

    def sizes(self):
        return {name: len(self.splits[name]) for name in SPLITS}

    def data_sizes(self):
        """What the presets adapt to: training sentences, units and tags."""
        return {
            "num_train_examples": len(self.splits["train"]),
            "num_train_units": self.splits["train"].num_units,
            "num_tags": len(self.tag_names),
        }

    def texts(self, split):
        return self.splits[split].texts()

    def prepare(self, tokenizer, config):
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
                config.batch_size,
                shuffle=name == "train",
                seed=config.seed,
                **_batch_options(config, tokenizer, name),
            )
        # Token ids of every window, for the attention probes.
        self.ids = {name: self.sequences[name][0] for name in SPLITS}

    def preprocessor(self, tokenizer):
        return EncoderPreprocessor(tokenizer, unit=self.data.unit)

    def build_model(self, config, backbone, preprocessor):
        return EncoderTagger(
            backbone,
            self.tag_names,
            preprocessor=preprocessor,
            scheme=self.scheme,
            crf=config.crf,
            window_features=config.window_features,
            window_scale=config.window_scale,
            dropout=config.dropout,
        )

    def monitor(self, name, crf=True):
        """`(name, mode)` of the validation score `name`."""
        # With a CRF the per-token argmax `accuracy` is not computed: the
        # CRF's emission scores alone are not its predictions.
        scores = ("val_loss", "val_token_accuracy") + (() if crf else ("val_accuracy",))
        if self.bio:
            return _monitor_check(name, scores + ("val_entity_f1",), "BIO tagging")
        return _monitor_check(name, scores, "tagging without BIO tags")

    def callbacks(self, run_dir):
        part = self.splits["validation"]
        return [
            TaggingMetricsCallback(
                os.path.join(run_dir, "validation"), part.units, part.tags, self.tag_names, bio=self.bio
            )
        ]

    def evaluate(self, model, split="test"):
        """`(metrics, line)`: `model`'s scores on `split`, keys prefixed by it."""
        part = self.splits[split]
        predicted = model.tag_units(part.units)
        report = tagging_report(part.tags, predicted, self.tag_names, self.bio)
        metrics = {
            f"{split}_token_accuracy": report["token_accuracy"],
            "tag_names": self.tag_names,
            "tag_scheme": self.data.scheme,
            "unit": self.data.unit,
            f"num_{split}_units": part.num_units,
            f"{split}_per_tag": report["per_tag"],
        }
        line = f"{split.capitalize()} token accuracy {report['token_accuracy']:.4f}"
        if self.bio:
            for name in ("entity_precision", "entity_recall", "entity_f1", "per_type"):
                metrics[f"{split}_{name}"] = report[name]
            per_type = ", ".join(
                f"{kind} {scores['f1']:.4f}" for kind, scores in report["per_type"].items()
            )
            line = (
                f"{split.capitalize()} entity F1 {report['entity_f1']:.4f} ({per_type}); "
                f"token accuracy {report['token_accuracy']:.4f}"
            )
        return metrics, line


class PretrainTask(_TextSplits):
    """Unlabelled text: `EncoderMaskedLM`, scored by masked-token accuracy.

    Training batches draw new masks every epoch; the validation and test
    masks are drawn once per process, so every epoch of a run is scored on
    the same tokens (a resumed run draws them anew). The
    finished run's `model.keras` is what `--init` starts a fine-tune from.
    """

    name = "pretrain"
    example_noun = "texts"
    scheme = ""

    def __init__(self, data, validation_fraction, test_fraction, seed, echo, held_out_seeds=None):
        self.data = load_pretraining_text(data, seed, held_out_seeds)
        echo(self.data.summary())
        self.splits = split_texts(self.data, validation_fraction, test_fraction, seed)
        _check_splits(self.splits, len(self.data), self.data.source)

    def prepare(self, tokenizer, config):
        self.tokenizer = tokenizer
        self.ids = {name: tokenize_all(tokenizer, part.texts) for name, part in self.splits.items()}
        options = _batch_options(config, tokenizer, "validation")
        self.datasets = {
            name: masked_lm_dataset(
                self.ids[name],
                tokenizer,
                config.batch_size,
                shuffle=name == "train",
                seed=config.seed,
                mask_rate=config.mask_rate,
                mask_spans=config.mask_spans,
                fixed_masks=name != "train",
                padded_lengths=options["padded_lengths"],
            )
            for name in SPLITS
        }

    def preprocessor(self, tokenizer):
        return EncoderPreprocessor(tokenizer)

    def build_model(self, config, backbone, preprocessor):
        return EncoderMaskedLM(
            backbone, preprocessor=preprocessor, mask_rate=config.mask_rate, mask_spans=config.mask_spans
        )

    def monitor(self, name, crf=False):
        """`(name, mode)` of the validation score `name` (`val_accuracy`: of the masked tokens)."""
        return _monitor_check(name, ("val_loss", "val_accuracy"), "pretraining")

    def callbacks(self, run_dir):
        return []

    def evaluate(self, model, split="test"):
        """`(metrics, line)`: masked-token loss and accuracy on `split`'s fixed masks."""
        scores = model.evaluate(self.datasets[split], verbose=0, return_dict=True)
        metrics = {
            f"{split}_masked_lm_accuracy": float(scores["accuracy"]),
            f"{split}_masked_lm_loss": float(scores["loss"]),
            "mask_rate": model.mask_rate,
            "mask_spans": model.mask_spans,
        }
        line = (
            f"{split.capitalize()} masked-LM accuracy {scores['accuracy']:.4f}, "
            f"loss {scores['loss']:.4f}"
        )
        return metrics, line
