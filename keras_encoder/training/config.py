"""`TrainConfig`: one training run, every value that ran, in one JSON file.

A config is made from a preset (`keras_encoder.training.presets`) and the
values a user gives, by `TrainConfig.from_preset`; every field holds the
literal value the run uses, so `logs/<run>/config.json` says exactly what
ran. Nothing here imports TensorFlow or Keras.
"""

import dataclasses
import json
import os

from keras_encoder.errors import ConfigError
from keras_encoder.training.presets import PRESETS

TASKS = ("classify", "tag", "pretrain")
TAG_SCHEMES = ("bio", "plain")
POSITION_KINDS = ("sinusoidal", "learned", "rotary", "none")
POOLING_MODES = ("cls", "mean")
ACTIVATIONS = ("gelu", "relu", "silu", "tanh")
# Validation scores that can pick the best checkpoint and stop training;
# losses are minimised, the rest maximised.
# Projections LoRA can adapt (`keras_encoder.adapters.LORA_TARGETS`).
LORA_TARGETS = ("query", "key", "value", "attention_output", "ffn_inner", "ffn_outer")
# Quantized exports (`keras_encoder.compress.quantize`).
QUANTIZE_MODES = ("int8", "int8-weights")
# Longest masked span (`keras_encoder.data.masking.SPAN_PROBABILITIES`).
MAX_MASK_SPANS = 4
MONITORS = ("val_loss", "val_accuracy", "val_macro_f1", "val_token_accuracy", "val_entity_f1")
_CLASSIFY = PRESETS["classify"]


