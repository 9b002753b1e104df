"""Linear class scores from a bag of hashed token n-grams (a "wide" path).

Shape legend: B batch, T tokens, N n-gram orders, C classes.
"""

import keras
from keras import ops

from keras_encoder.layers.layer_utils import check_positive_int

_PAIR = 1_000_003  # keeps ids apart before the modulo (vocabularies are smaller)
# Running n-gram codes stay below this, so `code * _PAIR` fits in int64.
_MODULUS = 2**40 - 87


@keras.saving.register_keras_serializable(package="keras_encoder")
class NgramFeatureScores(keras.layers.Layer):
    """Per-sequence class scores summed from the sequence's token n-grams.

    Every run of 1 to `max_n` consecutive real tokens is hashed into a
    `(buckets, num_classes)` table; a sequence's scores are the sum of its
    n-grams' rows divided by the square root of their number (a bag of
    n-grams, length-normalised as TF-IDF vectors are). This is the model of
    a character n-gram + logistic-regression classifier, scored beside
    (added to) what the encoder computes. The table starts at zero, so the
    path adds nothing until training moves it. `[CLS]` and `[SEP]` count as
    tokens, so n-grams at the start and end of a text are features of
    their own; padding (id 0) is never part of an n-gram.

    Args:
        num_classes: int. Scores per sequence `C`.
        buckets: int. Rows of the hashed n-gram table.
        max_n: int. Longest n-gram. Defaults to 3.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        inputs: int tensor `(B, T)` of token ids, 0 = padding.

    Output: float `(B, C)`, no mask.

    Example:
    >>> scores = NgramFeatureScores(2, buckets=1024)(keras.ops.array([[2, 7, 9, 3, 0]]))
    >>> tuple(scores.shape)
    (1, 2)
    """

    def __init__(self, num_classes, buckets, max_n=3, **kwargs):
        check_positive_int("num_classes", num_classes)
        check_positive_int("buckets", buckets)
        check_positive_int("max_n", max_n)
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.buckets = buckets
        self.max_n = max_n
        self.supports_masking = True

    def build(self, input_shape):
        self.table = self.add_weight(
            shape=(self.buckets, self.num_classes), initializer="zeros", name="table"
        )

    def feature_buckets(self, inputs):
        """`(rows (B, T, N), present (B, T, N))`: the n-gram starting at each position."""
        ids = ops.cast(inputs, "int64")  # (B, T)
        length = ops.shape(ids)[1]
        padded = ops.pad(ids, [[0, 0], [0, self.max_n - 1]])
        code = ops.zeros_like(ids)
        present = ops.ones_like(ids, dtype="bool")
        rows, masks = [], []
        for n in range(self.max_n):
            token = padded[:, n : n + length]
            # Hash the running n-gram; its order n keeps orders apart.
            code = ops.mod(code * _PAIR + token, _MODULUS)
            present = ops.logical_and(present, ops.not_equal(token, 0))
            rows.append(ops.mod(code * 31 + n, self.buckets))
            masks.append(present)
        return ops.stack(rows, axis=-1), ops.stack(masks, axis=-1)

    def call(self, inputs, mask=None):
        rows, present = self.feature_buckets(inputs)
        weights = ops.cast(present, self.compute_dtype)  # (B, T, N)
        scores = ops.take(self.table, rows, axis=0)  # (B, T, N, C)
        total = ops.sum(scores * weights[..., None], axis=(1, 2))  # (B, C)
        count = ops.sum(weights, axis=(1, 2))[:, None]
        return total / ops.sqrt(ops.maximum(count, 1.0))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "buckets": self.buckets, "max_n": self.max_n})
        return config
