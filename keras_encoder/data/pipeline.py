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


def _batched(dataset, lengths, batch_size, bucket_boundaries, pad_to=None):
    """Pad into batches, grouped by length; the batch count is declared.

    Knowing the count up front gives Keras a progress bar with an ETA and
    lets `fit` restart the dataset each epoch without `steps_per_epoch`.

    `pad_to` (the sequence length): pad every batch up to the smallest
    bucket bound (or `pad_to`) that holds it, instead of to its longest
    sequence, so that batches come in a few fixed shapes, which is what
    XLA compilation (`jit_compile`) needs to compile each shape once.
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
    if pad_to:
        dataset = dataset.map(
            _pad_to_bound(bucket_boundaries, pad_to), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.apply(tf.data.experimental.assert_cardinality(batches))


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
    """The fixed padded lengths `pad_to` gives: bucket bounds below the length, and it."""
    return tuple(sorted({b for b in bucket_boundaries if b < sequence_length} | {sequence_length}))


def _pad_to_bound(bucket_boundaries, sequence_length):
    bounds = tf.constant(padded_length_bounds(bucket_boundaries, sequence_length), tf.int32)

    def pad(*batch):
        length = tf.shape(tf.nest.flatten(batch)[0])[1]
        index = tf.minimum(
            tf.searchsorted(bounds, length[tf.newaxis], side="left")[0], tf.size(bounds) - 1
        )
        extra = tf.maximum(bounds[index] - length, 0)

        def pad_one(tensor):
            if tensor.shape.rank is None or tensor.shape.rank < 2:
                return tensor  # per-example values, such as class labels
            paddings = [[0, 0], [0, extra]] + [[0, 0]] * (tensor.shape.rank - 2)
            return tf.pad(tensor, paddings)

        return tf.nest.map_structure(pad_one, batch if len(batch) > 1 else batch[0])

    return pad


def masked_lm_dataset(
    token_ids,
    tokenizer,
    batch_size,
    shuffle=False,
    seed=None,
    mask_rate=0.15,
    bucket_boundaries=DEFAULT_BUCKET_BOUNDARIES,
    pad_to=None,
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
        pad_to,
    )
    return dataset.map(mask, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def classification_dataset(
    token_ids,
    labels,
    batch_size,
    shuffle=False,
    seed=None,
    bucket_boundaries=DEFAULT_BUCKET_BOUNDARIES,
    pad_to=None,
    token_dropout=0.0,
    unk_id=UNK_ID,
    first_regular_id=FIRST_REGULAR_ID,
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
        pad_to: int or `None`. The sequence length: pad each batch up to
            its bucket's bound (or this length) instead of its longest
            sequence, for a few fixed shapes under `jit_compile`. `None`
            pads to the longest sequence of the batch.
        token_dropout: float in `[0, 1)`. For training batches (callers
            pass 0 for evaluation): the probability that each token with
            id >= `first_regular_id` is replaced by `unk_id`, drawn anew each
            epoch, so the model cannot lean on any single token (word
            dropout). Defaults to `0.0`.
        unk_id: int. The `[UNK]` id. Defaults to `Tokenizer.unk_id`.
        first_regular_id: int. Ids below it (padding and the special
            tokens) are never dropped. Defaults to
            `Tokenizer.first_regular_id`.
    """
    labels = tf.constant(np.asarray(labels, dtype="int32"))
    dataset = _batched(
        _sliced(token_ids, labels, shuffle, seed),
        token_ids.row_lengths().numpy(),
        batch_size,
        bucket_boundaries,
        pad_to,
    )
    dataset = _with_token_dropout(dataset, token_dropout, unk_id, first_regular_id, seed)
    return dataset.prefetch(tf.data.AUTOTUNE)


# === Token tagging ===
#
# A sentence's units (characters or words) are split into word-pieces; the
# first piece of each unit carries the unit's tag, the other pieces are not
# scored. A sentence longer than the model's window is cut into several
# sequences (`chunk_pieces`), each `[CLS] pieces [SEP]`, so every unit gets
# a prediction however long its sentence; `tag_logits` puts the chunks'
# predictions back together. Training, evaluation and the exported
# SavedModel all cut sentences the same way.


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


