"""`EncoderPreprocessor`: raw strings to the backbone's token ids."""

import keras
import tensorflow as tf

from keras_encoder.text import Tokenizer

UNITS = ("char", "word")


@keras.saving.register_keras_serializable(package="keras_encoder")
class EncoderPreprocessor(keras.layers.Layer):
    """Raw strings to padded token ids, with the task's tokenizer inside.

    Each string becomes `[CLS] word-pieces [SEP]`, cut to the tokenizer's
    `sequence_length`, and the batch is padded with 0 (`[PAD]`, masked by
    the backbone) to its longest row. A tagger's preprocessor also names
    its `unit`: tagging cuts text into characters (`"char"`) or
    whitespace-separated words (`"word"`) and tags each.

    The layer is pure TensorFlow, so it runs inside `tf.data` and inside an
    exported SavedModel. Its config holds the vocabulary, so a task model
    saved as `.keras` carries its tokenizer.

    Args:
        tokenizer: a `keras_encoder.text.Tokenizer`.
        unit: `None` (classification), `"char"` or `"word"` (tagging).
            Defaults to `None`.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        strings: a 1-D batch of strings (a list, a NumPy array or a
            `tf.string` tensor).

    Returns:
        int32 `(B, T)` token ids, `T` the longest row.

    Example:
    >>> preprocessor = EncoderPreprocessor(tokenizer)
    >>> preprocessor(["好书", ""])  # [[2, 5, 6, 3], [2, 3, 0, 0]]
    """

    def __init__(self, tokenizer, unit=None, **kwargs):
        if isinstance(tokenizer, dict):
            tokenizer = Tokenizer(**tokenizer)
        if not isinstance(tokenizer, Tokenizer):
            raise ValueError(
                "`tokenizer` must be a keras_encoder.text.Tokenizer. "
                f"Received: tokenizer={tokenizer!r}"
            )
        if unit is not None and unit not in UNITS:
            raise ValueError(f"`unit` must be None, 'char' or 'word'. Received: unit={unit!r}")
        super().__init__(**kwargs)
        # Strings are not numbers to convert or cast.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.built = True
        self.tokenizer = tokenizer
        self.unit = unit

    def call(self, strings):
        strings = tf.convert_to_tensor(strings, dtype=tf.string)
        return self.tokenizer.tokenize(strings).to_tensor(default_value=self.tokenizer.pad_id)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tokenizer": {
                    "vocabulary": list(self.tokenizer.vocabulary),
                    **self.tokenizer.get_config(),
                },
                "unit": self.unit,
            }
        )
        return config