@dataclasses.dataclass
class TrainConfig:
    """Everything `python train.py` needs; written to `logs/<run>/config.json`.

    The field defaults are the `classify` preset on the built-in reviews;
    `TrainConfig.from_preset(name, **values)` starts from another preset.
    Field meanings are in `train.py --help`, the reasons for the values in
    `presets.py`.
    """

    # Data: a built-in corpus name ("reviews", "peoples-daily-ner",
    # "peoples-daily-pos"), a CSV/TSV/JSONL file (classification) or a
    # CoNLL file (tagging).
    data: str = "reviews"
    text_column: str = "text"
    label_column: str = "label"
    preset: str = "classify"
    # A pretrained start: a Hugging Face BERT directory or one of our run
    # directories ("" trains from scratch). Its architecture and tokenizer
    # replace the model and vocabulary fields.
    init: str = ""
    task: str = _CLASSIFY["task"]
    # Tagging only: "bio" or "plain", read off the tags unless given.
    tag_scheme: str = ""
    seed: int = _CLASSIFY["seed"]
    validation_fraction: float = _CLASSIFY["validation_fraction"]
    test_fraction: float = _CLASSIFY["test_fraction"]
    vocabulary_size: int = _CLASSIFY["vocabulary_size"]
    max_length: int = _CLASSIFY["max_length"]
    layers: int = _CLASSIFY["layers"]
    hidden: int = _CLASSIFY["hidden"]
    heads: int = _CLASSIFY["heads"]
    intermediate: int = _CLASSIFY["intermediate"]
    dropout: float = _CLASSIFY["dropout"]
    position: str = _CLASSIFY["position"]
    pooling: str = _CLASSIFY["pooling"]
    norm_first: bool = _CLASSIFY["norm_first"]
    embedding_norm: bool = _CLASSIFY["embedding_norm"]
    bigram_buckets: int = _CLASSIFY["bigram_buckets"]
    activation: str = _CLASSIFY["activation"]
    token_dropout: float = _CLASSIFY["token_dropout"]
    crf: bool = _CLASSIFY["crf"]
    window_features: int = _CLASSIFY["window_features"]
    window_scale: float = _CLASSIFY["window_scale"]
    ema: float = _CLASSIFY["ema"]
    # XLA: batches padded to the bucket bounds, one compiled program each.
    jit_compile: bool = _CLASSIFY["jit_compile"]
    epochs: int = _CLASSIFY["epochs"]
    batch_size: int = _CLASSIFY["batch_size"]
    learning_rate: float = _CLASSIFY["learning_rate"]
    warmup_fraction: float = _CLASSIFY["warmup_fraction"]
    weight_decay: float = _CLASSIFY["weight_decay"]
    patience: int = _CLASSIFY["patience"]
    monitor: str = _CLASSIFY["monitor"]
    logdir: str = _CLASSIFY["logdir"]
    # The run directory's name; the data's name when not given.
    run_name: str = ""
    probe_sentences: int = _CLASSIFY["probe_sentences"]
    # LoRA: adapters of this rank on `lora_targets` (comma-separated
    # projection names) train, with the task head; the backbone is frozen.
    lora_rank: int = _CLASSIFY["lora_rank"]
    lora_alpha: float = _CLASSIFY["lora_alpha"]
    lora_targets: str = _CLASSIFY["lora_targets"]
    # AdaLoRA: SVD-form adapters of initial rank `adalora_rank` on
    # `lora_targets` (scaled by `lora_alpha`), pruned during training to an
    # average of `adalora_target_rank` per kernel; the backbone is frozen.
    adalora_rank: int = _CLASSIFY["adalora_rank"]
    adalora_target_rank: int = _CLASSIFY["adalora_target_rank"]
    # Prefix tuning: this many learned key/value vectors per head in every
    # block train, with the task head; the backbone is frozen.
    prefix_length: int = _CLASSIFY["prefix_length"]
    # Pretraining (task "pretrain"): share of tokens masked and predicted,
    # and the longest span of consecutive tokens masked together.
    mask_rate: float = _CLASSIFY["mask_rate"]
    mask_spans: int = _CLASSIFY["mask_spans"]
    # Pretraining on a built-in corpus: more split seeds (comma-separated)
    # whose validation and test text of the built-in Chinese tasks is left
    # out besides `seed`'s. Fine-tuning from the run may use any of them.
    held_out_seeds: str = _CLASSIFY["held_out_seeds"]
    # Distillation: a finished classification run to learn from ("": none);
    # the student keeps `layers` of its blocks (see keras_encoder.compress.distill).
    teacher: str = ""
    distill_temperature: float = 2.0
    distill_weight: float = 0.5
    distill_hidden_weight: float = 0.0
    # Export: "" keeps float32; "int8" or "int8-weights" quantizes the
    # exported model (model.keras stays float32).
    quantize: str = ""

    def __post_init__(self):
        if not self.run_name:
            base = os.path.basename(str(self.data).rstrip("/\\")) or "run"
            self.run_name = os.path.splitext(base)[0] or "run"
        self.validate()

    @classmethod
    def from_preset(cls, preset, **values):
        """The preset's values, overridden by `values`."""
        if preset not in PRESETS:
            raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}. Received: {preset!r}")
        return cls.from_dict({**PRESETS[preset], **values, "preset": preset})

    def validate(self):
        """Raise `ConfigError` naming the first flag out of range."""
        for name in (
            "vocabulary_size", "max_length", "layers", "hidden", "heads",
            "intermediate", "epochs", "batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"--{_flag(name)} must be a positive integer. Received: {value!r}")
        for name in ("patience", "probe_sentences", "seed", "bigram_buckets", "window_features", "lora_rank",
                     "prefix_length", "adalora_rank", "adalora_target_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"--{_flag(name)} must be a non-negative integer. Received: {value!r}")
        for name, choices in (
            ("preset", tuple(PRESETS)),
            ("task", TASKS),
            ("monitor", MONITORS),
            ("position", POSITION_KINDS),
            ("pooling", POOLING_MODES),
            ("activation", ACTIVATIONS),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"--{_flag(name)} must be one of {', '.join(choices)}. "
                    f"Received: {getattr(self, name)!r}"
                )
        if self.quantize and self.quantize not in QUANTIZE_MODES:
            raise ConfigError(
                f"--quantize must be one of {', '.join(QUANTIZE_MODES)}. Received: {self.quantize!r}"
            )
        if self.task == "tag" and self.tag_scheme and self.tag_scheme not in TAG_SCHEMES:
            raise ConfigError(
                f"--tag-scheme must be one of {', '.join(TAG_SCHEMES)}. Received: {self.tag_scheme!r}"
            )
        if self.max_length < 3:
            raise ConfigError(f"--max-length must be at least 3 ([CLS], one token, [SEP]). Received: {self.max_length}")
        if self.vocabulary_size < 16:
            raise ConfigError(f"--vocabulary-size must be at least 16. Received: {self.vocabulary_size}")
        if not isinstance(self.learning_rate, (int, float)) or not self.learning_rate > 0:
            raise ConfigError(f"--learning-rate must be positive. Received: {self.learning_rate!r}")
        for name in ("warmup_fraction", "weight_decay", "validation_fraction", "test_fraction", "token_dropout", "ema"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"--{_flag(name)} must be in [0, 1). Received: {value!r}")
        if self.validation_fraction <= 0:
            raise ConfigError(
                "--validation-fraction must be positive: early stopping and the "
                f"checkpoint need a validation split. Received: {self.validation_fraction!r}"
            )
        alpha = self.lora_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha < float("inf"):
            raise ConfigError(f"--lora-alpha must be a non-negative number (0: the rank). Received: {alpha!r}")
        targets = self.lora_target_names()
        unknown = [name for name in targets if name not in LORA_TARGETS]
        if unknown or not targets:
            raise ConfigError(
                f"--lora-targets must be a comma-separated list of {', '.join(LORA_TARGETS)}. "
                f"Received: {self.lora_targets!r}"
            )
        if self.lora_rank and self.prefix_length:
            raise ConfigError(
                "--lora-rank and --prefix-length are two ways to fine-tune a frozen backbone; "
                f"give one of them (received --lora-rank {self.lora_rank} "
                f"--prefix-length {self.prefix_length})."
            )
        if self.adalora_rank:
            for flag, value in (("--lora-rank", self.lora_rank), ("--prefix-length", self.prefix_length)):
                if value:
                    raise ConfigError(
                        f"--adalora-rank and {flag} are two ways to fine-tune a frozen backbone; "
                        f"give one of them (received --adalora-rank {self.adalora_rank} {flag} {value})."
                    )
            if self.ema:
                raise ConfigError(
                    "--adalora-rank does not combine with a weight average; use --ema 0 "
                    f"(received --ema {self.ema})."
                )
            if not 1 <= self.adalora_target_rank <= self.adalora_rank:
                raise ConfigError(
                    f"--adalora-target-rank must be from 1 to --adalora-rank ({self.adalora_rank}); "
                    f"leave it out for half of it. Received: {self.adalora_target_rank}"
                )
        elif self.adalora_target_rank:
            raise ConfigError(
                "--adalora-target-rank applies with --adalora-rank only; give both or leave it out "
                f"(received --adalora-target-rank {self.adalora_target_rank})."
            )
        if self.prefix_length and self.ema:
            raise ConfigError(
                "--prefix-length does not combine with a weight average; use --ema 0 "
                f"(received --ema {self.ema})."
            )
        if isinstance(self.mask_rate, bool) or not isinstance(self.mask_rate, (int, float)) or not 0 < self.mask_rate < 1:
            raise ConfigError(f"--mask-rate must be in (0, 1). Received: {self.mask_rate!r}")
        if self.task != "pretrain" and self.mask_rate != PRESETS["pretrain"]["mask_rate"]:
            raise ConfigError("--mask-rate applies to pretraining only (--task pretrain); leave it out.")
        spans = self.mask_spans
        if isinstance(spans, bool) or not isinstance(spans, int) or not 1 <= spans <= MAX_MASK_SPANS:
            raise ConfigError(f"--mask-spans must be an integer from 1 to {MAX_MASK_SPANS}. Received: {spans!r}")
        if self.task != "pretrain" and spans != PRESETS["pretrain"]["mask_spans"]:
            raise ConfigError("--mask-spans applies to pretraining only (--task pretrain); leave it out.")
        self.held_out_seed_list()  # raises on a malformed list
        if self.held_out_seeds:
            from keras_encoder.data.pretraining import PRETRAINING_CORPORA

            if self.task != "pretrain" or self.data not in PRETRAINING_CORPORA:
                raise ConfigError(
                    f"--held-out-seeds applies to pretraining on {' or '.join(PRETRAINING_CORPORA)} only; "
                    "leave it out."
                )
        if self.task == "pretrain":
            for flag, value in (("--lora-rank", self.lora_rank), ("--prefix-length", self.prefix_length),
                                ("--adalora-rank", self.adalora_rank), ("--teacher", self.teacher), ("--quantize", self.quantize),
                                ("--token-dropout", self.token_dropout), ("--crf", self.crf),
                                ("--window-features", self.window_features)):
                if value:
                    raise ConfigError(
                        f"{flag} does not apply to pretraining, which trains every weight of a "
                        "masked-LM encoder to be fine-tuned later (--init); leave it out."
                    )
        if self.teacher:
            from keras_encoder.compress.distill import check_distillation_values

            check_distillation_values(self.distill_temperature, self.distill_weight, self.distill_hidden_weight)
            for flag, value in (("--init", self.init), ("--lora-rank", self.lora_rank),
                                ("--adalora-rank", self.adalora_rank), ("--prefix-length", self.prefix_length)):
                if value:
                    raise ConfigError(
                        f"--teacher trains a smaller copy of the teacher, its weights its start; "
                        f"{flag} does not combine with it."
                    )
            if self.task != "classify":
                raise ConfigError("--teacher distils classifiers only; tagging is not supported.")
        if self.lora_rank and self.ema:
            raise ConfigError(
                "--lora-rank does not combine with a weight average; use --ema 0 "
                f"(received --ema {self.ema})."
            )
        scale = self.window_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
            raise ConfigError(f"--window-scale must be a positive finite number. Received: {scale!r}")
        if self.task == "classify":
            if self.window_features:
                raise ConfigError("--window-features applies to tagging only; use 0 for classification.")
            if self.crf:
                raise ConfigError("--crf applies to tagging only; use --no-crf for classification.")
        if os.sep in self.run_name or self.run_name in (".", ".."):
            raise ConfigError(f"--run-name must be a plain directory name. Received: {self.run_name!r}")
        if self.hidden % self.heads:
            raise ConfigError(
                f"--heads must divide --hidden. Received: hidden={self.hidden}, heads={self.heads}"
            )
        if self.position == "rotary" and (self.hidden // self.heads) % 2:
            raise ConfigError(
                "--position rotary needs an even head size (--hidden / --heads). "
                f"Received: hidden={self.hidden}, heads={self.heads}"
            )

    def held_out_seed_list(self):
        """The split seeds whose held-out text a built-in pretraining corpus leaves out, as ints."""
        return parse_held_out_seeds(self.held_out_seeds, self.seed)

    def lora_target_names(self):
        """`lora_targets` as a tuple of names."""
        if not isinstance(self.lora_targets, str):
            return ()
        return tuple(name.strip() for name in self.lora_targets.split(",") if name.strip())

    def encoder_config(self, vocabulary_size):
        """The `EncoderConfig` for a tokenizer of `vocabulary_size` tokens."""
        from keras_encoder.models.config import EncoderConfig

        return EncoderConfig(
            vocabulary_size=vocabulary_size,
            max_length=self.max_length,
            hidden_dim=self.hidden,
            num_heads=self.heads,
            num_layers=self.layers,
            intermediate_dim=self.intermediate,
            dropout=self.dropout,
            position=self.position,
            norm_first=self.norm_first,
            embedding_norm=self.embedding_norm,
            bigram_buckets=self.bigram_buckets,
            activation=self.activation,
            pooling=self.pooling,
        )

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

    @staticmethod
    def read_json_file(path):
        """The field values in a JSON file (checked against the fields)."""
        try:
            with open(path, encoding="utf-8") as handle:
                values = json.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"Config file not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path} is not valid JSON: {error}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a JSON object of fields.")
        known = {field.name for field in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{path} has unknown field(s): {', '.join(unknown)}. "
                f"Known fields: {', '.join(sorted(known))}"
            )
        return values


def parse_held_out_seeds(text, seed):
    """`seed`, then the other seeds `--held-out-seeds` names, as a tuple of ints."""
    if not text:
        return (seed,)
    parts = [part.strip() for part in text.split(",")] if isinstance(text, str) else [None]
    if not all(part and part.isascii() and part.isdigit() for part in parts):
        raise ConfigError(
            "--held-out-seeds must be a comma-separated list of non-negative integers, such as "
            f"1,2,3. Received: {text!r}"
        )
    values = [int(part) for part in parts]
    if len(set(values)) != len(values):
        raise ConfigError(f"--held-out-seeds names a seed twice. Received: {text!r}")
    return (seed, *(value for value in values if value != seed))


def _flag(name):
    return name.replace("_", "-")
