"""Graph-side pieces of the exports: grouping by length, units with offsets, entity spans."""

import random

import numpy as np
import pytest
import tensorflow as tf

from keras_encoder.data.tagging import bio_spans
from keras_encoder.export import bio_entities, grouped_by_length, split_units
from keras_encoder.models import EncoderClassifier, EncoderConfig, EncoderPreprocessor, build_encoder


def as_lists(ragged):
    return [[x.decode() if isinstance(x, bytes) else x for x in row] for row in ragged.to_list()]


def test_char_units_skip_whitespace_and_keep_character_offsets():
    text = ["江泽民 在北京。", "", "  a b\t", "\u3000中\x00国"]
    units, starts, ends = split_units(tf.constant(text), "char")
    assert as_lists(units) == [["江", "泽", "民", "在", "北", "京", "。"], [], ["a", "b"], ["中", "国"]]
    for row, (string, row_units) in enumerate(zip(text, as_lists(units))):
        spans = zip(starts[row].numpy(), ends[row].numpy())
        assert [string[a:b] for a, b in spans] == row_units


def test_word_units_split_on_any_whitespace():
    text = ["  New York\u3000is  big ", "", "one", "中国 人民"]
    units, starts, ends = split_units(tf.constant(text), "word")
    assert as_lists(units) == [["New", "York", "is", "big"], [], ["one"], ["中国", "人民"]]
    for row, (string, row_units) in enumerate(zip(text, as_lists(units))):
        spans = zip(starts[row].numpy(), ends[row].numpy())
        assert [string[a:b] for a, b in spans] == row_units


def test_entities_decode_like_bio_spans():
    rng = random.Random(0)
    names = ["O", "B-A", "I-A", "B-B", "I-B"]
    sequences = [[rng.choice(names) for _ in range(rng.randint(0, 12))] for _ in range(300)]
    lengths = np.asarray([len(s) for s in sequences], "int64")

    def ragged(values, dtype):
        return tf.RaggedTensor.from_row_lengths(tf.constant(values, dtype, shape=[len(values)]), lengths)

    flat_tags = [t for s in sequences for t in s]
    units = ragged([str(i % 10) for s in sequences for i in range(len(s))], tf.string)
    starts = ragged([2 * i for s in sequences for i in range(len(s))], tf.int32)
    entities = bio_entities(units, ragged(flat_tags, tf.string), starts, starts + 1, "char")
    for row, tags in enumerate(sequences):
        expected = bio_spans(tags)
        kinds = [k.decode() for k in entities["type"][row].numpy()]
        assert kinds == [kind for kind, _, _ in expected]
        assert entities["start"][row].numpy().tolist() == [2 * a for _, a, _ in expected]
        assert entities["end"][row].numpy().tolist() == [2 * (b - 1) + 1 for _, _, b in expected]
        texts = [t.decode() for t in entities["text"][row].numpy()]
        assert texts == ["".join(str(i % 10) for i in range(a, b)) for _, a, b in expected]


def test_word_entities_join_with_a_space():
    units, starts, ends = split_units(tf.constant(["I saw New York today"]), "word")
    tags = units.with_values(tf.constant(["O", "O", "B-LOC", "I-LOC", "O"]))
    entities = bio_entities(units, tags, starts, ends, "word")
    assert entities["text"].to_list() == [[b"New York"]]
    assert entities["start"].to_list() == [[6]] and entities["end"].to_list() == [[14]]


def row_summary(ids):
    # Depends on every real id and on nothing under the padding.
    ids = tf.cast(ids, tf.float32)
    return tf.stack([tf.reduce_sum(ids, axis=1), tf.reduce_sum(tf.sign(ids), axis=1)], axis=1)


@pytest.mark.parametrize("bounds", [(), (4,), (3, 6, 10)])
@pytest.mark.parametrize("lengths", [[], [5], [1, 12, 3, 7, 4, 4, 11, 2, 6, 9]])
def test_grouped_by_length_returns_rows_in_input_order(bounds, lengths):
    rng = np.random.default_rng(len(lengths))
    rows = [rng.integers(1, 50, size=n).tolist() for n in lengths]
    ids = tf.ragged.constant(rows, dtype=tf.int32, ragged_rank=1) if rows else tf.RaggedTensor.from_row_lengths(
        tf.zeros([0], tf.int32), tf.zeros([0], tf.int64)
    )
    grouped = tf.function(lambda ids: grouped_by_length(row_summary, ids, bounds, output_shape=(2,)))(ids)
    expected = [[sum(row), len(row)] for row in rows]
    np.testing.assert_array_equal(grouped.numpy().reshape(-1, 2), np.asarray(expected, "float32").reshape(-1, 2))


def test_grouped_classifier_matches_one_padded_batch():
    config = EncoderConfig(vocabulary_size=60, max_length=16, hidden_dim=8, num_heads=2, num_layers=1, intermediate_dim=16)
    model = EncoderClassifier(build_encoder(config), 3)
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, 60, size=n).tolist() for n in (2, 16, 5, 9, 3, 14)]
    ids = tf.ragged.constant(rows, dtype=tf.int32)
    whole = model(ids.to_tensor(), training=False)
    grouped = grouped_by_length(
        lambda dense: model(dense, training=False), ids, (4, 8), output_shape=(3,)
    )
    np.testing.assert_allclose(grouped.numpy(), whole.numpy(), atol=1e-5)


