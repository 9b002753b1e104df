"""The backbone and the task models built on it.

`build_encoder`, `EncoderConfig` and `attention_probe` use `keras.ops`
only and run on any Keras backend; the task models (`EncoderClassifier`,
`EncoderTagger`, `EncoderMaskedLM`) and `EncoderPreprocessor` own
TensorFlow preprocessing and export as well.
"""

from keras_encoder.models.backbone import build_encoder
from keras_encoder.models.config import EncoderConfig
from keras_encoder.models.probe import attention_probe

__all__ = [
    "EncoderClassifier",
    "EncoderConfig",
    "EncoderMaskedLM",
    "EncoderPreprocessor",
    "EncoderTagger",
    "attention_probe",
    "build_encoder",
]

try:
    import tensorflow  # noqa: F401
except ImportError:  # another backend without TensorFlow: layers and backbone only
    pass
else:
    from keras_encoder.models.classifier import EncoderClassifier
    from keras_encoder.models.masked_lm import EncoderMaskedLM
    from keras_encoder.models.preprocessor import EncoderPreprocessor
    from keras_encoder.models.tagger import EncoderTagger
