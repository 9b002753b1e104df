import numpy as np
import tensorflow as tf

from keras_encoder.data.pipeline import (
    classification_dataset,
    pad_to_lengths,
    padded_length_bounds,
    tokenize_all,
)
from keras_encoder.text import Tokenizer


def make(lengths):
    return tf.ragged.constant([[2] + [7] * (n - 2) + [3] for n in lengths], dtype=tf.int32)


def test_batches_cover_every_example_once_and_pad_with_zero():
    lengths = [3, 40, 5, 70, 12, 3, 100, 33]
    ids = make(lengths)
    labels = list(range(len(lengths)))
    seen = []
    for token_ids, batch_labels in classification_dataset(ids, labels, batch_size=3):
        token_ids = token_ids.numpy()
        for row, label in zip(token_ids, batch_labels.numpy()):
            real = int((row != 0).sum())
            assert real == lengths[label]
            seen.append(label)
    assert sorted(seen) == labels


def test_bucketing_keeps_short_batches_short():
    lengths = [4] * 32 + [120] * 32
    ids = make(lengths)
    widths = [t.shape[1] for t, _ in classification_dataset(ids, [0] * 64, batch_size=16, shuffle=True, seed=1)]
    assert sorted(widths) == [4] * 2 + [120] * 2


def test_shuffle_is_seeded_and_changes_between_epochs():
    ids = make([5] * 64)
    dataset = classification_dataset(ids, list(range(64)), batch_size=64, shuffle=True, seed=3)
    first = [labels.numpy().tolist() for _, labels in dataset]
    second = [labels.numpy().tolist() for _, labels in dataset]
    assert first != second
    again = classification_dataset(ids, list(range(64)), batch_size=64, shuffle=True, seed=3)
    assert [labels.numpy().tolist() for _, labels in again] == first


def test_tokenize_all_matches_one_call():
    tokenizer = Tokenizer.learn(["好的 很好", "差 不好"] * 10, vocabulary_size=50, sequence_length=8)
    texts = ["好的", "不好 差", ""] * 5
    whole = tokenize_all(tokenizer, texts, batch_size=4)
    np.testing.assert_array_equal(
        whole.to_tensor().numpy(), tokenizer.tokenize(tf.constant(texts)).to_tensor().numpy()
    )


def test_masked_lm_batches_mask_real_tokens_only():
    from keras_encoder.data.pipeline import masked_lm_dataset

    tokenizer = Tokenizer.learn(["好的 很好 不错", "差 不好 失望"] * 10, vocabulary_size=50, sequence_length=16)
    texts = ["好的很好不错", "差不好", "很好", "不好失望差不好"] * 8
    original = tokenize_all(tokenizer, texts)
    batches = list(masked_lm_dataset(original, tokenizer, batch_size=8, shuffle=True, seed=0))
    assert len(batches) == masked_lm_dataset(original, tokenizer, 8).cardinality()
    masked_count = 0
    for inputs, mask_ids, weights in batches:
        token_ids = inputs["token_ids"].numpy()
        positions = inputs["mask_positions"].numpy()
        for row, row_positions, row_ids, row_weights in zip(token_ids, positions, mask_ids.numpy(), weights.numpy()):
            for position, target, weight in zip(row_positions, row_ids, row_weights):
                if weight == 0:
                    continue
                masked_count += 1
                assert target not in (tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id)
                assert row[0] == tokenizer.cls_id  # [CLS] is never replaced
    assert masked_count > 0


def test_fixed_masks_score_the_same_tokens_every_epoch():
    from keras_encoder.data.pipeline import masked_lm_dataset

    tokenizer = Tokenizer.learn(["好的 很好 不错", "差 不好 失望"] * 10, vocabulary_size=50, sequence_length=16)
    ids = tokenize_all(tokenizer, ["好的很好不错", "差不好", "很好", "不好失望差不好"] * 8)

    def masks(dataset):
        return [np.concatenate([inputs["token_ids"].numpy().ravel(), weights.numpy().ravel()])
                for inputs, _, weights in dataset]

    fixed = masked_lm_dataset(ids, tokenizer, 8, fixed_masks=True)
    first = masks(fixed)
    for again in (masks(fixed), masks(fixed)):  # later epochs
        assert all(np.array_equal(a, b) for a, b in zip(first, again))
    # Masks were drawn: some real tokens became [MASK].
    assert any((batch == tokenizer.mask_id).any() for batch in first)


