"""Graph-side pieces of the tagger export: units with offsets, entity spans."""

import random

import numpy as np
import tensorflow as tf

from keras_encoder.data.tagging import bio_spans
from keras_encoder.export import bio_entities, split_units


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
