"""Transformer encoders for text, as Keras 3 layers and models.

`keras_encoder.layers` and `keras_encoder.models` use `keras.ops` only and
run on any Keras backend; `keras_encoder.text`, `.data`, `.training` and
`.export` use TensorFlow (tf.data, tensorflow-text, SavedModel) and are
imported on demand.
"""

__version__ = "0.1.0"

from keras_encoder import layers, models
from keras_encoder.errors import ConfigError, DataError, KerasEncoderError

__all__ = [
    "ConfigError",
    "DataError",
    "KerasEncoderError",
    "layers",
    "models",
    "__version__",
]
