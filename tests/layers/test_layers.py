"""Table-driven checks every public layer must pass."""

import numpy as np
import pytest

import keras

from keras_encoder import layers

FLOAT_INPUT = (2, 5, 8)


def float_input(shape=FLOAT_INPUT):
    return np.random.default_rng(0).normal(size=shape).astype("float32")


def token_input():
    return np.array([[2, 7, 9, 3, 0], [2, 11, 3, 0, 0]], dtype="int32")


# (layer factory, input factory, expected output shape, expected weight count)
CASES = {
    "attention": (
        lambda: layers.MultiHeadSelfAttention(num_heads=2),
        float_input,
        (2, 5, 8),
        8,  # q, k, v, output: kernel + bias each
    ),
    "attention_rotary": (
        lambda: layers.MultiHeadSelfAttention(num_heads=2, use_rotary=True, use_bias=False),
        float_input,
        (2, 5, 8),
        4,
    ),
    "attention_prefix": (
        lambda: layers.MultiHeadSelfAttention(num_heads=2, use_rotary=True, prefix_length=3),
        float_input,
        (2, 5, 8),
        10,  # q, k, v, output, and the prefix keys and values
    ),
    "sinusoidal": (
        lambda: layers.SinusoidalPositionEncoding(),
        float_input,
        (2, 5, 8),
        0,
    ),
    "learned": (
        lambda: layers.LearnedPositionEmbedding(sequence_length=16),
        float_input,
        (2, 5, 8),
        1,
    ),
    "rotary": (
        lambda: layers.RotaryEmbedding(),
        lambda: float_input((2, 5, 2, 4)),
        (2, 5, 2, 4),
        0,
    ),
    "token_and_position": (
        lambda: layers.TokenAndPositionEmbedding(50, 16, 8, position="learned"),
        token_input,
        (2, 5, 8),
        2,
    ),
    "token_and_position_bigrams": (
        lambda: layers.TokenAndPositionEmbedding(50, 16, 8, bigram_buckets=32),
        token_input,
        (2, 5, 8),
        2,  # token and bigram tables; sinusoids have no weights
    ),
    "encoder_block": (
        lambda: layers.TransformerEncoderBlock(num_heads=2, intermediate_dim=16),
        float_input,
        (2, 5, 8),
        16,  # attention 8, two norms 4, two dense 4
    ),
    "encoder_block_pre_norm": (
        lambda: layers.TransformerEncoderBlock(
            num_heads=2, intermediate_dim=16, norm_first=True, dropout=0.1
        ),
        float_input,
        (2, 5, 8),
        16,
    ),
    "encoder_block_prefix": (
        lambda: layers.TransformerEncoderBlock(num_heads=2, intermediate_dim=16, prefix_length=2),
        float_input,
        (2, 5, 8),
        18,
    ),
    "encoder_block_pruned": (  # 3 heads of size 4 on a hidden size of 8, as pruning leaves them
        lambda: layers.TransformerEncoderBlock(num_heads=3, key_dim=4, intermediate_dim=16),
        float_input,
        (2, 5, 8),
        16,
    ),
    "pooling_mean": (
        lambda: layers.SequencePooling("mean"),
        float_input,
        (2, 8),
        0,
    ),
}


def wrap(layer, sample):
    """A functional model around `layer`, with a trainable layer after it."""
    inputs = keras.Input(shape=sample.shape[1:], dtype=sample.dtype.name)
    outputs = layer(inputs)
    head = keras.layers.Dense(1)(outputs)
    return keras.Model(inputs, head)


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_shape_and_weights(name):
    make_layer, make_input, expected_shape, expected_weights = CASES[name]
    layer = make_layer()
    outputs = layer(make_input())
    assert tuple(outputs.shape) == expected_shape
    assert len(layer.weights) == expected_weights


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_round_trip(name):
    make_layer, make_input, _, _ = CASES[name]
    layer = make_layer()
    sample = make_input()
    layer(sample)
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone(sample)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(clone(sample)),
        keras.ops.convert_to_numpy(layer(sample)),
        atol=1e-6,
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_keras_file_round_trip(name, tmp_path):
    make_layer, make_input, _, _ = CASES[name]
    sample = make_input()
    model = wrap(make_layer(), sample)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.models.load_model(path)  # default safe_mode
    np.testing.assert_array_equal(
        restored.predict(sample, verbose=0), model.predict(sample, verbose=0)
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_fit_step_updates_weights(name):
    make_layer, make_input, _, _ = CASES[name]
    sample = make_input()
    layer = make_layer()
    model = wrap(layer, sample)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [np.array(w) for w in model.trainable_weights]
    targets = np.ones(model.predict(sample, verbose=0).shape)
    history = model.fit(sample, targets, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [np.array(w) for w in model.trainable_weights]
    changed = [not np.array_equal(b, a) for b, a in zip(before, after)]
    # Every weight of the layer under test receives a gradient, except the
    # key bias: it shifts all scores of a query equally, which softmax ignores.
    layer_ids = {id(w) for w in layer.trainable_weights}
    for weight, did_change in zip(model.trainable_weights, changed):
        if id(weight) in layer_ids and not weight.path.endswith("key/bias"):
            assert did_change, weight.path
