"""Position information: sinusoidal, learned and rotary.

Shape legend: B batch, T tokens, N heads, H head size, D hidden.
"""

import keras
from keras import ops

from keras_encoder.layers.layer_utils import check_greater, check_positive_int


@keras.saving.register_keras_serializable(package="keras_encoder")
class SinusoidalPositionEncoding(keras.layers.Layer):
    """Fixed sinusoidal position encoding of "Attention Is All You Need".

    For position `p` and channel pair `i`, with `D` the hidden size:
    `PE[p, 2i] = sin(p / max_wavelength ** (2i / D))` and
    `PE[p, 2i + 1] = cos(p / max_wavelength ** (2i / D))`: even channels
    carry sines and odd channels cosines, interleaved. The layer has no
    weights and returns the encoding with the shape of its input, to be
    added to token embeddings. Masks pass through unchanged.

    Args:
        max_wavelength: float. The longest wavelength of the sinusoids.
            Defaults to `10000`.

    Call arguments:
        inputs: float tensor `(B, T, D)`; only its shape and dtype are used.

    Example:
    >>> embeddings = keras.random.normal((2, 5, 8))
    >>> encoded = embeddings + SinusoidalPositionEncoding()(embeddings)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
    """

    def __init__(self, max_wavelength=10000, **kwargs):
        check_greater("max_wavelength", max_wavelength, 1)
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.supports_masking = True

    def call(self, inputs):
        shape = ops.shape(inputs)
        length, hidden_dim = shape[1], shape[-1]
        positions = ops.cast(ops.arange(length), self.compute_dtype)  # (T,)
        channels = ops.arange(hidden_dim)  # (D,)
        # Channels 2i and 2i + 1 share the frequency of pair i.
        exponents = ops.cast(2 * (channels // 2), self.compute_dtype) / ops.cast(
            hidden_dim, self.compute_dtype
        )
        inverse_wavelengths = ops.power(
            ops.cast(self.max_wavelength, self.compute_dtype), -exponents
        )  # (D,)
        angles = positions[:, None] * inverse_wavelengths[None, :]  # (T, D)
        encoding = ops.where(
            (channels % 2 == 0)[None, :], ops.sin(angles), ops.cos(angles)
        )  # (T, D)
        return ops.broadcast_to(encoding[None], shape)  # (B, T, D)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"max_wavelength": self.max_wavelength})
        return config


@keras.saving.register_keras_serializable(package="keras_encoder")
class LearnedPositionEmbedding(keras.layers.Layer):
    """A trainable embedding per position, as in BERT.

    Holds a `(sequence_length, D)` table and returns its first `T` rows
    broadcast to the input shape, to be added to token embeddings. Inputs
    longer than `sequence_length` are an error. Masks pass through unchanged.

    Args:
        sequence_length: int. The longest sequence the layer accepts.
        initializer: string or `keras.initializers.Initializer`. Initializer
            of the table. Defaults to `"glorot_uniform"`.

    Call arguments:
        inputs: float tensor `(B, T, D)`; only its shape is used.

    Example:
    >>> embeddings = keras.random.normal((2, 5, 8))
    >>> encoded = embeddings + LearnedPositionEmbedding(16)(embeddings)

    References:
        - [Devlin et al., 2019](https://arxiv.org/abs/1810.04805)
    """

    def __init__(self, sequence_length, initializer="glorot_uniform", **kwargs):
        check_positive_int("sequence_length", sequence_length)
        super().__init__(**kwargs)
        self.sequence_length = sequence_length
        self.initializer = keras.initializers.get(initializer)
        self.supports_masking = True

    def build(self, input_shape):
        length = input_shape[1]
        if length is not None and length > self.sequence_length:
            raise ValueError(
                f"Inputs have {length} positions but the layer was built for "
                f"sequence_length={self.sequence_length}."
            )
        self.position_embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, input_shape[-1]),
            initializer=self.initializer,
        )

    def call(self, inputs):
        shape = ops.shape(inputs)
        table = ops.convert_to_tensor(self.position_embeddings)
        table = ops.slice(table, (0, 0), (shape[1], shape[-1]))  # (T, D)
        return ops.broadcast_to(table[None], shape)  # (B, T, D)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sequence_length": self.sequence_length,
                "initializer": keras.initializers.serialize(self.initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_encoder")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding (RoPE), applied to queries and keys.

    Rotates each pair of channels `(j, j + H/2)` of every head by the angle
    `p / max_wavelength ** (2j / H)` for position `p`, so that the dot
    product of a query and a key depends on their relative distance only.
    `MultiHeadSelfAttention(use_rotary=True)` applies it inside attention;
    it has no weights. Masks pass through unchanged.

    Args:
        max_wavelength: float. The longest wavelength. Defaults to `10000`.

    Call arguments:
        inputs: float tensor `(B, T, ..., H)` with positions on axis 1 and an
            even number of channels on the last axis, e.g. `(B, T, N, H)`.

    Example:
    >>> queries = keras.random.normal((2, 5, 4, 8))  # (B, T, N, H)
    >>> rotated = RotaryEmbedding()(queries)

    References:
        - [Su et al., 2021](https://arxiv.org/abs/2104.09864)
    """

    def __init__(self, max_wavelength=10000, **kwargs):
        check_greater("max_wavelength", max_wavelength, 1)
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.supports_masking = True

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] % 2:
            raise ValueError(
                "RotaryEmbedding needs an even number of channels per head. "
                f"Received: input_shape={input_shape}"
            )

    def call(self, inputs):
        shape = ops.shape(inputs)
        length, channels = shape[1], shape[-1]
        half = channels // 2
        positions = ops.cast(ops.arange(length), "float32")  # (T,)
        inverse_wavelengths = ops.power(
            float(self.max_wavelength),
            -ops.cast(ops.arange(half), "float32") * 2.0 / ops.cast(channels, "float32"),
        )  # (H/2,)
        angles = positions[:, None] * inverse_wavelengths[None, :]  # (T, H/2)
        angles = ops.concatenate([angles, angles], axis=-1)  # (T, H)
        cos, sin = ops.cos(angles)[None], ops.sin(angles)[None]  # (1, T, H)
        for _ in range(len(inputs.shape) - 3):  # -> (1, T, 1, ..., H)
            cos, sin = ops.expand_dims(cos, -2), ops.expand_dims(sin, -2)
        cos, sin = ops.cast(cos, inputs.dtype), ops.cast(sin, inputs.dtype)
        first, second = ops.split(inputs, 2, axis=-1)
        rotated = ops.concatenate([-second, first], axis=-1)
        return inputs * cos + rotated * sin

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"max_wavelength": self.max_wavelength})
        return config
