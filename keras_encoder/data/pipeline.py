"""tf.data pipelines: token ids in, length-bucketed batches out.

Texts are tokenized once, up front, into a ragged tensor (the corpora here
fit in memory many times over), so epochs cost no tokenization. Batches are
then grouped by length, so a batch of 20-token sentences is padded to about
20, not to `max_length`: attention cost is quadratic in the padded length.
"""

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
    # Shuffle (start, length, label) triples and slice the flat token array:
    # cheap to shuffle, and every element comes out as a dense 1-D tensor.
    values = token_ids.values
    dataset = tf.data.Dataset.from_tensor_slices(
        (token_ids.row_starts(), token_ids.row_lengths(), labels)
    )
    if shuffle:
        dataset = dataset.shuffle(
            len(labels), seed=seed, reshuffle_each_iteration=True
        )
    dataset = dataset.map(
        lambda start, length, label: (tf.slice(values, [start], [length]), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if bucket_boundaries:
        dataset = dataset.bucket_by_sequence_length(
            element_length_func=lambda ids, label: tf.shape(ids)[0],
            bucket_boundaries=list(bucket_boundaries),
            bucket_batch_sizes=[batch_size] * (len(bucket_boundaries) + 1),
            padded_shapes=([None], []),
            padding_values=(0, 0),
        )
    else:
        dataset = dataset.padded_batch(batch_size, padded_shapes=([None], []))
    return dataset.prefetch(tf.data.AUTOTUNE)
