"""Transformer encoders for text, as Keras 3 layers and task models.

`keras_encoder.layers` and the backbone in `keras_encoder.models` use
`keras.ops` only; the task models, `keras_encoder.text`, `.data`,
`.training` and `.export` use TensorFlow (tf.data, tensorflow-text,
SavedModel).

Submodules load on first use (`keras_encoder.models.EncoderClassifier`),
so that `python train.py --help` answers without loading TensorFlow. When
Keras is already imported, `import keras_encoder` registers the layers and
models at once, so that `keras.models.load_model` finds them.
"""

__version__ = "0.1.0"

import importlib
import sys

from keras_encoder.errors import ConfigError, DataError, KerasEncoderError

_SUBMODULES = ("adapters", "checkpoints", "compress", "data", "distribute", "export", "launch", "layers", "models", "text", "training")
_CHECKPOINT_FUNCTIONS = ("load_pretrained", "save_pretrained")

if "keras" in sys.modules:
    from keras_encoder import layers, models  # noqa: F401


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_encoder.{name}")
    if name in _CHECKPOINT_FUNCTIONS:
        return getattr(importlib.import_module("keras_encoder.checkpoints"), name)
    raise AttributeError(f"module 'keras_encoder' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "DataError",
    "KerasEncoderError",
    "__version__",
    *_CHECKPOINT_FUNCTIONS,
    *_SUBMODULES,
]
