"""Task models: a head on the shared backbone.

Each builder returns one flat functional model whose layers include the
backbone's (`embedding`, `block_0`, ...), so `attention_probe`, LoRA and
quantization see every layer directly.
"""

import keras

from keras_encoder.models.backbone import build_encoder
from keras_encoder.models.config import EncoderConfig


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


def build_classifier(config: EncoderConfig, num_classes, name="classifier"):
    """Sentence classifier: pooled encoder output -> dropout -> logits.

    Input `token_ids` `(B, T)`; output `logits` `(B, num_classes)` (train
    with `from_logits=True`).
    """
    _positive("num_classes", num_classes)
    encoder = build_encoder(config)
    # === Layers ===
    dropout = keras.layers.Dropout(config.dropout, name="head_dropout")
    head = keras.layers.Dense(num_classes, name="logits")
    # === Functional Model ===
    pooled = encoder.output["pooled_output"]
    logits = head(dropout(pooled))
    return keras.Model(encoder.input, logits, name=name)


def build_token_classifier(config: EncoderConfig, num_tags, name="token_classifier"):
    """Token tagger: per-token logits `(B, T, num_tags)` on the sequence output.

    The logits carry the padding mask as their Keras mask, so Keras losses
    and metrics count real tokens only.
    """
    _positive("num_tags", num_tags)
    encoder = build_encoder(config)
    # === Layers ===
    dropout = keras.layers.Dropout(config.dropout, name="head_dropout")
    head = keras.layers.Dense(num_tags, name="logits")
    # === Functional Model ===
    sequence = encoder.output["sequence_output"]
    logits = head(dropout(sequence))
    return keras.Model(encoder.input, logits, name=name)
