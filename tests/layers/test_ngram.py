"""`NgramFeatureScores`: exact n-gram bag, masking, saving, training."""

import keras
import numpy as np
import pytest

from keras_encoder.layers import NgramFeatureScores
from keras_encoder.layers.ngram import _MODULUS, _PAIR
from keras_encoder.models import EncoderConfig, build_classifier


def random_layer(num_classes=3, buckets=5000, max_n=3):
    layer = NgramFeatureScores(num_classes, buckets, max_n=max_n)
    layer.build((None, None))
    layer.table.assign(np.random.default_rng(0).normal(size=(buckets, num_classes)).astype("float32"))
    return layer


def reference(layer, ids):
    """The documented sum over n-grams / sqrt(count), in Python integers."""
    table = np.asarray(layer.table)
    real = [int(i) for i in ids if i != 0]
    rows = []
    for start in range(len(real)):
        code = 0
        for n in range(layer.max_n):
            if start + n >= len(real):
                break
            code = (code * _PAIR + real[start + n]) % _MODULUS
            rows.append((code * 31 + n) % layer.buckets)
    return table[rows].sum(axis=0) / np.sqrt(max(len(rows), 1))


def test_scores_are_the_length_normalised_bag_of_ngrams():
    layer = random_layer()
    # Large ids as well: the running hash must not overflow int64.
    ids = np.array([[2, 7, 9, 11, 3, 0, 0], [2, 4999, 4998, 3, 0, 0, 0], [2, 3, 0, 0, 0, 0, 0]], "int32")
    got = np.asarray(layer(ids))
    for row in range(3):
        np.testing.assert_allclose(got[row], reference(layer, ids[row]), rtol=1e-5, atol=1e-6)
    rows, present = layer.feature_buckets(ids)
    # 1-, 2- and 3-grams of the 5, 4 and 2 real tokens; none touches padding.
    assert np.asarray(present).sum(axis=(1, 2)).tolist() == [5 + 4 + 3, 4 + 3 + 2, 2 + 1]


def test_starts_at_zero_and_padding_changes_nothing():
    assert not np.any(np.asarray(NgramFeatureScores(2, 64)(np.array([[2, 5, 3]], "int32"))))
    layer = random_layer()
    short = np.array([[2, 7, 9, 3]], "int32")
    padded = np.array([[2, 7, 9, 3, 0, 0, 0, 0]], "int32")
    np.testing.assert_allclose(np.asarray(layer(padded)), np.asarray(layer(short)), rtol=1e-6)
    # Order matters beyond single tokens.
    assert not np.allclose(np.asarray(layer(np.array([[2, 9, 7, 3]], "int32"))), np.asarray(layer(short)))


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="`buckets` must be a positive integer"):
        NgramFeatureScores(2, 0)
    with pytest.raises(ValueError, match="`max_n` must be a positive integer"):
        NgramFeatureScores(2, 10, max_n=0)


def classifier():
    config = EncoderConfig(
        vocabulary_size=30, max_length=16, hidden_dim=16, num_heads=2, num_layers=1, intermediate_dim=32,
    )
    return build_classifier(config, 2, ngram_buckets=512)


def test_config_and_keras_file_round_trip(assert_survives_saving):
    layer = random_layer(max_n=2)
    again = NgramFeatureScores.from_config(layer.get_config())
    assert (again.num_classes, again.buckets, again.max_n) == (3, 5000, 2)
    model = classifier()
    model.get_layer("ngram_scores").table.assign(np.random.default_rng(1).normal(size=(512, 2)))
    assert_survives_saving(model, np.array([[2, 5, 6, 7, 3, 0]], "int32"))


def test_training_moves_only_the_rows_of_the_batch_ngrams():
    model = classifier()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    ids = np.array([[2, 5, 6, 7, 3, 0]], "int32")
    rows, present = model.get_layer("ngram_scores").feature_buckets(ids)
    used = set(np.asarray(rows)[np.asarray(present)].tolist())
    model.fit(ids, np.array([1]), epochs=1, verbose=0)
    table = np.asarray(model.get_layer("ngram_scores").table)
    moved = set(np.flatnonzero(np.abs(table).sum(axis=1)).tolist())
    assert moved and moved <= used
