"""Keras metrics that the built-in ones do not compute exactly."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_encoder")
class WeightedTokenAccuracy(keras.metrics.Metric):
    """Accuracy over weighted tokens: `sum(w * correct) / sum(w)`.

    `keras.metrics.SparseCategoricalAccuracy` with `(B, T)` sample weights
    first averages each sequence over its padded length, so batches padded
    to different lengths count differently. This metric sums over every
    weighted token in the epoch, so with weights 1 at labelled units and 0
    elsewhere it is exactly the share of units tagged right.
    """

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        predicted = ops.argmax(y_pred, axis=-1)
        matches = ops.cast(ops.equal(ops.cast(y_true, predicted.dtype), predicted), self.dtype)
        weights = ops.ones_like(matches) if sample_weight is None else ops.cast(sample_weight, self.dtype)
        self.correct.assign_add(ops.sum(matches * weights))
        self.total.assign_add(ops.sum(weights))

    def result(self):
        return ops.divide_no_nan(self.correct, self.total)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)
