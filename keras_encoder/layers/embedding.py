"""Token embeddings plus position information.

Shape legend: B batch, T tokens, D hidden.
"""

import keras
from keras import ops

from keras_encoder.layers.layer_utils import check_choice, check_positive_int
from keras_encoder.layers.position import (
    LearnedPositionEmbedding,
    SinusoidalPositionEncoding,
)

POSITION_KINDS = ("sinusoidal", "learned", "none")


@keras.saving.register_keras_serializable(package="keras_encoder")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Embeds token ids and adds position information.

    Looks token ids up in a `(vocabulary_size, hidden_dim)` table and adds a
    sinusoidal encoding, a learned position embedding, or nothing (for
    models whose attention uses rotary embeddings).

    With `bigram_buckets > 0`, every position also gets the embeddings of
    the two id pairs it belongs to, `(previous, current)` and `(current,
    next)`, hashed into a `(bigram_buckets, hidden_dim)` table: the
    character-bigram features that n-gram models of Chinese text rely on,
    given to the encoder directly. A sequence's first position has no
    previous pair; the last pairs with padding. The pairs are computed from
    the ids alone, so they need nothing from the tokenizer and do not depend
    on how much padding follows a sequence.

    Pairs are hashed in int64; on JAX that needs 64-bit mode
    (`jax.config.update("jax_enable_x64", True)`), without which ids from
    2,148 up hash to other buckets than on TensorFlow.

    Masking: with `mask_zero=True` (the default) id 0 is padding and the
    layer produces the Keras implicit mask `(B, T)`, `True` for real tokens,
    which every layer of this package honours downstream.

    Args:
        vocabulary_size: int. Number of token ids.
        sequence_length: int. The longest sequence; sizes the learned
            position table.
        hidden_dim: int. Embedding width `D`.
        position: string. `"sinusoidal"`, `"learned"` or `"none"`. Defaults
            to `"sinusoidal"`.
        mask_zero: bool. Whether id 0 is padding. Defaults to `True`.
        embeddings_initializer: string or initializer. Token table
            initializer. Defaults to `"uniform"`.
        bigram_buckets: int. Size of the hashed bigram table; 0 (the
            default) adds no bigram embeddings.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        inputs: int tensor `(B, T)` of token ids.

    Example:
    >>> layer = TokenAndPositionEmbedding(1000, 128, 64)
    >>> x = layer(keras.ops.array([[5, 8, 2, 0, 0]]))
    >>> tuple(x.shape)
    (1, 5, 64)
    """

    def __init__(
        self,
        vocabulary_size,
        sequence_length,
        hidden_dim,
        position="sinusoidal",
        mask_zero=True,
        embeddings_initializer="uniform",
        bigram_buckets=0,
        **kwargs,
    ):
        check_positive_int("vocabulary_size", vocabulary_size)
        check_positive_int("sequence_length", sequence_length)
        check_positive_int("hidden_dim", hidden_dim)
        check_choice("position", position, POSITION_KINDS)
        check_positive_int("bigram_buckets", bigram_buckets, allow_zero=True)
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.hidden_dim = hidden_dim
        self.position = position
        self.mask_zero = mask_zero
        self.bigram_buckets = bigram_buckets
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer
        )
        self.token_embedding = keras.layers.Embedding(
            vocabulary_size,
            hidden_dim,
            embeddings_initializer=self.embeddings_initializer,
            mask_zero=mask_zero,
            dtype=self.dtype_policy,
            name="token_embedding",
        )
        if position == "sinusoidal":
            self.position_embedding = SinusoidalPositionEncoding(
                dtype=self.dtype_policy, name="position_encoding"
            )
        elif position == "learned":
            self.position_embedding = LearnedPositionEmbedding(
                sequence_length, dtype=self.dtype_policy, name="position_embedding"
            )
        else:
            self.position_embedding = None
        self.bigram_embedding = (
            keras.layers.Embedding(
                bigram_buckets,
                hidden_dim,
                embeddings_initializer=self.embeddings_initializer,
                dtype=self.dtype_policy,
                name="bigram_embedding",
            )
            if bigram_buckets
            else None
        )
        self.supports_masking = True

    def build(self, input_shape):
        self.token_embedding.build(input_shape)
        if self.position_embedding is not None:
            self.position_embedding.build(tuple(input_shape) + (self.hidden_dim,))
        if self.bigram_embedding is not None:
            self.bigram_embedding.build(input_shape)

    def call(self, inputs):
        embedded = self.token_embedding(inputs)  # (B, T, D)
        if self.position_embedding is not None:
            embedded = embedded + self.position_embedding(embedded)
        if self.bigram_embedding is not None:
            embedded = embedded + self._bigram_vectors(inputs)
        return embedded

    def _bigram_vectors(self, inputs):
        ids = ops.cast(inputs, "int64")  # (B, T)
        following = ops.pad(ids[:, 1:], [[0, 0], [0, 1]])  # 0 after the last
        # A multiplier above any vocabulary size keeps pairs apart before
        # the modulo.
        buckets = ops.mod(ids * 1_000_003 + following, self.bigram_buckets)
        right = self.bigram_embedding(buckets)  # (B, T, D): (current, next)
        left = ops.pad(right[:, :-1], [[0, 0], [1, 0], [0, 0]])  # (previous, current)
        return right + left

    def compute_mask(self, inputs, mask=None):
        return self.token_embedding.compute_mask(inputs, mask)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "sequence_length": self.sequence_length,
                "hidden_dim": self.hidden_dim,
                "position": self.position,
                "mask_zero": self.mask_zero,
                "bigram_buckets": self.bigram_buckets,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config
