"""Numerical parity with Keras and keras-hub, weights copied across."""

import numpy as np
import pytest

import keras
import keras_hub

from keras_encoder.layers import MultiHeadSelfAttention, TransformerEncoderBlock

TOLERANCE = 1e-5


def sample(seed=0):
    return np.random.default_rng(seed).normal(size=(3, 7, 16)).astype("float32")


def padding():
    lengths = np.array([7, 4, 1])
    return np.arange(7)[None, :] < lengths[:, None]  # (B, T)


def copy_attention(source, ours):
    """keras MultiHeadAttention -> MultiHeadSelfAttention (same kernel shapes)."""
    for theirs, mine in (
        (source._query_dense, ours.query_dense),
        (source._key_dense, ours.key_dense),
        (source._value_dense, ours.value_dense),
        (source._output_dense, ours.output_dense),
    ):
        mine.set_weights(theirs.get_weights())


def random_weights(layer, seed):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(scale=0.3, size=w.shape) for w in layer.get_weights()])


def test_attention_matches_keras_multi_head_attention():
    x, pad = sample(), padding()
    reference = keras.layers.MultiHeadAttention(num_heads=4, key_dim=4)
    attention_mask = np.broadcast_to(pad[:, None, :], (3, 7, 7))
    reference(x, x, attention_mask=attention_mask)
    random_weights(reference, 1)
    ours = MultiHeadSelfAttention(num_heads=4)
    ours(x)
    copy_attention(reference, ours)
    for weight, theirs in zip(ours.weights, reference.weights):
        assert tuple(weight.shape) == tuple(theirs.shape)

    expected, expected_scores = reference(
        x, x, attention_mask=attention_mask, return_attention_scores=True
    )
    got, scores = ours(x, padding_mask=pad, return_attention_scores=True)
    fused = ours(x, padding_mask=pad)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    np.testing.assert_allclose(fused, expected, atol=TOLERANCE)
    np.testing.assert_allclose(scores, expected_scores, atol=TOLERANCE)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_block_matches_keras_hub_transformer_encoder(norm_first):
    x, pad = sample(), padding()
    reference = keras_hub.layers.TransformerEncoder(
        intermediate_dim=32, num_heads=4, normalize_first=norm_first, activation="gelu"
    )
    reference(x, padding_mask=pad)
    random_weights(reference, 2)
    ours = TransformerEncoderBlock(
        num_heads=4, intermediate_dim=32, norm_first=norm_first, activation="gelu"
    )
    ours(x)
    copy_attention(reference._self_attention_layer, ours.attention)
    for theirs, mine in (
        (reference._self_attention_layer_norm, ours.attention_norm),
        (reference._feedforward_intermediate_dense, ours.ffn_inner),
        (reference._feedforward_output_dense, ours.ffn_outer),
        (reference._feedforward_layer_norm, ours.ffn_norm),
    ):
        mine.set_weights(theirs.get_weights())

    expected, expected_scores = reference(
        x, padding_mask=pad, return_attention_scores=True
    )
    got, scores = ours(x, padding_mask=pad, return_attention_scores=True)
    fused = ours(x, padding_mask=pad)
    real = pad[:, :, None]
    # keras-hub masks keys only, like us, so padded rows agree too.
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    np.testing.assert_allclose(np.asarray(fused) * real, np.asarray(expected) * real, atol=TOLERANCE)
    np.testing.assert_allclose(scores, expected_scores, atol=TOLERANCE)