def _with_special(tokenizer, chunks, first=None, last=None):
    # [CLS] chunk [SEP] (or the given fill values around a label chunk).
    rows = chunks.nrows()
    first = tokenizer.cls_id if first is None else first
    last = tokenizer.sep_id if last is None else last
    before = tf.fill([rows, 1], tf.cast(first, chunks.dtype))
    after = tf.fill([rows, 1], tf.cast(last, chunks.dtype))
    return tf.concat([before, chunks, after], axis=1)


def tag_logits(model, tokenizer, pieces):
    """Per-unit tag logits from a token classifier, however long the sentence.

    Args:
        model: a `build_token_classifier` model.
        tokenizer: the tokenizer it was trained with; its
            `sequence_length` sets the chunk size.
        pieces: int32 `tf.RaggedTensor` `(B, U, P)`.

    Returns:
        float32 `tf.RaggedTensor` `(B, U, num_tags)`: the logits at each
        unit's first piece.
    """
    chunks, _ = chunk_pieces(pieces, tokenizer.sequence_length - 2)
    token_ids = _with_special(tokenizer, chunks).to_tensor(default_value=tokenizer.pad_id)
    logits = tf.cast(model(token_ids, training=False), tf.float32)  # (C, T, K)
    # Drop [CLS], [SEP] and padding; what is left is in sentence order.
    piece_logits = tf.RaggedTensor.from_tensor(logits[:, 1:], lengths=chunks.row_lengths()).values
    unit_logits = tf.boolean_mask(piece_logits, first_piece_flags(pieces).flat_values)
    return tf.RaggedTensor.from_row_splits(unit_logits, pieces.row_splits)


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
        _with_special(tokenizer, chunks),
        _with_special(tokenizer, label_chunks, 0, 0),
        _with_special(tokenizer, weight_chunks, 0.0, 0.0),
    )


def tagging_dataset(
    sequences,
    batch_size,
    shuffle=False,
    seed=None,
    bucket_boundaries=DEFAULT_BUCKET_BOUNDARIES,
    pad_to=None,
    token_dropout=0.0,
    unk_id=UNK_ID,
    first_regular_id=FIRST_REGULAR_ID,
):
    """Batches of `(token_ids (B, T), labels (B, T), weights (B, T))`.

    Args:
        sequences: the triple from `tagging_sequences`.
        batch_size, shuffle, seed, bucket_boundaries, pad_to, token_dropout,
            unk_id, first_regular_id: as in `classification_dataset`; a
            dropped token keeps its tag, so it must be tagged from context.
    """
    dataset = _batched(
        _sliced_rows(list(sequences), shuffle, seed),
        sequences[0].row_lengths().numpy(),
        batch_size,
        bucket_boundaries,
        pad_to,
    )
    dataset = _with_token_dropout(dataset, token_dropout, unk_id, first_regular_id, seed)
    return dataset.prefetch(tf.data.AUTOTUNE)


def bio_transitions(tag_names):
    """Which BIO tag may follow which: `(allowed (K, K) bool, start (K,) bool)`.

    `I-X` may only follow `B-X` or `I-X`, and may not start a sentence;
    every other move is allowed.
    """
    names = list(tag_names)
    allowed = np.ones((len(names), len(names)), dtype=bool)
    start = np.ones(len(names), dtype=bool)
    for current, tag in enumerate(names):
        if tag.startswith("I-"):
            start[current] = False
            for previous, before in enumerate(names):
                allowed[previous, current] = before in (f"B-{tag[2:]}", tag)
    return allowed, start


def constrained_decode(logits, tag_names, crf=None):
    """Most probable tag sequence that is valid BIO (Viterbi), per sentence.

    Per-unit argmax can produce sequences such as `B-LOC I-PER I-LOC`,
    which decode into fragments; this picks, for each sentence, the valid
    sequence with the highest sum of per-unit log-probabilities. Where the
    argmax sequence is valid, it is the result.

    Args:
        logits: float `tf.RaggedTensor` `(B, U, K)` from `tag_logits`.
        tag_names: list of K BIO tags, in tag-id order.
        crf: optional `keras_encoder.layers.ChainCRF` the model was trained
            with: its learned transition, start and end scores are added to
            the raw logits (and BIO still forbids what it forbids).

    Returns:
        int32 `tf.RaggedTensor` `(B, U)` of tag ids.
    """
    allowed, start = bio_transitions(tag_names)
    transitions = tf.constant(np.where(allowed, 0.0, -1e9), tf.float32)  # (K, K)
    start_scores = tf.constant(np.where(start, 0.0, -1e9), tf.float32)  # (K,)
    if crf is None:
        return viterbi_decode(logits, transitions, start_scores, normalize=True)
    learned, learned_start, learned_end = crf.decode_scores()
    return viterbi_decode(logits, transitions + learned, start_scores + learned_start, learned_end)


