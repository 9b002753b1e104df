"""tf.data pipelines: token ids in, length-bucketed batches out.

Texts are tokenized once, up front, into a ragged tensor (the corpora here
fit in memory many times over), so epochs cost no tokenization. Batches are
then grouped by length, so a batch of 20-token sentences is padded to about
20, not to `max_length`: attention cost is quadratic in the padded length.
"""

import math

import numpy as np
import tensorflow as tf

from keras_encoder.data.masking import mask_generator
from keras_encoder.text.tokenizer import RESERVED_TOKENS

# Upper bounds of the length buckets, in tokens. A batch is padded to the
# longest sequence it holds, which is at most its bucket's bound.
DEFAULT_BUCKET_BOUNDARIES = (16, 32, 48, 64, 96)
# The tokenizer's ids: [UNK], and the first id after padding and the special tokens.
UNK_ID = RESERVED_TOKENS.index("[UNK]")
FIRST_REGULAR_ID = len(RESERVED_TOKENS)


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


def _sliced_rows(arrays, shuffle, seed):
    # As `_sliced`, for several ragged arrays that share their row lengths:
    # each element is a tuple of dense 1-D rows.
    first = arrays[0]
    values = [array.values for array in arrays]
    dataset = tf.data.Dataset.from_tensor_slices((first.row_starts(), first.row_lengths()))
    if shuffle:
        dataset = dataset.shuffle(int(first.nrows()), seed=seed, reshuffle_each_iteration=True)
    return dataset.map(
        lambda start, length: tuple(tf.slice(v, [start], [length]) for v in values),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _batched(dataset, lengths, batch_size, bucket_boundaries, padded_lengths=()):
    """Pad into batches, grouped by length; the batch count is declared.

    Knowing the count up front gives Keras a progress bar with an ETA and
    lets `fit` restart the dataset each epoch without `steps_per_epoch`.
    With `padded_lengths`, every batch is then padded further, to the
    first of them at or above its longest row (see `pad_to_lengths`).
    """
    lengths = np.asarray(lengths)
    padded_shapes = tf.nest.map_structure(
        lambda spec: [None] * spec.shape.rank, dataset.element_spec
    )
    if not bucket_boundaries:
        batches = math.ceil(len(lengths) / batch_size)
        dataset = dataset.padded_batch(batch_size, padded_shapes=padded_shapes)
    else:
        # Bucket i holds lengths in [boundaries[i-1], boundaries[i]).
        buckets = np.bincount(
            np.digitize(lengths, bucket_boundaries), minlength=len(bucket_boundaries) + 1
        )
        batches = int(sum(math.ceil(count / batch_size) for count in buckets))
        dataset = dataset.bucket_by_sequence_length(
            element_length_func=lambda ids, *rest: tf.shape(ids)[0],
            bucket_boundaries=list(bucket_boundaries),
            bucket_batch_sizes=[batch_size] * (len(bucket_boundaries) + 1),
            padded_shapes=padded_shapes,
        )
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return pad_to_lengths(dataset, padded_lengths) if padded_lengths else dataset


def pad_to_lengths(dataset, padded_lengths):
    """Batches padded along their second axis to one of a few fixed lengths.

    Each batch goes to the smallest of `padded_lengths` that holds its
    longest row (a longer batch is left as it is). Every component of
    rank 2 or more (token ids, and per-token labels and weights) is padded
    with zeros, which is `[PAD]` for ids and "not scored" for weights; per
    example components (labels of shape `(B,)`) are left alone. A model
    compiled with XLA (`jit_compile=True`) then meets a few shapes, each
    compiled once, rather than one shape per batch length.

    Args:
        dataset: a batched `tf.data.Dataset` whose first component is `(B, T)`.
        padded_lengths: increasing tuple of int, e.g. from
            `padded_length_bounds(DEFAULT_BUCKET_BOUNDARIES, max_length)`.
    """
    bounds = tf.constant(sorted(padded_lengths), tf.int32)

    def pad(*batch):
        length = tf.shape(tf.nest.flatten(batch)[0])[1]
        index = tf.searchsorted(bounds, length[tf.newaxis], side="left")[0]
        extra = tf.maximum(bounds[tf.minimum(index, tf.size(bounds) - 1)] - length, 0)

        def padded(tensor):
            if tensor.shape.rank is None or tensor.shape.rank < 2:
                return tensor
            paddings = [[0, 0], [0, extra]] + [[0, 0]] * (tensor.shape.rank - 2)
            return tf.pad(tensor, paddings)

        return tf.nest.map_structure(padded, batch if len(batch) > 1 else batch[0])

    return dataset.map(pad, num_parallel_calls=tf.data.AUTOTUNE)


def _with_token_dropout(dataset, rate, unk_id, first_regular_id, seed):
    """Replace each regular token of a training batch by `unk_id` with probability `rate`.

    Ids below `first_regular_id` (padding, `[CLS]`, `[SEP]`, ...) are kept.
    Each batch draws from its own stateless seed, taken from a seeded
    stream that is drawn anew every epoch, so every epoch drops other
    tokens and the same seed repeats a run.
    """
    if not rate:
        return dataset
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def drop(batch, batch_seed):
        ids = batch[0]  # (B, T)
        draw = tf.random.stateless_uniform(tf.shape(ids), seed=tf.stack([batch_seed, 0]))
        dropped = (draw < rate) & (ids >= first_regular_id)
        return (tf.where(dropped, tf.constant(unk_id, ids.dtype), ids), *batch[1:])

    return tf.data.Dataset.zip((dataset, seeds)).map(drop, num_parallel_calls=tf.data.AUTOTUNE)


def padded_length_bounds(bucket_boundaries, sequence_length):
    """Fixed padded lengths: the bucket bounds below `sequence_length`, and it.

    The serving export pads each length group to one of these, so that an
    XLA-compiled model sees a few shapes only.
    """
    return tuple(sorted({b for b in bucket_boundaries if b < sequence_length} | {sequence_length}))


def masked_lm_dataset(
    token_ids,
    tokenizer,
    batch_size,
    shuffle=False,
    seed=None,
    mask_rate=0.15,
    bucket_boundaries=DEFAULT_BUCKET_BOUNDARIES,
    fixed_masks=False,
    padded_lengths=(),
    mask_spans=1,
):
    """Batches for `EncoderMaskedLM`: `(inputs, mask_ids, mask_weights)`.

    Masks are drawn by `keras_encoder.data.masking.mask_generator` (single
    tokens, or with `mask_spans` > 1 spans of up to that many tokens; 80%
    `[MASK]`, 10% random token, 10% unchanged), never on padding, `[CLS]`
    or `[SEP]`: per batch as batches come (with a global seed set, each
    epoch replays the same random stream on its reshuffled batches), or
    with `fixed_masks=True` once, in
    order, and kept in memory, so that every evaluation of a held-out split
    in one process scores the same masked tokens. A new process draws
    other masks, even after `keras.utils.set_random_seed` (measured), so a
    resumed run scores a new sample of the same size from its resume on.
    `padded_lengths` as in `classification_dataset`.
    """
    generator = mask_generator(tokenizer, mask_rate, mask_spans)

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
        padded_lengths,
    )
    if fixed_masks:
        dataset = dataset.map(mask).cache()
        for _ in dataset:  # draws every mask now and fills the cache
            pass
        return dataset
    return dataset.map(mask, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def classification_dataset(
    token_ids,
    labels,
    batch_size,
    shuffle=False,
    seed=None,
    bucket_boundaries=DEFAULT_BUCKET_BOUNDARIES,
    token_dropout=0.0,
    unk_id=UNK_ID,
    first_regular_id=FIRST_REGULAR_ID,
    padded_lengths=(),
):
    """Batches of `(token_ids (B, T) int32, label (B,) int32)`.

    Args:
        token_ids: int32 `tf.RaggedTensor` `(N, None)` from `tokenize_all`.
        labels: sequence of int class ids, length N.
        batch_size: int. Examples per batch.
        shuffle: bool. Reshuffle every epoch (training). Evaluation keeps
            corpus order within each bucket.
        seed: int or `None`. Seed of the shuffle and of token dropout.
        bucket_boundaries: tuple of int. Length bucket bounds; `()` pads
            every batch to its own longest sequence without grouping.
        token_dropout: float in `[0, 1)`. For training batches (callers
            pass 0 for evaluation): the probability that each token with
            id >= `first_regular_id` is replaced by `unk_id`, drawn anew each
            epoch, so the model cannot lean on any single token (word
            dropout). Defaults to `0.0`.
        unk_id: int. The `[UNK]` id. Defaults to `Tokenizer.unk_id`.
        first_regular_id: int. Ids below it (padding and the special
            tokens) are never dropped. Defaults to
            `Tokenizer.first_regular_id`.
        padded_lengths: tuple of int. When given, each batch is padded
            further, to the first of these that holds it (`pad_to_lengths`),
            so that batches come in a few fixed shapes, as XLA needs.
            Defaults to `()`: each batch padded to its longest row.
    """
    labels = tf.constant(np.asarray(labels, dtype="int32"))
    dataset = _batched(
        _sliced(token_ids, labels, shuffle, seed),
        token_ids.row_lengths().numpy(),
        batch_size,
        bucket_boundaries,
        padded_lengths,
    )
    dataset = _with_token_dropout(dataset, token_dropout, unk_id, first_regular_id, seed)
    return dataset.prefetch(tf.data.AUTOTUNE)


# === Token tagging ===
#
# A sentence's units (characters or words) are split into word-pieces; the
# first piece of each unit carries the unit's tag, the other pieces are not
# scored. A sentence longer than the model's window is cut into several
# sequences (`chunk_pieces`), each `[CLS] pieces [SEP]`, so every unit gets
# a prediction however long its sentence; `EncoderTagger.unit_logits` puts
# the chunks' predictions back together. Training, evaluation and the
# exported SavedModel all cut sentences the same way.


def tokenize_units_all(tokenizer, units, batch_size=4096):
    """Pieces of every sentence's units: int32 `tf.RaggedTensor` `(N, U, P)`.

    Args:
        tokenizer: a `keras_encoder.text.Tokenizer`.
        units: list of list of str (sentences of units).
    """
    parts = []
    for start in range(0, len(units), batch_size):
        sentences = units[start : start + batch_size]
        flat = tf.constant([unit for sentence in sentences for unit in sentence], tf.string)
        lengths = tf.constant([len(sentence) for sentence in sentences], tf.int64)
        parts.append(tokenizer.tokenize_units(tf.RaggedTensor.from_row_lengths(flat, lengths)))
    if not parts:
        return tf.RaggedTensor.from_row_lengths(
            tf.RaggedTensor.from_row_lengths(tf.zeros([0], tf.int32), tf.zeros([0], tf.int64)),
            tf.zeros([0], tf.int64),
        )
    return tf.concat(parts, axis=0)


def first_piece_flags(pieces):
    """bool `(B, U, P)` ragged: True at the first piece of every unit."""
    inner = pieces.values  # (N, P)
    return pieces.with_values(inner.with_values(tf.equal(tf.ragged.range(inner.row_lengths()).values, 0)))


def chunk_pieces(pieces, window, *aligned):
    """Cuts each sentence's pieces into consecutive windows of `window`.

    Args:
        pieces: int32 `tf.RaggedTensor` `(B, U, P)` from `tokenize_units`.
        window: int. Most pieces per chunk (`sequence_length - 2`).
        *aligned: further flat tensors aligned with `pieces.flat_values`
            (per-piece labels, weights), cut the same way.

    Returns:
        A tuple: the chunks, `tf.RaggedTensor` `(C, None)` in sentence
        order (a sentence with no pieces still gets one empty chunk), the
        sentence index of each chunk `(C,)`, then each of `aligned` cut the
        same way.
    """
    flat = pieces.merge_dims(1, 2)  # (B, T)
    lengths = flat.row_lengths()
    counts = tf.maximum((lengths + window - 1) // window, 1)
    first_chunk = tf.cumsum(counts, exclusive=True)
    positions = tf.ragged.range(lengths).values
    chunk_ids = tf.gather(first_chunk, flat.value_rowids()) + positions // window
    total = tf.reduce_sum(counts)

    def cut(values):
        return tf.RaggedTensor.from_value_rowids(values, chunk_ids, nrows=total)

    chunk_rows = tf.repeat(tf.range(tf.size(counts, out_type=tf.int64)), counts)
    return (cut(flat.values), chunk_rows, *(cut(values) for values in aligned))


def with_special_tokens(tokenizer, chunks, first=None, last=None):
    """`[CLS] chunk [SEP]` for every row of a ragged `(C, None)` tensor.

    `first` and `last` replace the `[CLS]` and `[SEP]` ids (e.g. 0 around
    a chunk of labels or weights).
    """
    rows = chunks.nrows()
    first = tokenizer.cls_id if first is None else first
    last = tokenizer.sep_id if last is None else last
    before = tf.fill([rows, 1], tf.cast(first, chunks.dtype))
    after = tf.fill([rows, 1], tf.cast(last, chunks.dtype))
    return tf.concat([before, chunks, after], axis=1)


def tagging_sequences(tokenizer, pieces, tag_ids):
    """Training sequences: `(token_ids, labels, weights)`, ragged `(C, None)` each.

    `labels` holds each unit's tag at its first piece; `weights` is 1.0
    there and 0.0 at `[CLS]`, `[SEP]` and further pieces, so the loss and
    metrics count each labelled unit exactly once.
    """
    piece_counts = pieces.values.row_lengths()  # pieces per unit
    labels = tf.repeat(tf.cast(tag_ids.values, tf.int32), piece_counts)
    weights = tf.cast(first_piece_flags(pieces).flat_values, tf.float32)
    chunks, _, label_chunks, weight_chunks = chunk_pieces(
        pieces, tokenizer.sequence_length - 2, labels, weights
    )
    return (
        with_special_tokens(tokenizer, chunks),
        with_special_tokens(tokenizer, label_chunks, 0, 0),
        with_special_tokens(tokenizer, weight_chunks, 0.0, 0.0),
    )


def tagging_dataset(
    sequences,
    batch_size,
    shuffle=False,
    seed=None,
    bucket_boundaries=DEFAULT_BUCKET_BOUNDARIES,
    token_dropout=0.0,
    unk_id=UNK_ID,
    first_regular_id=FIRST_REGULAR_ID,
    padded_lengths=(),
):
    """Batches of `(token_ids (B, T), labels (B, T), weights (B, T))`.

    Args:
        sequences: the triple from `tagging_sequences`.
        batch_size, shuffle, seed, bucket_boundaries, token_dropout,
            unk_id, first_regular_id, padded_lengths: as in
            `classification_dataset`; a dropped token keeps its tag, so it
            must be tagged from context. Padding gets weight 0.
    """
    dataset = _batched(
        _sliced_rows(list(sequences), shuffle, seed),
        sequences[0].row_lengths().numpy(),
        batch_size,
        bucket_boundaries,
        padded_lengths,
    )
    dataset = _with_token_dropout(dataset, token_dropout, unk_id, first_regular_id, seed)
    return dataset.prefetch(tf.data.AUTOTUNE)
