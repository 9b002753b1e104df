"""Transformer encoders for text, as Keras 3 layers and models.

`keras_encoder.layers` and `keras_encoder.models` use `keras.ops` only and
run on any Keras backend; `keras_encoder.text`, `.data`, `.training` and
`.export` use TensorFlow (tf.data, tensorflow-text, SavedModel) and are
imported on demand. `keras_encoder.optimizers` (`SparseAdamW`) is imported
here on the TensorFlow backend, so that `.keras` models compiled with it
load after `import keras_encoder`.
"""

__version__ = "0.1.0"

import keras

from keras_encoder import layers, models
from keras_encoder.errors import ConfigError, DataError, KerasEncoderError

if keras.backend.backend() == "tensorflow":
    from keras_encoder import optimizers  # noqa: F401  (registers SparseAdamW)

__all__ = [
    "ConfigError",
    "DataError",
    "KerasEncoderError",
    "layers",
    "models",
    "__version__",
]
