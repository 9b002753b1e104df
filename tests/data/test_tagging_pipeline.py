"""Tagging pipeline: unit pieces, windows, training batches.

What the tagger makes of them (per-unit logits, losses, decoding) is in
tests/models/test_tagger.py.
"""

import numpy as np
import tensorflow as tf

from keras_encoder.data.pipeline import (
    chunk_pieces,
    tagging_dataset,
    tagging_sequences,
    tokenize_units_all,
    with_special_tokens,
)
from keras_encoder.text import Tokenizer
from keras_encoder.text.tokenizer import RESERVED_TOKENS

VOCABULARY = RESERVED_TOKENS + ["好", "书", "中", "国", "read", "##ing", "1998", "年", "x"]


def tokenizer(sequence_length=8):
    return Tokenizer(VOCABULARY, sequence_length=sequence_length)


def ids_of(*tokens):
    return [VOCABULARY.index(token) for token in tokens]


def ragged_tags(tags):
    return tf.RaggedTensor.from_row_lengths(
        np.asarray([t for sentence in tags for t in sentence], "int32"),
        np.asarray([len(sentence) for sentence in tags], "int64"),
    )


def test_units_get_their_pieces_and_never_none():
    pieces = tokenize_units_all(tokenizer(), [["好", "Reading", "\x01", "中国"], [], ["1998年"]])
    assert pieces.to_list() == [
        [ids_of("好"), ids_of("read", "##ing"), ids_of("[UNK]"), ids_of("中", "国")],
        [],
        [ids_of("1998", "年")],
    ]


def test_tokenize_units_all_batches_agree_with_one_call():
    sentences = [["好", "书"] * (i % 5) for i in range(23)]
    whole = tokenize_units_all(tokenizer(), sentences)
    parts = tokenize_units_all(tokenizer(), sentences, batch_size=4)
    assert whole.to_list() == parts.to_list()
    assert tokenize_units_all(tokenizer(), []).shape[0] == 0


def test_windows_keep_order_and_size():
    sentences = [["x"] * 11, [], ["好"] * 3]
    pieces = tokenize_units_all(tokenizer(), sentences)
    chunks, rows = chunk_pieces(pieces, 4)
    assert chunks.row_lengths().numpy().tolist() == [4, 4, 3, 0, 3]
    assert rows.numpy().tolist() == [0, 0, 0, 1, 2]
    assert chunks.values.numpy().tolist() == pieces.flat_values.numpy().tolist()


def test_sequences_label_first_pieces_only():
    sentences = [["Reading", "好"], ["中国"]]
    pieces = tokenize_units_all(tokenizer(), sentences)
    token_ids, labels, weights = tagging_sequences(tokenizer(), pieces, ragged_tags([[2, 1], [3]]))
    assert token_ids.to_list() == [
        ids_of("[CLS]", "read", "##ing", "好", "[SEP]"),
        ids_of("[CLS]", "中", "国", "[SEP]"),
    ]
    assert labels.to_list() == [[0, 2, 2, 1, 0], [0, 3, 3, 0]]
    assert weights.to_list() == [[0, 1, 0, 1, 0], [0, 1, 0, 0]]


def test_long_sentences_are_cut_so_every_unit_is_labelled_once():
    sentences = [["x"] * 20, ["好"] * 3]
    tags = [[i % 3 for i in range(20)], [1, 2, 1]]
    pieces = tokenize_units_all(tokenizer(sequence_length=8), sentences)
    token_ids, labels, weights = tagging_sequences(tokenizer(8), pieces, ragged_tags(tags))
    assert max(token_ids.row_lengths().numpy()) <= 8
    weights = weights.to_list()
    labelled = [label for row, w in zip(labels.to_list(), weights) for label, x in zip(row, w) if x]
    assert labelled == tags[0] + tags[1]
    assert sum(map(sum, weights)) == 23


def test_dataset_pads_all_three_with_zeros():
    sentences = [["好"] * n for n in (1, 5, 2, 9, 3)]
    tags = [[1] * len(s) for s in sentences]
    sequences = tagging_sequences(tokenizer(16), tokenize_units_all(tokenizer(16), sentences), ragged_tags(tags))
    total = 0.0
    batches = tagging_dataset(sequences, batch_size=2, bucket_boundaries=(8,))
    for token_ids, labels, weights in batches:
        assert token_ids.shape == labels.shape == weights.shape
        assert token_ids.shape[1] == (token_ids.numpy() != 0).sum(axis=1).max()  # its longest row
        padding = token_ids.numpy() == 0
        assert not labels.numpy()[padding].any()
        assert not weights.numpy()[padding].any()
        assert token_ids.dtype == tf.int32 and weights.dtype == tf.float32
        total += float(tf.reduce_sum(weights))
    assert total == 20
    # Padded to fixed lengths (--jit-compile): the same scored positions.
    fixed = list(tagging_dataset(sequences, batch_size=2, bucket_boundaries=(8,), padded_lengths=(8, 16)))
    assert {batch[0].shape[1] for batch in fixed} <= {8, 16}
    assert sum(float(tf.reduce_sum(weights)) for _, _, weights in fixed) == 20


def test_with_special_tokens_wraps_every_chunk():
    chunks = tf.ragged.constant([ids_of("好", "书"), [], ids_of("x")])
    assert with_special_tokens(tokenizer(), chunks).to_list() == [
        ids_of("[CLS]", "好", "书", "[SEP]"), ids_of("[CLS]", "[SEP]"), ids_of("[CLS]", "x", "[SEP]"),
    ]
    # Label and weight chunks are wrapped in given values.
    assert with_special_tokens(tokenizer(), tf.ragged.constant([[1.0], []]), 0.0, 0.0).to_list() == [
        [0.0, 1.0, 0.0], [0.0, 0.0],
    ]


def test_token_dropout_keeps_labels_and_weights():
    sentences = [["好"] * n for n in (4, 6, 9)]
    tags = [[1] * len(s) for s in sentences]
    tok = tokenizer(16)
    sequences = tagging_sequences(tok, tokenize_units_all(tok, sentences), ragged_tags(tags))
    plain = list(tagging_dataset(sequences, batch_size=3, bucket_boundaries=()))
    dropped = list(tagging_dataset(sequences, batch_size=3, bucket_boundaries=(), token_dropout=0.5, seed=1,
                                   unk_id=tok.unk_id, first_regular_id=tok.first_regular_id))
    (ids, labels, weights), (new_ids, new_labels, new_weights) = plain[0], dropped[0]
    np.testing.assert_array_equal(labels.numpy(), new_labels.numpy())
    np.testing.assert_array_equal(weights.numpy(), new_weights.numpy())
    changed = ids.numpy() != new_ids.numpy()
    assert changed.any() and (new_ids.numpy()[changed] == tok.unk_id).all()
    assert (ids.numpy()[changed] >= tok.first_regular_id).all()
