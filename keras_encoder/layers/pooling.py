"""Sequence pooling for sentence-level heads.

Shape legend: B batch, T tokens, D hidden.
"""

import keras
from keras import ops

from keras_encoder.layers.layer_utils import check_choice

POOLING_MODES = ("cls", "mean")


@keras.saving.register_keras_serializable(package="keras_encoder")
class SequencePooling(keras.layers.Layer):
    """Reduces `(B, T, D)` token vectors to one `(B, D)` vector per sequence.

    `"cls"` takes the vector at position 0 (the tokenizer puts `[CLS]`
    there). `"mean"` averages the real tokens only: the Keras implicit mask
    (or an explicit `padding_mask`) excludes padding, so appending padding
    never changes the result. The output carries no mask.

    Args:
        mode: string. `"cls"` or `"mean"`. Defaults to `"cls"`.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        inputs: float tensor `(B, T, D)`.
        padding_mask: bool tensor `(B, T)`, `True` for real tokens. Optional.

    Example:
    >>> pooled = SequencePooling("mean")(keras.random.normal((2, 5, 8)))
    >>> tuple(pooled.shape)
    (2, 8)
    """

    def __init__(self, mode="cls", **kwargs):
        check_choice("mode", mode, POOLING_MODES)
        super().__init__(**kwargs)
        self.mode = mode
        self.supports_masking = True

    def call(self, inputs, padding_mask=None, mask=None):
        if self.mode == "cls":
            return inputs[:, 0, :]  # (B, D)
        weights = ops.ones(ops.shape(inputs)[:2], dtype=inputs.dtype)  # (B, T)
        for given in (padding_mask, mask):
            if given is not None:
                weights = weights * ops.cast(given, inputs.dtype)
        total = ops.sum(inputs * weights[:, :, None], axis=1)  # (B, D)
        count = ops.maximum(ops.sum(weights, axis=1, keepdims=True), 1.0)
        return total / count

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config