def decode_tags(logits, tag_names, bio=False, crf=None):
    """Tag ids `(B, U)` from `tag_logits`: per-unit argmax, BIO-constrained
    Viterbi (`bio`), and/or the model's `ChainCRF` scores (`crf`)."""
    if bio:
        return constrained_decode(logits, tag_names, crf)
    if crf is not None:
        return viterbi_decode(logits, *crf.decode_scores())
    return logits.with_values(tf.argmax(logits.values, axis=-1, output_type=tf.int32))


def viterbi_decode(logits, transitions, start_scores=None, end_scores=None, normalize=False):
    """Highest-scoring tag sequence per sentence under transition scores.

    A sequence's score is the sum of its per-unit scores (the logits, or
    their log-softmax with `normalize`), of `transitions[previous, next]`
    for each consecutive pair, `start_scores[first]` and `end_scores[last]`.

    Args:
        logits: float `tf.RaggedTensor` `(B, U, K)`.
        transitions: float `(K, K)`.
        start_scores, end_scores: float `(K,)`, or None for zeros.
        normalize: bool. Score units by log-softmax of the logits.

    Returns:
        int32 `tf.RaggedTensor` `(B, U)` of tag ids.
    """
    transitions = tf.cast(transitions, tf.float32)
    num_tags = int(transitions.shape[-1])
    start_scores = tf.zeros([num_tags]) if start_scores is None else tf.cast(start_scores, tf.float32)
    end_scores = tf.zeros([num_tags]) if end_scores is None else tf.cast(end_scores, tf.float32)
    lengths = logits.row_lengths()
    emissions = tf.cast(logits.to_tensor(), tf.float32)  # (B, T, K)
    if normalize:
        emissions = tf.nn.log_softmax(emissions, axis=-1)
    # At least one step, so empty batches and sentences need no special case.
    emissions = tf.pad(emissions, [[0, 0], [0, tf.maximum(1 - tf.shape(emissions)[1], 0)], [0, 0]])
    steps = tf.shape(emissions)[1]
    live = tf.sequence_mask(lengths, steps)  # (B, T)
    identity = tf.broadcast_to(tf.range(num_tags), tf.shape(emissions[:, 0]))

    def forward(score, inputs):
        emission, alive = inputs  # (B, K), (B,)
        candidates = score[:, :, None] + transitions[None]  # (B, K prev, K)
        best_previous = tf.argmax(candidates, axis=1, output_type=tf.int32)
        updated = tf.reduce_max(candidates, axis=1) + emission
        # Past a sentence's end the score and the path stay as they are.
        return (
            tf.where(alive[:, None], updated, score),
            tf.where(alive[:, None], best_previous, identity),
        )

    first = emissions[:, 0] + start_scores
    time_major = (tf.transpose(emissions[:, 1:], [1, 0, 2]), tf.transpose(live[:, 1:]))
    step_scores, backpointers = tf.scan(
        lambda carry, inputs: forward(carry[0], inputs), time_major, initializer=(first, identity)
    )  # (T-1, B, K) each
    scores = tf.concat([first[None], step_scores], axis=0)[-1] + end_scores
    last = tf.argmax(scores, axis=-1, output_type=tf.int32)  # (B,)

    def backward(tag, pointers):
        return tf.gather(pointers, tag, batch_dims=1)

    earlier = tf.scan(backward, backpointers, initializer=last, reverse=True)  # (T-1, B)
    path = tf.concat([tf.transpose(earlier), last[:, None]], axis=1)  # (B, T)
    return tf.RaggedTensor.from_tensor(path, lengths=lengths)
