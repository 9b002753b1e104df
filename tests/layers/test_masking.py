"""The masking contract: True attends, padding never leaks."""

import numpy as np
import pytest

import keras

from keras_encoder.layers import (
    MultiHeadSelfAttention,
    TokenAndPositionEmbedding,
    TransformerEncoderBlock,
    merge_masks,
)
from keras_encoder.models import EncoderConfig, build_encoder

LENGTHS = np.array([5, 3])


def padding_mask(lengths=LENGTHS, total=None):
    total = total or int(max(lengths))
    return np.arange(total)[None, :] < np.asarray(lengths)[:, None]  # (B, T)


def inputs(total=5, seed=0):
    return np.random.default_rng(seed).normal(size=(2, total, 8)).astype("float32")


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_merge_masks_is_logical_and():
    pad = np.array([[True, True, False]])
    keras_mask = np.array([[True, False, True]])
    attention = np.ones((1, 3, 3), bool)
    attention[0, 0, 0] = False
    merged = numpy(merge_masks(pad, attention, keras_mask))
    expected = attention & pad[:, None, :] & keras_mask[:, None, :]
    np.testing.assert_array_equal(merged, expected)
    assert merge_masks() is None


def test_merge_masks_rejects_wrong_rank():
    with pytest.raises(ValueError, match="padding_mask"):
        merge_masks(padding_mask=np.ones((1, 3, 3), bool))
    with pytest.raises(ValueError, match="attention_mask"):
        merge_masks(attention_mask=np.ones((1, 3), bool))


@pytest.mark.parametrize("use_rotary", [False, True])
def test_padded_keys_get_exactly_zero_weight(use_rotary):
    layer = MultiHeadSelfAttention(num_heads=2, use_rotary=use_rotary)
    _, scores = layer(
        inputs(), padding_mask=padding_mask(), return_attention_scores=True
    )
    scores = numpy(scores)  # (B, N, T, S)
    assert scores.shape == (2, 2, 5, 5)
    assert np.all(scores[1, :, :, 3:] == 0.0)
    assert np.all(scores[1, :, :, :3] > 0.0)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("use_rotary", [False, True])
def test_with_a_prefix_padded_keys_still_get_exactly_zero_weight(use_rotary):
    layer = MultiHeadSelfAttention(num_heads=2, use_rotary=use_rotary, prefix_length=3)
    _, scores = layer(inputs(), padding_mask=padding_mask(), return_attention_scores=True)
    scores = numpy(scores)  # (B, N, T, P + S), the prefix first
    assert scores.shape == (2, 2, 5, 3 + 5)
    assert np.all(scores[1, :, :, 3 + 3:] == 0.0)  # row 1's padding
    assert np.all(scores[:, :, :, :3] > 0.0)  # the prefix is never masked
    assert np.all(scores[1, :, :, 3:3 + 3] > 0.0)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-6)


def test_a_prefix_call_argument_per_row_or_shared_matches_the_learned_one():
    layer = MultiHeadSelfAttention(num_heads=2, prefix_length=3)
    x, pad = inputs(), padding_mask()
    learned = numpy(layer(x, padding_mask=pad))
    key, value = numpy(layer.prefix_key), numpy(layer.prefix_value)  # (P, N, H)
    shared = numpy(layer(x, padding_mask=pad, prefix=(key, value)))
    per_row = numpy(layer(x, padding_mask=pad, prefix=(np.stack([key] * 2), np.stack([value] * 2))))
    np.testing.assert_allclose(shared, learned, atol=1e-6)
    np.testing.assert_allclose(per_row, learned, atol=1e-6)
    # The same projections without the prefix give other outputs.
    plain = MultiHeadSelfAttention.from_config({**layer.get_config(), "prefix_length": 0})
    plain(x)
    plain.set_weights([numpy(w) for w in layer.weights if "prefix" not in w.path])
    assert not np.allclose(numpy(plain(x, padding_mask=pad)), learned, atol=1e-4)


def test_fused_and_explicit_paths_agree():
    layer = MultiHeadSelfAttention(num_heads=2)
    x = inputs()
    fused = numpy(layer(x, padding_mask=padding_mask()))
    explicit, _ = layer(x, padding_mask=padding_mask(), return_attention_scores=True)
    np.testing.assert_allclose(fused, numpy(explicit), atol=1e-6)


def _three_ways(layer, x, lengths):
    """Outputs at real positions under each way of giving the same mask."""
    pad = padding_mask(lengths, x.shape[1])
    explicit_padding = numpy(layer(x, padding_mask=pad))
    full = np.broadcast_to(pad[:, None, :], (len(x), x.shape[1], x.shape[1]))
    explicit_attention = numpy(layer(x, attention_mask=full))
    masked_x = keras.layers.Masking(mask_value=0.0)(x * pad[:, :, None])
    implicit = numpy(layer(masked_x))
    return pad, explicit_padding, explicit_attention, implicit