@pytest.mark.parametrize("bounds", [(), (3, 6)])
def test_fixed_shapes_pad_groups_to_bounds_and_row_sizes(bounds):
    rng = np.random.default_rng(1)
    lengths = [1, 12, 3, 7, 4, 4, 11, 2, 6, 9, 5]
    rows = [rng.integers(1, 50, size=n).tolist() for n in lengths]
    ids = tf.ragged.constant(rows, dtype=tf.int32)
    seen = []

    def recording(dense):
        seen.append(tuple(dense.shape))
        return row_summary(dense)

    # Eagerly, so that `recording` sees the concrete shapes.
    grouped = grouped_by_length(
        recording, ids, bounds, output_shape=(2,), max_length=12, row_sizes=(1, 2, 4)
    )
    expected = [[sum(row), len(row)] for row in rows]
    np.testing.assert_array_equal(grouped.numpy(), np.asarray(expected, "float32"))
    # Rows padded to 1, 2, 4 or a multiple of 4; lengths to a bound or 12.
    allowed_lengths = {*bounds, 12}
    assert seen and all(length in allowed_lengths for _, length in seen)
    assert all(count in (1, 2, 4) or count % 4 == 0 for count, _ in seen)
    if bounds:
        # 4 rows of at most 3 ids, 4 of 4 to 6, 3 of 7 to 12 (padded to 4).
        assert sorted(seen) == [(4, 3), (4, 6), (4, 12)]
    else:
        assert seen == [(12, 12)]


@pytest.mark.parametrize("row_sizes, expected", [((1, 2, 4), (1, 6)), ((2, 4), (2, 6))])
def test_a_batch_of_one_is_padded_like_its_group(row_sizes, expected):
    ids = tf.ragged.constant([[7, 8, 9, 10, 11]], dtype=tf.int32)
    seen = []

    def recording(dense):
        seen.append(tuple(dense.shape))
        return row_summary(dense)

    grouped = grouped_by_length(
        recording, ids, (3, 6), output_shape=(2,), max_length=12, row_sizes=row_sizes
    )
    np.testing.assert_array_equal(grouped.numpy(), [[45.0, 5.0]])
    assert seen == [expected]


def test_a_batch_of_one_past_the_max_length_is_cut_to_it():
    ids = tf.ragged.constant([list(range(1, 16))], dtype=tf.int32)
    seen = []

    def recording(dense):
        seen.append(tuple(dense.shape))
        return row_summary(dense)

    single = grouped_by_length(recording, ids, (3, 6), output_shape=(2,), max_length=12, row_sizes=(1, 2))
    np.testing.assert_array_equal(single.numpy(), [[78.0, 12.0]])  # ids 1 to 12
    assert seen == [(1, 12)]


def test_bounds_past_the_max_length_are_dropped():
    rng = np.random.default_rng(2)
    rows = [rng.integers(1, 50, size=n).tolist() for n in (2, 8, 3, 5, 8)]
    seen = []

    def recording(dense):
        seen.append(tuple(dense.shape))
        return row_summary(dense)

    grouped = grouped_by_length(
        recording, tf.ragged.constant(rows, dtype=tf.int32), (3, 10, 20), output_shape=(2,),
        max_length=8, row_sizes=(1, 2, 4),
    )
    np.testing.assert_array_equal(grouped.numpy(), [[sum(row), len(row)] for row in rows])
    # Rows of 4 to 8 ids go to the last group (padded to 8), not to 10.
    assert sorted(seen) == [(2, 3), (4, 8)]


@pytest.fixture(scope="module")
def tiny_classifier():
    from keras_encoder.text import Tokenizer

    texts = ["这个手机很好用", "质量太差了", "还不错 推荐", "mixed English 和中文", "很好"] * 4
    tokenizer = Tokenizer.learn(texts, vocabulary_size=80, sequence_length=16)
    config = EncoderConfig(
        vocabulary_size=tokenizer.vocabulary_size, max_length=16, hidden_dim=8, num_heads=2,
        num_layers=1, intermediate_dim=16,
    )
    return EncoderClassifier(build_encoder(config), 2, EncoderPreprocessor(tokenizer), label_names=["neg", "pos"])


@pytest.mark.slow
@pytest.mark.parametrize("jit_compile", [True, False])
def test_exported_classifier_matches_the_model(tiny_classifier, tmp_path, jit_compile):
    model = tiny_classifier
    tokenizer = model.preprocessor.tokenizer
    # Bounds 4 and 8 group these texts; 24 is past the tokenizer's 16 tokens.
    model.export(tmp_path / "export", length_bounds=(4, 8, 24), jit_compile=jit_compile)
    serve = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    texts = ["这个手机很好用", "", "质量太差了" * 10, "很好", "还不错 推荐推荐推荐推荐推荐推荐推荐", "好" * 20_000]
    for batch in (texts, texts[2:3], texts[:1], texts[1:2], texts[-1:]):
        served = serve(tf.constant(batch))
        ids = tokenizer.tokenize(tf.constant(batch)).to_tensor()
        expected = tf.nn.softmax(model(ids, training=False)).numpy()
        np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
        assert [label.decode() for label in served["label"].numpy()] == [
            ["neg", "pos"][i] for i in expected.argmax(-1)
        ]


@pytest.mark.parametrize("row_sizes", [(), (4, 2), (0, 2), (1, 2.5), (True, 2), None])
def test_export_refuses_bad_row_sizes(tiny_classifier, tmp_path, row_sizes):
    with pytest.raises(ValueError, match="row_sizes"):
        tiny_classifier.export(tmp_path / "export", row_sizes=row_sizes)
    assert not (tmp_path / "export").exists()