def test_bucketed_batches_pad_to_their_longest_row_and_keep_every_token():
    lengths = [3, 15, 16, 17, 40, 64, 70, 100, 128, 5, 33, 95]
    ids = make(lengths)
    labels = list(range(len(lengths)))
    dataset = classification_dataset(ids, labels, batch_size=2, shuffle=True, seed=2)
    seen = []
    for token_ids, batch_labels in dataset:
        token_ids = token_ids.numpy()
        assert token_ids.shape[1] == max(lengths[label] for label in batch_labels.numpy())
        for row, label in zip(token_ids, batch_labels.numpy()):
            assert row[: lengths[label]].tolist() == ids[label].numpy().tolist()
            assert not row[lengths[label] :].any()
            seen.append(label)
    assert sorted(seen) == labels
    assert dataset.cardinality() == sum(1 for _ in dataset)


def test_padded_length_bounds_are_the_bounds_below_the_length_and_the_length():
    assert padded_length_bounds((16, 32, 48, 64, 96), 128) == (16, 32, 48, 64, 96, 128)
    assert padded_length_bounds((16, 32, 48, 64, 96), 40) == (16, 32, 40)
    assert padded_length_bounds((64, 16, 16), 64) == (16, 64)
    assert padded_length_bounds((), 12) == (12,)


def test_token_dropout_replaces_regular_tokens_only_anew_each_epoch():
    lengths = [30] * 64
    ids = tf.ragged.constant([[2] + list(range(5, 33)) + [3] for _ in lengths], dtype=tf.int32)
    plain = classification_dataset(ids, [0] * 64, batch_size=64, shuffle=True, seed=4)
    dataset = classification_dataset(ids, [0] * 64, batch_size=64, shuffle=True, seed=4, token_dropout=0.3)
    assert dataset.cardinality() == plain.cardinality() == 1
    first = next(iter(dataset))[0].numpy()
    second = next(iter(dataset))[0].numpy()
    unchanged = next(iter(plain))[0].numpy()
    # [CLS], [SEP] and padding are never dropped; about 30% of the rest are.
    assert (first[:, 0] == 2).all() and (first[:, -1] == 3).all()
    dropped = first[:, 1:-1] == 1
    assert 0.25 < dropped.mean() < 0.35
    assert not (unchanged == 1).any()
    # Each epoch drops other tokens; the same seed repeats a run.
    assert (first != second).any()
    again = classification_dataset(ids, [0] * 64, batch_size=64, shuffle=True, seed=4, token_dropout=0.3)
    np.testing.assert_array_equal(next(iter(again))[0].numpy(), first)


def test_token_dropout_keeps_padding_and_uses_the_given_ids():
    ids = make([3, 10, 40])
    batches = classification_dataset(
        ids, [0, 1, 2], batch_size=3, bucket_boundaries=(), token_dropout=0.99, unk_id=9, first_regular_id=7
    )
    token_ids = next(iter(batches))[0].numpy()
    assert set(np.unique(token_ids)) <= {0, 2, 3, 9}
    assert (token_ids[:, 0] == 2).all() and token_ids[2, -1] == 3
    assert (token_ids == 9).sum() > 0.9 * (1 + 8 + 38)
    assert ((token_ids == 0).sum(axis=1) == [37, 30, 0]).all()


def test_padded_lengths_give_a_few_fixed_shapes_and_keep_every_token():
    # For --jit-compile: each batch grows to the first bound that holds it.
    lengths = [3, 15, 16, 20, 31, 40, 64, 65, 100, 128] * 4
    ids = make(lengths)
    bounds = padded_length_bounds((16, 32, 48, 64, 96), 128)
    widths, seen = set(), []
    dataset = classification_dataset(ids, list(range(len(lengths))), batch_size=3, padded_lengths=bounds)
    for token_ids, labels in dataset:
        width = token_ids.shape[1]
        real = (token_ids.numpy() != 0).sum(axis=1)
        assert width == min(b for b in bounds if b >= real.max())
        assert labels.shape == (token_ids.shape[0],)
        assert list(real) == [lengths[label] for label in labels.numpy()]
        widths.add(width)
        seen += labels.numpy().tolist()
    assert sorted(seen) == list(range(len(lengths)))
    assert widths <= set(bounds) and len(widths) > 2
    assert int(dataset.cardinality()) == len(list(dataset))


def test_pad_to_lengths_pads_every_per_token_component_and_leaves_longer_batches():
    ids = tf.ones([2, 5], tf.int32)
    weights = tf.ones([2, 5])
    labels = tf.constant([1, 2])
    dataset = tf.data.Dataset.from_tensors((ids, weights, labels))
    padded_ids, padded_weights, same_labels = next(iter(pad_to_lengths(dataset, (4, 8))))
    assert padded_ids.shape == padded_weights.shape == (2, 8)
    assert float(tf.reduce_sum(padded_weights)) == 10.0  # padding is not scored
    assert same_labels.numpy().tolist() == [1, 2]
    longer = next(iter(pad_to_lengths(tf.data.Dataset.from_tensors(ids), (2, 4))))
    assert longer.shape == (2, 5)
