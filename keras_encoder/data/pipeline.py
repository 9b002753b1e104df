"""tf.data pipelines: token ids in, length-bucketed batches out.

Texts are tokenized once, up front, into a ragged tensor (the corpora here
fit in memory many times over), so epochs cost no tokenization. Batches are
then grouped by length, so a batch of 20-token sentences is padded to about
20, not to `max_length`: attention cost is quadratic in the padded length.
"""

import math

import keras_hub
import numpy as np
import tensorflow as tf

# Upper bounds of the length buckets, in tokens. A batch is padded to the
# longest sequence it holds, which is at most its bucket's bound.
DEFAULT_BUCKET_BOUNDARIES = (16, 32, 48, 64, 96)


def tokenize_all(tokenizer, texts, batch_size=4096):
    """Tokenize a list of strings into one int32 `tf.RaggedTensor` (N, None)."""
    parts = [
        tokenizer.tokenize(tf.constant(texts[start : start + batch_size]))
        for start in range(0, len(texts), batch_size)
    ]
    if not parts:
        return tf.ragged.constant([], dtype=tf.int32, ragged_rank=1)
    return tf.concat(parts, axis=0)


def _sliced(token_ids, labels, shuffle, seed):
    # Shuffle (start, length, label) triples and slice the flat token array:
    # cheap to shuffle, and every element comes out as a dense 1-D tensor.
    values = token_ids.values
    dataset = tf.data.Dataset.from_tensor_slices(
        (token_ids.row_starts(), token_ids.row_lengths(), labels)
    )
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return dataset.map(
        lambda start, length, label: (tf.slice(values, [start], [length]), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _batched(dataset, lengths, batch_size, bucket_boundaries):
    """Pad into batches, grouped by length; the batch count is declared.

    Knowing the count up front gives Keras a progress bar with an ETA and
    lets `fit` restart the dataset each epoch without `steps_per_epoch`.
    """
    lengths = np.asarray(lengths)
    if not bucket_boundaries:
        batches = math.ceil(len(lengths) / batch_size)
        dataset = dataset.padded_batch(batch_size, padded_shapes=([None], []))
        return dataset.apply(tf.data.experimental.assert_cardinality(batches))
    # Bucket i holds lengths in [boundaries[i-1], boundaries[i]).
    buckets = np.bincount(
        np.digitize(lengths, bucket_boundaries), minlength=len(bucket_boundaries) + 1
    )
    batches = int(sum(math.ceil(count / batch_size) for count in buckets))
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda ids, label: tf.shape(ids)[0],
        bucket_boundaries=list(bucket_boundaries),
        bucket_batch_sizes=[batch_size] * (len(bucket_boundaries) + 1),
        padded_shapes=([None], []),
        padding_values=(0, 0),
    )
    return dataset.apply(tf.data.experimental.assert_cardinality(batches))


def masked_lm_dataset(
    token_ids,
    tokenizer,
    batch_size,
    shuffle=False,
    seed=None,
    mask_rate=0.15,
    bucket_boundaries=DEFAULT_BUCKET_BOUNDARIES,
):
    """Batches for `build_masked_lm`: `(inputs, mask_ids, mask_weights)`.

    Masks are drawn anew every epoch by `keras_hub.layers.MaskedLMMaskGenerator`
    (80% `[MASK]`, 10% random token, 10% unchanged), never on padding,
    `[CLS]` or `[SEP]`.
    """
    generator = keras_hub.layers.MaskedLMMaskGenerator(
        vocabulary_size=tokenizer.vocabulary_size,
        mask_selection_rate=mask_rate,
        mask_token_id=tokenizer.mask_id,
        mask_selection_length=max(1, math.ceil(mask_rate * tokenizer.sequence_length)),
        unselectable_token_ids=[tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id],
    )

    def mask(ids, _):
        masked = generator(ids)
        inputs = {"token_ids": masked["token_ids"], "mask_positions": masked["mask_positions"]}
        return inputs, masked["mask_ids"], masked["mask_weights"]

    labels = tf.zeros([token_ids.nrows()], tf.int32)
    dataset = _batched(
        _sliced(token_ids, labels, shuffle, seed),
        token_ids.row_lengths().numpy(),
        batch_size,
        bucket_boundaries,
    )
    return dataset.map(mask, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def classification_dataset(
    token_ids,
    labels,
    batch_size,
    shuffle=False,
    seed=None,
    bucket_boundaries=DEFAULT_BUCKET_BOUNDARIES,
):
    """Batches of `(token_ids (B, T) int32, label (B,) int32)`.

    Args:
        token_ids: int32 `tf.RaggedTensor` `(N, None)` from `tokenize_all`.
        labels: sequence of int class ids, length N.
        batch_size: int. Examples per batch.
        shuffle: bool. Reshuffle every epoch (training). Evaluation keeps
            corpus order within each bucket.
        seed: int. Shuffle seed.
        bucket_boundaries: tuple of int. Length bucket bounds; `()` pads
            every batch to its own longest sequence without grouping.
    """
    labels = tf.constant(np.asarray(labels, dtype="int32"))
    dataset = _batched(
        _sliced(token_ids, labels, shuffle, seed),
        token_ids.row_lengths().numpy(),
        batch_size,
        bucket_boundaries,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)
