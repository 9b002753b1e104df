"""Training: `TrainConfig`, `run()`, TensorBoard callbacks."""

from keras_encoder.training.callbacks import AttentionMapCallback, ConfusionMatrixCallback
from keras_encoder.training.config import TrainConfig
from keras_encoder.training.run import run

__all__ = ["AttentionMapCallback", "ConfusionMatrixCallback", "TrainConfig", "run"]
