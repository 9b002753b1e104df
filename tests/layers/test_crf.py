"""`ChainCRF`: exact against brute force, masking, forbidden moves, saving.

Its loss, decoding and training in a model are in tests/models/test_tagger.py.
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_encoder.layers import ChainCRF
from keras_encoder.models.tagger import bio_transitions

K = 3


def random_crf(seed=0, allowed=None):
    rng = np.random.default_rng(seed)
    crf = ChainCRF(K, allowed=allowed)
    crf.build((None, None, K))
    crf.transitions.assign(rng.normal(size=(K, K)).astype("float32"))
    crf.start_scores.assign(rng.normal(size=K).astype("float32"))
    crf.end_scores.assign(rng.normal(size=K).astype("float32"))
    return crf


def path_score(crf, emissions, tags):
    transitions, start, end = (np.asarray(x) for x in crf.decode_scores())
    score = start[tags[0]] + end[tags[-1]] + sum(emissions[i, t] for i, t in enumerate(tags))
    return score + sum(transitions[a, b] for a, b in zip(tags, tags[1:]))


def brute_log_likelihood(crf, emissions, tags, weights):
    live = [i for i, w in enumerate(weights) if w]
    chain = emissions[live]
    scores = [path_score(crf, chain, path) for path in itertools.product(range(K), repeat=len(live))]
    return path_score(crf, chain, [tags[i] for i in live]) - np.logaddexp.reduce(scores)


def test_log_likelihood_matches_brute_force_and_skips_unweighted_positions():
    rng = np.random.default_rng(1)
    crf = random_crf()
    emissions = rng.normal(size=(3, 7, K)).astype("float32")
    tags = rng.integers(0, K, size=(3, 7)).astype("int32")
    # [CLS] first, a skipped second word piece, [SEP] and padding at the end.
    weights = np.array(
        [[0, 1, 1, 0, 1, 1, 0], [0, 1, 1, 1, 1, 1, 1], [0, 1, 0, 0, 0, 0, 0]], "float32"
    )
    got = np.asarray(crf.log_likelihood(emissions, tags, weights))
    expected = [brute_log_likelihood(crf, emissions[b], tags[b], weights[b]) for b in range(3)]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # The same in a graph whose batch and length are unknown, as in fit().
    traced = tf.function(
        crf.log_likelihood,
        input_signature=[
            tf.TensorSpec([None, None, K]), tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None]),
        ],
    )
    np.testing.assert_allclose(np.asarray(traced(emissions, tags, weights)), expected, rtol=1e-5, atol=1e-5)
    # Probabilities of all sequences of the one-position row sum to one.
    total = np.logaddexp.reduce(
        [crf.log_likelihood(emissions[2:], np.full((1, 7), t, "int32"), weights[2:])[0] for t in range(K)]
    )
    assert total == pytest.approx(0.0, abs=1e-5)


def test_log_likelihood_and_its_gradient_compile_with_xla():
    # `train.py --jit-compile`: XLA must differentiate the forward algorithm
    # in a graph whose batch and length are unknown until run time.
    rng = np.random.default_rng(3)
    crf = random_crf()
    emissions = rng.normal(size=(2, 6, K)).astype("float32")
    tags = rng.integers(0, K, size=(2, 6)).astype("int32")
    weights = np.array([[0, 1, 1, 0, 1, 0], [0, 1, 1, 1, 1, 1]], "float32")

    def loss_and_gradients(emissions, tags, weights):
        with tf.GradientTape() as tape:
            tape.watch(emissions)
            loss = -tf.reduce_sum(crf.log_likelihood(emissions, tags, weights))
        return loss, tape.gradient(loss, [emissions, *crf.trainable_variables])

    signature = [tf.TensorSpec([None, None, K]), tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None])]
    eager = loss_and_gradients(tf.constant(emissions), tags, weights)
    compiled = tf.function(loss_and_gradients, input_signature=signature, jit_compile=True)
    loss, gradients = compiled(emissions, tags, weights)
    np.testing.assert_allclose(float(loss), float(eager[0]), rtol=1e-5)
    for got, expected in zip(gradients, eager[1]):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=1e-5)
    assert not np.asarray(gradients[0])[weights == 0].any()  # skipped positions get no gradient


def test_padding_and_unlabelled_positions_change_nothing():
    rng = np.random.default_rng(2)
    crf = random_crf()
    emissions = rng.normal(size=(2, 5, K)).astype("float32")
    tags = rng.integers(0, K, size=(2, 5)).astype("int32")
    weights = np.array([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0]], "float32")
    padded = (
        np.concatenate([emissions, rng.normal(size=(2, 4, K)).astype("float32")], axis=1),
        np.concatenate([tags, rng.integers(0, K, size=(2, 4)).astype("int32")], axis=1),
        np.concatenate([weights, np.zeros((2, 4), "float32")], axis=1),
    )
    short = np.asarray(crf.log_likelihood(emissions, tags, weights))
    # Labels at skipped positions do not matter, even out of range.
    np.testing.assert_allclose(
        np.asarray(crf.log_likelihood(emissions, np.where(weights > 0, tags, -1), weights)), short, rtol=1e-6
    )
    np.testing.assert_allclose(np.asarray(crf.log_likelihood(*padded)), short, rtol=1e-6)
    # A sequence with no labelled position adds nothing.
    empty = crf.log_likelihood(emissions[:1], tags[:1], np.zeros((1, 5), "float32"))
    assert float(empty[0]) == 0.0


def test_forbidden_moves_get_no_probability():
    allowed, _ = bio_transitions(["O", "B-PER", "I-PER"])
    crf = random_crf(allowed=allowed.tolist())
    emissions = np.zeros((1, 2, K), "float32")
    emissions[0, 1, 2] = 10.0  # I-PER strongly preferred at the second position
    after_o = crf.log_likelihood(emissions, np.array([[0, 2]], "int32"))  # O -> I-PER
    assert float(after_o[0]) < -1000
    after_b = crf.log_likelihood(emissions, np.array([[1, 2]], "int32"))  # B-PER -> I-PER
    assert float(after_b[0]) > -20
    transitions, _, _ = crf.decode_scores()
    np.testing.assert_array_equal(np.asarray(transitions)[~allowed] < -1000, True)


def test_layer_passes_logits_and_mask_through():
    crf = ChainCRF(K)
    x = keras.random.normal((2, 4, K))
    np.testing.assert_array_equal(np.asarray(crf(x)), np.asarray(x))
    inputs = keras.Input((None,), dtype="int32")
    hidden = keras.layers.Embedding(10, K, mask_zero=True)(inputs)
    model = keras.Model(inputs, ChainCRF(K)(hidden))
    out = model(np.array([[1, 2, 0]]))
    assert out._keras_mask.numpy().tolist() == [[True, True, False]]


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match=r"`allowed` must have shape \(3, 3\)"):
        ChainCRF(3, allowed=[[True, False]])
    with pytest.raises(ValueError, match="num_tags"):
        ChainCRF(0)
    with pytest.raises(ValueError, match="ChainCRF with num_tags=3 got inputs with 4"):
        ChainCRF(3)(keras.random.normal((1, 2, 4)))


def test_config_and_keras_file_round_trip(assert_survives_saving):
    crf = random_crf(allowed=bio_transitions(["O", "B-X", "I-X"])[0].tolist())
    again = ChainCRF.from_config(crf.get_config())
    assert again.num_tags == K and again.allowed.tolist() == crf.allowed.tolist()
    assert ChainCRF.from_config(ChainCRF(K).get_config()).allowed is None
    inputs = keras.Input((None,), dtype="int32")
    chain = ChainCRF(K, allowed=crf.allowed.tolist(), name="crf")
    model = keras.Model(inputs, chain(keras.layers.Embedding(10, K, mask_zero=True)(inputs)))
    chain.transitions.assign(np.arange(9, dtype="float32").reshape(3, 3))
    loaded = assert_survives_saving(model, np.array([[2, 5, 6, 3, 0]], "int32"))
    loaded_crf = loaded.get_layer("crf")
    np.testing.assert_array_equal(np.asarray(loaded_crf.transitions), np.arange(9).reshape(3, 3))
    assert loaded_crf.allowed.tolist() == crf.allowed.tolist()
