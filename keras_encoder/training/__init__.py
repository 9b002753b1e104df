"""Training: `TrainConfig`, presets, `train()` / `run()`, TensorBoard callbacks.

`TrainConfig` and the presets load without TensorFlow; the rest loads on
first use.
"""

import importlib

from keras_encoder.training.config import TrainConfig
from keras_encoder.training.presets import PRESETS

_LAZY = {
    "AttentionMapCallback": "keras_encoder.training.callbacks",
    "ConfusionMatrixCallback": "keras_encoder.training.callbacks",
    "TaggingMetricsCallback": "keras_encoder.training.callbacks",
    "run": "keras_encoder.training.run",
    "train": "keras_encoder.training.run",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_encoder.training' has no attribute {name!r}")


__all__ = ["PRESETS", "TrainConfig", *_LAZY]
