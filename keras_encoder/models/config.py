"""`EncoderConfig`: everything needed to rebuild an encoder, as JSON."""

import dataclasses
import json

from keras_encoder.errors import ConfigError

POSITION_KINDS = ("sinusoidal", "learned", "rotary", "none")
POOLING_MODES = ("cls", "mean")


@dataclasses.dataclass
class EncoderConfig:
    """Architecture of a Transformer encoder.

    Defaults describe a small model that trains in minutes on two CPU cores
    and still beats bag-of-n-gram baselines on short sentences.
    """

    # Size of the tokenizer's vocabulary; id 0 is padding.
    vocabulary_size: int = 8000
    # Longest sequence in tokens, [CLS] and [SEP] included.
    max_length: int = 128
    # Width of every token vector.
    hidden_dim: int = 128
    # Attention heads; must divide hidden_dim (head size 32 by default).
    num_heads: int = 4
    # Encoder blocks; two are enough for sentence-level tasks on short text.
    num_layers: int = 2
    # Feed-forward width; 4 x hidden as in the original Transformer.
    intermediate_dim: int = 512
    # Dropout on attention weights, residual branches and the head.
    dropout: float = 0.1
    # "sinusoidal" (no weights, any length), "learned" (BERT-style),
    # "rotary" (relative, applied in attention) or "none".
    position: str = "sinusoidal"
    # Pre-norm trains more stably when deep; post-norm is the paper's.
    norm_first: bool = False
    # LayerNorm on token + position embeddings (as in BERT), so neither the
    # fixed-size sinusoids nor the small initial token vectors dominate.
    embedding_norm: bool = False
    # Hashed (previous, current) and (current, next) id-pair embeddings added
    # to every token; 0 turns them off.
    bigram_buckets: int = 0
    # Feed-forward activation.
    activation: str = "gelu"
    # Sentence vector: the [CLS] position or the mean of real tokens.
    pooling: str = "mean"
    # LayerNorm epsilon.
    layer_norm_epsilon: float = 1e-5
    # BERT-style inputs: with a positive size, the backbone also takes
    # `segment_ids` (added as segment embeddings) and an explicit
    # `padding_mask`, as BERT checkpoints expect; 0 keeps `token_ids` alone.
    segment_vocabulary_size: int = 0
    # BERT's pooler: the pooled output is tanh(Dense([CLS] vector)) instead
    # of `pooling`.
    pooler: bool = False

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Raise `ConfigError` naming the first field that is out of range."""
        for name in (
            "vocabulary_size",
            "max_length",
            "hidden_dim",
            "num_heads",
            "num_layers",
            "intermediate_dim",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(
                    f"EncoderConfig.{name} must be a positive integer. "
                    f"Received: {name}={value!r}"
                )
        if self.vocabulary_size < 2:
            raise ConfigError(
                "EncoderConfig.vocabulary_size must be at least 2 (id 0 is "
                f"padding). Received: vocabulary_size={self.vocabulary_size}"
            )
        if isinstance(self.segment_vocabulary_size, bool) or not isinstance(self.segment_vocabulary_size, int) or self.segment_vocabulary_size < 0:
            raise ConfigError(
                "EncoderConfig.segment_vocabulary_size must be a non-negative integer (0: none). "
                f"Received: segment_vocabulary_size={self.segment_vocabulary_size!r}"
            )
        if isinstance(self.bigram_buckets, bool) or not isinstance(self.bigram_buckets, int) or self.bigram_buckets < 0:
            raise ConfigError(
                "EncoderConfig.bigram_buckets must be a non-negative integer (0: none). "
                f"Received: bigram_buckets={self.bigram_buckets!r}"
            )
        if self.hidden_dim % self.num_heads:
            raise ConfigError(
                f"EncoderConfig.hidden_dim ({self.hidden_dim}) must be "
                f"divisible by num_heads. Received: num_heads={self.num_heads}"
            )
        if self.position == "rotary" and (self.hidden_dim // self.num_heads) % 2:
            raise ConfigError(
                "EncoderConfig.position='rotary' needs an even head size "
                "(hidden_dim / num_heads). Received: "
                f"hidden_dim={self.hidden_dim}, num_heads={self.num_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"EncoderConfig.dropout must be in [0, 1). Received: dropout={self.dropout!r}"
            )
        if self.position not in POSITION_KINDS:
            raise ConfigError(
                f"EncoderConfig.position must be one of {', '.join(POSITION_KINDS)}. "
                f"Received: position={self.position!r}"
            )
        if self.pooling not in POOLING_MODES:
            raise ConfigError(
                f"EncoderConfig.pooling must be one of {', '.join(POOLING_MODES)}. "
                f"Received: pooling={self.pooling!r}"
            )
        if self.layer_norm_epsilon <= 0:
            raise ConfigError(
                "EncoderConfig.layer_norm_epsilon must be positive. "
                f"Received: layer_norm_epsilon={self.layer_norm_epsilon!r}"
            )

    @property
    def head_dim(self):
        return self.hidden_dim // self.num_heads

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"Unknown EncoderConfig field(s): {', '.join(unknown)}. "
                f"Known fields: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"EncoderConfig JSON is not valid: {error}") from None
        if not isinstance(values, dict):
            raise ConfigError("EncoderConfig JSON must be an object of fields.")
        return cls.from_dict(values)
