"""`WindowFeatureScores`: a window of features per position, masking, saving, training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_encoder.layers import WindowFeatureScores
from keras_encoder.models import EncoderConfig, EncoderTagger, build_encoder


def random_layer(num_tags=4, buckets=4096, window=2):
    layer = WindowFeatureScores(num_tags, buckets, window=window)
    layer.build((None, None))
    layer.table.assign(np.random.default_rng(0).normal(size=(buckets, num_tags)).astype("float32"))
    return layer


def test_starts_at_zero_and_carries_the_padding_mask():
    layer = WindowFeatureScores(3, 64)
    ids = np.array([[2, 7, 9, 3, 0, 0]], "int32")
    scores = layer(ids)
    assert tuple(scores.shape) == (1, 6, 3) and not np.any(np.asarray(scores))
    assert np.asarray(layer.compute_mask(ids)).tolist() == [[True] * 4 + [False] * 2]


def test_each_position_sees_its_window_only():
    layer = random_layer()
    ids = np.array([[2, 11, 12, 13, 14, 15, 16, 17, 18, 3]], "int32")
    base = np.asarray(layer(ids))
    changed = ids.copy()
    changed[0, 5] = 40
    moved = np.asarray(layer(changed))
    differs = [not np.allclose(base[0, t], moved[0, t]) for t in range(10)]
    # Offsets -2..2 of position 5 are positions 3..7.
    assert differs == [False, False, False, True, True, True, True, True, False, False]
    # Each offset is its own feature: the same token one place to the left
    # or right scores differently.
    left = np.asarray(layer(np.array([[20, 21, 0]], "int32")))[0, 0]
    right = np.asarray(layer(np.array([[21, 20, 0]], "int32")))[0, 1]
    assert not np.allclose(left, right)


def test_padding_changes_nothing_on_real_positions():
    layer = random_layer()
    ids = np.array([[2, 11, 12, 3]], "int32")
    padded = np.array([[2, 11, 12, 3, 0, 0, 0]], "int32")
    np.testing.assert_allclose(np.asarray(layer(padded))[:, :4], np.asarray(layer(ids)), rtol=1e-6)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="`buckets` must be a positive integer"):
        WindowFeatureScores(3, 0)
    with pytest.raises(ValueError, match="`window` must be a non-negative integer"):
        WindowFeatureScores(3, 10, window=-1)
    for bad in (0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="`scale` must be a positive finite number"):
            WindowFeatureScores(3, 10, scale=bad)


def test_scale_multiplies_scores_and_is_a_learning_rate_multiplier_under_adam():
    ids = np.array([[2, 11, 12, 13, 3, 0]], "int32")
    target = np.random.default_rng(2).normal(size=(1, 6, 4)).astype("float32")
    moved = {}
    for scale in (1.0, 4.0):
        layer = WindowFeatureScores(4, 4096, scale=scale)
        layer.build((None, None))
        table = np.random.default_rng(0).normal(size=(4096, 4)).astype("float32")
        layer.table.assign(table)
        before = np.asarray(layer(ids))
        np.testing.assert_allclose(before, scale * np.asarray(random_layer()(ids)), rtol=1e-5)
        # One Adam step on a linear loss moves every used weight by the
        # learning rate whatever the gradient's size, so the scores move
        # `scale` times as far.
        optimizer = keras.optimizers.Adam(1e-3)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(ids) * target)
        optimizer.apply_gradients(zip(tape.gradient(loss, [layer.table]), [layer.table]))
        moved[scale] = np.asarray(layer(ids)) - before
    assert np.abs(moved[1.0]).max() > 1e-4
    np.testing.assert_allclose(moved[4.0], 4.0 * moved[1.0], rtol=1e-3, atol=1e-6)


def tagger(crf=True, window_scale=1.0):
    config = EncoderConfig(
        vocabulary_size=30, max_length=16, hidden_dim=16, num_heads=2, num_layers=1,
        intermediate_dim=32, position="rotary",
    )
    return EncoderTagger(
        build_encoder(config), ["O", "B-X", "I-X"], crf=crf, window_features=512, window_scale=window_scale
    )


def test_config_and_keras_file_round_trip(assert_survives_saving):
    layer = random_layer(window=1)
    again = WindowFeatureScores.from_config(layer.get_config())
    assert (again.num_tags, again.buckets, again.window, again.scale) == (4, 4096, 1, 1.0)
    assert WindowFeatureScores.from_config(WindowFeatureScores(4, 64, scale=8.0).get_config()).scale == 8.0
    model = tagger(window_scale=8.0)
    model.get_layer("window_scores").table.assign(np.random.default_rng(1).normal(size=(512, 3)))
    loaded = assert_survives_saving(model, np.array([[2, 5, 6, 7, 3, 0]], "int32"))
    assert loaded.get_layer("window_scores").scale == 8.0


def test_training_moves_only_the_rows_the_batch_uses():
    model = tagger(crf=False)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    ids = np.array([[2, 5, 6, 7, 3, 0]], "int32")
    rows = np.unique(np.asarray(model.get_layer("window_scores").feature_buckets(ids)))
    model.fit(ids, np.array([[0, 1, 2, 0, 0, 0]]), epochs=1, verbose=0)
    table = np.asarray(model.get_layer("window_scores").table)
    moved = np.flatnonzero(np.abs(table).sum(axis=1))
    assert len(moved) > 0 and set(moved) <= set(rows.tolist())
