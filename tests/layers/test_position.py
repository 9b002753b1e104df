"""Position layers against their formulas."""

import numpy as np
import pytest

import keras

from keras_encoder.layers import (
    LearnedPositionEmbedding,
    RotaryEmbedding,
    SinusoidalPositionEncoding,
)


def test_sinusoidal_matches_the_paper_formula():
    length, hidden = 50, 16
    encoding = np.asarray(SinusoidalPositionEncoding()(np.zeros((2, length, hidden), "float32")))
    expected = np.zeros((length, hidden))
    for position in range(length):
        for pair in range(hidden // 2):
            angle = position / 10000 ** (2 * pair / hidden)
            expected[position, 2 * pair] = np.sin(angle)
            expected[position, 2 * pair + 1] = np.cos(angle)
    np.testing.assert_allclose(encoding[0], expected, atol=1e-5)
    np.testing.assert_array_equal(encoding[0], encoding[1])


def test_learned_returns_table_rows():
    layer = LearnedPositionEmbedding(sequence_length=10)
    x = np.zeros((2, 4, 3), "float32")
    out = np.asarray(layer(x))
    table = np.asarray(layer.position_embeddings)
    np.testing.assert_array_equal(out[1], table[:4])


def test_learned_rejects_too_long_inputs():
    with pytest.raises(ValueError, match="sequence_length=4"):
        LearnedPositionEmbedding(sequence_length=4)(np.zeros((1, 6, 3), "float32"))


def rotate_reference(x, max_wavelength=10000):
    """Rotate-half RoPE written out with numpy, for (B, T, N, H)."""
    _, length, _, channels = x.shape
    half = channels // 2
    inverse = max_wavelength ** (-np.arange(half) * 2.0 / channels)
    angles = np.arange(length)[:, None] * inverse[None, :]  # (T, H/2)
    cos, sin = np.cos(angles)[None, :, None, :], np.sin(angles)[None, :, None, :]
    first, second = x[..., :half], x[..., half:]
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], -1)


def test_rotary_matches_reference():
    x = np.random.default_rng(0).normal(size=(2, 9, 3, 8)).astype("float32")
    np.testing.assert_allclose(np.asarray(RotaryEmbedding()(x)), rotate_reference(x), atol=1e-5)


def test_rotary_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(1)
    query, key = rng.normal(size=(2, 8)).astype("float32")
    length = 12
    queries = np.broadcast_to(query, (1, length, 1, 8)).copy()
    keys = np.broadcast_to(key, (1, length, 1, 8)).copy()
    layer = RotaryEmbedding()
    rotated_q, rotated_k = np.asarray(layer(queries))[0, :, 0], np.asarray(layer(keys))[0, :, 0]
    scores = rotated_q @ rotated_k.T  # (T, T)
    for offset in (0, 1, 3):
        diagonal = np.diagonal(scores, offset)
        np.testing.assert_allclose(diagonal, diagonal[0], atol=1e-4)


def test_rotary_rejects_odd_channels():
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding()(np.zeros((1, 3, 2, 5), "float32"))


def test_position_layers_pass_masks_through():
    masked = keras.layers.Masking()(np.ones((1, 3, 4), "float32"))
    for layer in (SinusoidalPositionEncoding(), LearnedPositionEmbedding(8), RotaryEmbedding()):
        out = layer(masked)
        assert out._keras_mask is not None, layer.name
