"""Keras layers for Transformer encoders: attention, positions, blocks."""

from keras_encoder.layers.attention import MultiHeadSelfAttention
from keras_encoder.layers.crf import ChainCRF
from keras_encoder.layers.embedding import TokenAndPositionEmbedding
from keras_encoder.layers.encoder_block import TransformerEncoderBlock
from keras_encoder.layers.masking import merge_masks
from keras_encoder.layers.pooling import SequencePooling
from keras_encoder.layers.window import WindowFeatureScores
from keras_encoder.layers.position import (
    LearnedPositionEmbedding,
    RotaryEmbedding,
    SinusoidalPositionEncoding,
)

__all__ = [
    "ChainCRF",
    "LearnedPositionEmbedding",
    "MultiHeadSelfAttention",
    "RotaryEmbedding",
    "SequencePooling",
    "SinusoidalPositionEncoding",
    "TokenAndPositionEmbedding",
    "TransformerEncoderBlock",
    "WindowFeatureScores",
    "merge_masks",
]
