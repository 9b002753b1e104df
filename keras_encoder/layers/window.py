"""Linear tag scores from hashed token-window features (a "wide" path).

Shape legend: B batch, T tokens, K tags.
"""

import keras
from keras import ops

from keras_encoder.layers.layer_utils import check_positive_int

# Multipliers that keep ids, offsets and feature kinds apart before the
# modulo (every vocabulary is far smaller than the first).
_PAIR = 1_000_003
_SLOT = 7_919


@keras.saving.register_keras_serializable(package="keras_encoder")
class WindowFeatureScores(keras.layers.Layer):
    """Per-token tag scores summed from hashed features of a token window.

    Each position gets, for every tag, the sum of one learned score per
    feature: the token id at each offset `-window ... +window` (each offset
    its own feature) and the id pairs `(previous, current)` and `(current,
    next)`: the features a character-window CRF tagger uses, scored
    directly, beside (added to) what the encoder computes. Features are
    hashed into a `(buckets, num_tags)` table, so a feature's scores cost
    `num_tags` numbers and the table can have many rows; it starts at zero,
    so the path adds nothing until training moves it. Positions beyond the
    sequence read as padding (id 0).

    Args:
        num_tags: int. Tags scored per position `K`.
        buckets: int. Rows of the hashed feature table.
        window: int. Tokens on each side seen as single-token features.
            Defaults to 2.
        scale: float. Constant the summed scores are multiplied by. Adam
            steps do not depend on the size of a gradient, so under Adam(W)
            this makes the table learn `scale` times faster than the
            weights around it (a per-layer learning-rate multiplier).
            Defaults to 1.0.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        inputs: int tensor `(B, T)` of token ids, 0 = padding.

    Output: float `(B, T, K)`, with the padding mask (`inputs != 0`) as its
    Keras mask.

    Example:
    >>> scores = WindowFeatureScores(5, buckets=1024)(keras.ops.array([[2, 7, 9, 3, 0]]))
    >>> tuple(scores.shape)
    (1, 5, 5)
    """

    def __init__(self, num_tags, buckets, window=2, scale=1.0, **kwargs):
        check_positive_int("num_tags", num_tags)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
            raise ValueError(f"`scale` must be a positive finite number. Received: scale={scale!r}")
        check_positive_int("buckets", buckets)
        check_positive_int("window", window, allow_zero=True)
        super().__init__(**kwargs)
        self.num_tags = num_tags
        self.buckets = buckets
        self.window = window
        self.scale = float(scale)
        self.supports_masking = True

    @staticmethod
    def features_per_token(window=2):
        """Features read per position: the ids at `2 * window + 1` offsets
        and the two id pairs around it."""
        return 2 * window + 3

    def build(self, input_shape):
        self.table = self.add_weight(
            shape=(self.buckets, self.num_tags), initializer="zeros", name="table"
        )

    def feature_buckets(self, inputs):
        """Table rows `(B, T, F)` of every position's features."""
        ids = ops.cast(inputs, "int64")  # (B, T)
        width = self.window + 1  # pairs reach one beyond the window
        padded = ops.pad(ids, [[0, 0], [width, width]])
        length = ops.shape(ids)[1]

        def at(offset):
            return padded[:, width + offset : width + offset + length]

        features = [at(offset) * _SLOT + (offset + self.window) for offset in range(-self.window, self.window + 1)]
        slot = 2 * self.window + 1
        features.append((at(-1) * _PAIR + ids) * _SLOT + slot)  # (previous, current)
        features.append((ids * _PAIR + at(1)) * _SLOT + slot + 1)  # (current, next)
        return ops.mod(ops.stack(features, axis=-1), self.buckets)

    def call(self, inputs):
        rows = self.feature_buckets(inputs)  # (B, T, F)
        scores = ops.take(self.table, rows, axis=0)  # (B, T, F, K)
        summed = ops.sum(scores, axis=2)
        return summed if self.scale == 1.0 else summed * self.scale

    def compute_mask(self, inputs, mask=None):
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.num_tags,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_tags": self.num_tags, "buckets": self.buckets, "window": self.window, "scale": self.scale}
        )
        return config