@pytest.mark.parametrize(
    "make_layer",
    [
        lambda: MultiHeadSelfAttention(num_heads=2),
        lambda: TransformerEncoderBlock(num_heads=2, intermediate_dim=16),
        lambda: TransformerEncoderBlock(num_heads=2, intermediate_dim=16, norm_first=True),
    ],
    ids=["attention", "block_post_norm", "block_pre_norm"],
)
def test_implicit_padding_and_attention_masks_agree(make_layer):
    layer = make_layer()
    pad, by_padding, by_attention, implicit = _three_ways(layer, inputs(), LENGTHS)
    real = pad[:, :, None]
    np.testing.assert_allclose(by_padding * real, by_attention * real, atol=1e-6)
    np.testing.assert_allclose(by_padding * real, implicit * real, atol=1e-6)


@pytest.mark.parametrize(
    "make_layer",
    [
        lambda: MultiHeadSelfAttention(num_heads=2, use_rotary=True),
        lambda: TransformerEncoderBlock(num_heads=2, intermediate_dim=16),
        lambda: TransformerEncoderBlock(num_heads=2, intermediate_dim=16, prefix_length=4),
        lambda: TransformerEncoderBlock(num_heads=3, key_dim=4, intermediate_dim=16),
    ],
    ids=["attention", "block", "block_prefix", "block_pruned"],
)
def test_values_at_padded_positions_change_nothing(make_layer):
    layer = make_layer()
    x = inputs()
    pad = padding_mask()
    noisy = np.where(pad[:, :, None], x, 100.0 * inputs(seed=1))
    clean_out = numpy(layer(x, padding_mask=pad))
    noisy_out = numpy(layer(noisy, padding_mask=pad))
    real = pad[:, :, None]
    np.testing.assert_allclose(clean_out * real, noisy_out * real, atol=1e-6)


def test_embedding_produces_keras_mask():
    layer = TokenAndPositionEmbedding(20, 8, 4)
    ids = np.array([[2, 5, 3, 0]])
    np.testing.assert_array_equal(
        numpy(layer.compute_mask(ids)), [[True, True, True, False]]
    )
    assert TokenAndPositionEmbedding(20, 8, 4, mask_zero=False).compute_mask(ids) is None


def test_bigram_embeddings_add_both_pairs_of_each_position():
    layer = TokenAndPositionEmbedding(20, 8, 4, position="none", bigram_buckets=7)
    ids = np.array([[2, 5, 3, 0]])
    out = numpy(layer(ids))
    tokens = numpy(layer.token_embedding.embeddings)
    pairs = numpy(layer.bigram_embedding.embeddings)

    def pair(a, b):
        return pairs[(a * 1_000_003 + b) % 7]

    np.testing.assert_allclose(out[0, 0], tokens[2] + pair(2, 5), atol=1e-6)
    np.testing.assert_allclose(out[0, 1], tokens[5] + pair(2, 5) + pair(5, 3), atol=1e-6)
    np.testing.assert_allclose(out[0, 2], tokens[3] + pair(5, 3) + pair(3, 0), atol=1e-6)


def test_bigram_embeddings_unchanged_when_padding_is_appended():
    layer = TokenAndPositionEmbedding(20, 8, 4, bigram_buckets=11)
    short = numpy(layer(np.array([[2, 5, 3], [2, 4, 0]])))
    long = numpy(layer(np.array([[2, 5, 3, 0, 0, 0], [2, 4, 0, 0, 0, 0]])))
    np.testing.assert_allclose(long[0, :3], short[0], atol=1e-6)
    np.testing.assert_allclose(long[1, :2], short[1, :2], atol=1e-6)
    np.testing.assert_array_equal(
        numpy(layer.compute_mask(np.array([[2, 4, 0, 0]]))), [[True, True, False, False]]
    )


@pytest.mark.parametrize("position", ["sinusoidal", "learned", "rotary"])
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_encoder_outputs_unchanged_when_padding_is_appended(position, norm_first, pooling):
    config = EncoderConfig(
        vocabulary_size=30, max_length=16, hidden_dim=8, num_heads=2,
        num_layers=2, intermediate_dim=16, position=position,
        norm_first=norm_first, pooling=pooling,
        # Covered once per position kind combination without doubling the grid.
        embedding_norm=position == "learned",
        bigram_buckets=64 if position == "sinusoidal" else 0,
    )
    encoder = build_encoder(config)
    short = np.array([[2, 7, 8, 9, 3], [2, 11, 3, 0, 0]], "int32")
    long = np.concatenate([short, np.zeros((2, 6), "int32")], axis=1)
    a = encoder.predict(short, verbose=0)
    b = encoder.predict(long, verbose=0)
    real = (short != 0)[:, :, None]
    np.testing.assert_allclose(
        a["sequence_output"] * real, b["sequence_output"][:, :5] * real, atol=1e-6
    )
    np.testing.assert_allclose(a["pooled_output"], b["pooled_output"], atol=1e-6)


def test_sequence_output_carries_the_padding_mask():
    config = EncoderConfig(
        vocabulary_size=30, max_length=16, hidden_dim=8, num_heads=2,
        num_layers=1, intermediate_dim=16,
    )
    ids = np.array([[2, 7, 3, 0]], "int32")
    outputs = build_encoder(config)(ids)
    np.testing.assert_array_equal(
        numpy(outputs["sequence_output"]._keras_mask), ids != 0
    )
