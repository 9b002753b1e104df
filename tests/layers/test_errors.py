"""Bad arguments fail early with a message naming the argument."""

import numpy as np
import pytest

from keras_encoder.layers import (
    LearnedPositionEmbedding,
    MultiHeadSelfAttention,
    SequencePooling,
    SinusoidalPositionEncoding,
    TokenAndPositionEmbedding,
    TransformerEncoderBlock,
)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: MultiHeadSelfAttention(num_heads=0), "num_heads=0"),
        (lambda: MultiHeadSelfAttention(num_heads=2, key_dim=-1), "key_dim=-1"),
        (lambda: MultiHeadSelfAttention(num_heads=2, dropout=1.5), "dropout=1.5"),
        (lambda: MultiHeadSelfAttention(num_heads=2, prefix_length=-1), "prefix_length=-1"),
        (lambda: TransformerEncoderBlock(2, 8, prefix_length=1.5), "prefix_length=1.5"),
        (lambda: TransformerEncoderBlock(num_heads=2, intermediate_dim=0), "intermediate_dim=0"),
        (lambda: TransformerEncoderBlock(num_heads=-1, intermediate_dim=8), "num_heads=-1"),
        (lambda: TransformerEncoderBlock(2, 8, layer_norm_epsilon=0), "layer_norm_epsilon=0"),
        (lambda: TokenAndPositionEmbedding(0, 8, 8), "vocabulary_size=0"),
        (lambda: TokenAndPositionEmbedding(10, 8, 8, position="absolute"), "position='absolute'"),
        (lambda: TokenAndPositionEmbedding(10, 8, 8, bigram_buckets=-1), "bigram_buckets=-1"),
        (lambda: LearnedPositionEmbedding(sequence_length=0), "sequence_length=0"),
        (lambda: SinusoidalPositionEncoding(max_wavelength=1), "max_wavelength=1"),
        (lambda: SequencePooling("max"), "mode='max'"),
    ],
)
def test_bad_constructor_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_hidden_size_not_divisible_by_heads():
    x = np.zeros((1, 4, 10), "float32")
    with pytest.raises(ValueError, match="num_heads=3"):
        MultiHeadSelfAttention(num_heads=3)(x)
    with pytest.raises(ValueError, match="num_heads=4"):
        TransformerEncoderBlock(num_heads=4, intermediate_dim=8)(x)


def test_rotary_needs_even_head_size():
    with pytest.raises(ValueError, match="key_dim=3"):
        MultiHeadSelfAttention(num_heads=2, key_dim=3, use_rotary=True)(
            np.zeros((1, 4, 6), "float32")
        )


def test_enable_prefix_needs_a_built_layer_without_one():
    layer = MultiHeadSelfAttention(num_heads=2)
    with pytest.raises(ValueError, match="needs a built layer"):
        layer.enable_prefix(2)
    with pytest.raises(ValueError, match="needs a built block"):
        TransformerEncoderBlock(num_heads=2, intermediate_dim=8).enable_prefix(2)
    layer(np.zeros((1, 3, 8), "float32"))
    with pytest.raises(ValueError, match="prefix_length=0"):
        layer.enable_prefix(0)
    layer.enable_prefix(2)
    with pytest.raises(ValueError, match="already has a prefix of length 2"):
        layer.enable_prefix(3)


@pytest.mark.parametrize(
    "prefix, match",
    [
        (np.zeros((2, 2, 4), "float32"), "must be a pair"),
        ((np.zeros((2, 2, 3), "float32"),) * 2, r"prefix_key` must have shape \(P, 2, 4\)"),
    ],
    ids=["not a pair", "wrong head size"],
)
def test_a_bad_prefix_input_is_named(prefix, match):
    layer = MultiHeadSelfAttention(num_heads=2)
    with pytest.raises(ValueError, match=match):
        layer(np.zeros((1, 3, 8), "float32"), prefix=prefix)


def test_a_layer_given_a_prefix_after_build_still_refuses_new_state():
    layer = MultiHeadSelfAttention(num_heads=2)
    layer(np.zeros((1, 3, 8), "float32"))
    layer.enable_prefix(2)
    assert len(layer.weights) == 10
    with pytest.raises(ValueError):
        layer.add_weight(name="late", shape=(1,))  # Keras' lock is back on
