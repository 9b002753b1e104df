"""`ChainCRF` / `ChainCRFLoss`: exact against brute force, masking, decoding, saving, training."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_encoder.data.pipeline import bio_transitions, constrained_decode, viterbi_decode
from keras_encoder.layers import ChainCRF, ChainCRFLoss
from keras_encoder.models import EncoderConfig, build_token_classifier, find_crf

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


def test_padding_changes_nothing_and_the_loss_averages_over_labelled_positions():
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
    loss = ChainCRFLoss(crf)(padded[1], padded[0], sample_weight=padded[2])
    assert float(loss) == pytest.approx(-short.sum() / 5, rel=1e-6)
    # A sequence with no labelled position adds nothing.
    empty = crf.log_likelihood(emissions[:1], tags[:1], np.zeros((1, 5), "float32"))
    assert float(empty[0]) == 0.0


def test_forbidden_moves_get_no_probability_and_are_never_decoded():
    names = ["O", "B-PER", "I-PER"]
    allowed, _ = bio_transitions(names)
    crf = random_crf(allowed=allowed.tolist())
    emissions = np.zeros((1, 2, K), "float32")
    emissions[0, 1, 2] = 10.0  # I-PER strongly preferred at the second position
    after_o = crf.log_likelihood(emissions, np.array([[0, 2]], "int32"))  # O -> I-PER
    assert float(after_o[0]) < -1000
    logits = tf.RaggedTensor.from_tensor(emissions)
    decoded = constrained_decode(logits, names, crf).to_list()[0]
    assert decoded[1] == 2 and decoded[0] == 1  # I-PER only after B-PER


def test_viterbi_decode_finds_the_best_path_per_sentence():
    rng = np.random.default_rng(3)
    crf = random_crf()
    lengths = [4, 1, 0, 3]
    rows = [rng.normal(size=(n, K)).astype("float32") for n in lengths]
    logits = tf.ragged.constant([r.tolist() for r in rows], ragged_rank=1, inner_shape=(K,))
    decoded = viterbi_decode(logits, *crf.decode_scores()).to_list()
    for row, path in zip(rows, decoded):
        if len(row) == 0:
            assert path == []
            continue
        best = max(itertools.product(range(K), repeat=len(row)), key=lambda p: path_score(crf, row, p))
        assert path == list(best)


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
    with pytest.raises(ValueError, match="ChainCRFLoss has no ChainCRF layer"):
        ChainCRFLoss()(np.zeros((1, 2), "int32"), np.zeros((1, 2, 3), "float32"))


def tiny_tagger(crf=True):
    config = EncoderConfig(
        vocabulary_size=20, max_length=16, hidden_dim=16, num_heads=2, num_layers=1,
        intermediate_dim=32, position="rotary",
    )
    allowed = bio_transitions(["O", "B-X", "I-X"])[0].tolist()
    return build_token_classifier(config, 3, crf=crf, allowed=allowed)


def test_config_and_keras_file_round_trip(assert_survives_saving):
    crf = random_crf(allowed=bio_transitions(["O", "B-X", "I-X"])[0].tolist())
    again = ChainCRF.from_config(crf.get_config())
    assert again.num_tags == K and again.allowed.tolist() == crf.allowed.tolist()
    model = tiny_tagger()
    find_crf(model).transitions.assign(np.arange(9, dtype="float32").reshape(3, 3))
    model.compile(optimizer="adam", loss=ChainCRFLoss(find_crf(model)))
    loaded = assert_survives_saving(model, np.array([[2, 5, 6, 3, 0]], "int32"))
    loaded_crf = find_crf(loaded)
    np.testing.assert_array_equal(np.asarray(loaded_crf.transitions), np.arange(9).reshape(3, 3))
    assert loaded_crf.allowed.tolist() == crf.allowed.tolist()
    assert find_crf(tiny_tagger(crf=False)) is None


def test_training_learns_transitions_and_lowers_the_loss():
    rng = np.random.default_rng(4)
    model = tiny_tagger()
    crf = find_crf(model)
    # Token 5 is B-X and token 6 I-X; everything else O.
    ids = rng.choice([5, 6, 7, 8, 9], size=(64, 8)).astype("int32")
    ids[:, 0], ids[:, -1] = 2, 3
    tags = np.where(ids == 5, 1, np.where(ids == 6, 2, 0)).astype("int32")
    for row in range(64):  # I-X only after B-X or I-X
        for t in range(1, 8):
            if tags[row, t] == 2 and tags[row, t - 1] == 0:
                tags[row, t] = 0
    weights = np.ones_like(tags, dtype="float32")
    weights[:, 0] = weights[:, -1] = 0
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=ChainCRFLoss(crf))
    history = model.fit(ids, tags, sample_weight=weights, epochs=5, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert np.abs(np.asarray(crf.transitions)).max() > 0.01  # the scores were trained
