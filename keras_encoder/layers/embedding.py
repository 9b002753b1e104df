"""Token embeddings plus position information.

Shape legend: B batch, T tokens, D hidden.
"""

import keras

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
        **kwargs,
    ):
        check_positive_int("vocabulary_size", vocabulary_size)
        check_positive_int("sequence_length", sequence_length)
        check_positive_int("hidden_dim", hidden_dim)
        check_choice("position", position, POSITION_KINDS)
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.sequence_length = sequence_length
        self.hidden_dim = hidden_dim
        self.position = position
        self.mask_zero = mask_zero
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
        self.supports_masking = True

    def build(self, input_shape):
        self.token_embedding.build(input_shape)
        if self.position_embedding is not None:
            self.position_embedding.build(tuple(input_shape) + (self.hidden_dim,))

    def call(self, inputs):
        embedded = self.token_embedding(inputs)  # (B, T, D)
        if self.position_embedding is not None:
            embedded = embedded + self.position_embedding(embedded)
        return embedded

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
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
            }
        )
        return config
