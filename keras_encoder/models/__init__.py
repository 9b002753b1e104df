"""Functional models built from `keras_encoder.layers`."""

from keras_encoder.models.backbone import build_encoder
from keras_encoder.models.config import EncoderConfig
from keras_encoder.models.probe import attention_probe
from keras_encoder.models.tasks import (
    build_classifier,
    build_masked_lm,
    build_token_classifier,
    find_crf,
)

__all__ = [
    "EncoderConfig",
    "attention_probe",
    "build_classifier",
    "build_encoder",
    "build_masked_lm",
    "build_token_classifier",
    "find_crf",
]
