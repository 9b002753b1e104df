"""Masks for masked-LM pretraining: single tokens, or spans of consecutive tokens.

Shape legend: B batch, T tokens, P mask positions (`mask_selection_length`),
S span slots (T + 1: one per possible span, and one for the tokens that
belong to none).

`mask_generator` picks the generator a masked LM trains with:
keras-hub's `MaskedLMMaskGenerator` for single tokens, `SpanMaskGenerator`
for n-gram spans. Both take dense `(B, T)` token ids and return the same
dict of dense tensors, so the head and the loss do not know which ran.
"""

import math
import numbers

import keras_hub
import numpy as np
import tensorflow as tf

# MacBERT's n-gram lengths 1, 2, 3 and 4 and their probabilities. They fall
# linearly to zero at 5, so there is no longer span to add.
SPAN_PROBABILITIES = (0.4, 0.3, 0.2, 0.1)


def check_mask_spans(mask_spans):
    """Raise `ValueError` unless `mask_spans` is an integer from 1 to 4."""
    if (
        isinstance(mask_spans, bool)
        or not isinstance(mask_spans, numbers.Integral)
        or not 1 <= mask_spans <= len(SPAN_PROBABILITIES)
    ):
        raise ValueError(
            f"`mask_spans` must be an integer from 1 to {len(SPAN_PROBABILITIES)} (the longest "
            f"span of tokens masked together). Received: mask_spans={mask_spans!r}"
        )


def span_length_probabilities(mask_spans):
    """Probabilities of span lengths `1..mask_spans`: MacBERT's, truncated and renormalized."""
    check_mask_spans(mask_spans)
    kept = SPAN_PROBABILITIES[:mask_spans]
    return tuple(p / sum(kept) for p in kept)


def mask_selection_length(mask_rate, sequence_length, mask_spans=1):
    """Mask positions per sequence: the most `mask_generator` ever selects.

    Single tokens: `ceil(mask_rate * sequence_length)`, as many as
    keras-hub selects in a full sequence. Spans may end up to
    `mask_spans - 1` tokens past that (see `SpanMaskGenerator`).
    """
    check_mask_spans(mask_spans)
    return max(1, math.ceil(mask_rate * sequence_length)) + mask_spans - 1


def mask_generator(tokenizer, mask_rate, mask_spans=1):
    """The masks a masked LM trains on, for `tokenizer`'s token ids.

    Args:
        tokenizer: a `keras_encoder.text.Tokenizer` (its vocabulary size,
            sequence length and special-token ids).
        mask_rate: float. Share of the tokens selected.
        mask_spans: int. The longest span masked together; 1 (single
            tokens) is keras-hub's `MaskedLMMaskGenerator` as it is.

    Returns:
        A callable from dense `(B, T)` token ids to a dict of `token_ids`
        `(B, T)`, `mask_positions`, `mask_ids` and `mask_weights` `(B, P)`.
    """
    check_mask_spans(mask_spans)
    options = dict(
        vocabulary_size=tokenizer.vocabulary_size,
        mask_token_id=tokenizer.mask_id,
        mask_selection_length=mask_selection_length(mask_rate, tokenizer.sequence_length, mask_spans),
        unselectable_token_ids=[tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id],
    )
    if mask_spans == 1:
        return keras_hub.layers.MaskedLMMaskGenerator(mask_selection_rate=mask_rate, **options)
    return SpanMaskGenerator(mask_rate=mask_rate, mask_spans=mask_spans, **options)


class SpanMaskGenerator:
    """N-gram (span) masking for masked-LM pretraining, in TensorFlow ops.

    A masked character of a Chinese word is often given away by the rest
    of the word; masking spans of consecutive tokens hides whole words more
    often. Each sequence's selectable tokens (all but
    `unselectable_token_ids`: padding, `[CLS]`, `[SEP]`) are cut, in
    order, into spans of 1 to `mask_spans` tokens, with MacBERT's
    probabilities 0.4, 0.3, 0.2, 0.1 (truncated and renormalized for
    `mask_spans` < 4). A span never crosses an unselectable token: it is
    cut there, as it is at the end of the sequence, so spans near the ends
    are a little shorter than drawn. The spans are then taken in random
    order until `k = ceil(mask_rate * n)` of the `n` selectable tokens
    (keras-hub's count) would be passed; the span that would pass `k` is
    taken with the probability that makes the expected number of selected
    tokens exactly `k`. So a sequence's share of masked tokens is
    `mask_rate` on average (not exactly, as with single tokens), spans do
    not overlap (adjacent ones may touch), and at most `k + mask_spans - 1`
    tokens are selected; spans that would pass `mask_selection_length` are
    left out. With `mask_spans=1` this is keras-hub's selection: exactly `k`
    random tokens.

    Every selected span is treated as one unit, as in MacBERT: all of its
    tokens become `[MASK]` (`mask_token_rate`), all become random tokens
    (`random_token_rate`; each its own, never an unselectable id), or all
    stay as they were.

    Randomness comes from TensorFlow's stateful random ops, as in
    keras-hub's generator: it runs eagerly or inside `tf.data.Dataset.map`
    (with `num_parallel_calls`), and a global seed (`tf.random.set_seed`)
    repeats its draws in one process.

    Args:
        vocabulary_size: int. Size of the vocabulary (random tokens are drawn below it).
        mask_rate: float. Share of the selectable tokens selected, in (0, 1).
        mask_token_id: int. The id of `[MASK]`.
        mask_selection_length: int. `P`: mask positions per sequence; the
            outputs are padded to it.
        unselectable_token_ids: list of ints. Ids never selected. Defaults to `[0]`.
        mask_spans: int. The longest span, 1 to 4. Defaults to `4`.
        mask_token_rate: float. Share of selected spans made `[MASK]`. Defaults to `0.8`.
        random_token_rate: float. Share of selected spans made random
            tokens; the rest stay unchanged. Defaults to `0.1`.
        seed: int or `None`. Op seed of the random draws. Defaults to `None`.

    Call arguments:
        token_ids: int tensor `(B, T)` or `(T,)`, dense, padded with an
            unselectable id.

    Returns:
        A dict, as `keras_hub.layers.MaskedLMMaskGenerator` returns with
        `mask_selection_length` set: `token_ids` (the input's shape and
        dtype, masked), and `(B, P)` `mask_positions` (int32, ascending),
        `mask_ids` (the original tokens there) and `mask_weights` (float32,
        1 for a selected token, 0 for padding slots).

    Example:

    >>> generator = SpanMaskGenerator(
    ...     vocabulary_size=100, mask_rate=0.15, mask_token_id=4,
    ...     mask_selection_length=20, unselectable_token_ids=[0, 2, 3])
    >>> masked = generator([[2, *range(10, 40), 3, 0, 0]])
    >>> sorted(masked)
    ['mask_ids', 'mask_positions', 'mask_weights', 'token_ids']

    References:
     - [Cui et al., 2020](https://arxiv.org/abs/2004.13922) (MacBERT)
     - [Joshi et al., 2020](https://arxiv.org/abs/1907.10529) (SpanBERT)
    """

    def __init__(
        self,
        vocabulary_size,
        mask_rate,
        mask_token_id,
        mask_selection_length,
        unselectable_token_ids=(0,),
        mask_spans=4,
        mask_token_rate=0.8,
        random_token_rate=0.1,
        seed=None,
    ):
        for name, value in (("vocabulary_size", vocabulary_size), ("mask_selection_length", mask_selection_length)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        if not 0 < mask_rate < 1:
            raise ValueError(f"`mask_rate` must be in (0, 1). Received: mask_rate={mask_rate!r}")
        if not 0 <= mask_token_id < vocabulary_size:
            raise ValueError(
                f"`mask_token_id` must be in [0, vocabulary_size). Received: mask_token_id={mask_token_id!r}, "
                f"vocabulary_size={vocabulary_size}"
            )
        if not (0 <= mask_token_rate and 0 <= random_token_rate and mask_token_rate + random_token_rate <= 1):
            raise ValueError(
                "`mask_token_rate` and `random_token_rate` must be non-negative and add up to at most 1. "
                f"Received: mask_token_rate={mask_token_rate!r}, random_token_rate={random_token_rate!r}"
            )
        self.span_probabilities = span_length_probabilities(mask_spans)
        self.vocabulary_size = vocabulary_size
        self.mask_rate = mask_rate
        self.mask_token_id = mask_token_id
        self.mask_selection_length = mask_selection_length
        self.unselectable_token_ids = list(unselectable_token_ids)
        self.mask_spans = mask_spans
        self.mask_token_rate = mask_token_rate
        self.random_token_rate = random_token_rate
        self.seed = seed
        excluded = sorted({i for i in self.unselectable_token_ids if 0 <= i < vocabulary_size})
        if len(excluded) == vocabulary_size:
            raise ValueError("Every token id is unselectable: there is no random token to draw.")
        self._excluded_ids = excluded

    def __call__(self, token_ids):
        token_ids = tf.convert_to_tensor(token_ids)
        unbatched = token_ids.shape.rank == 1
        if unbatched:
            token_ids = token_ids[None]
        masked = self._mask(token_ids, self._draws(token_ids))
        if unbatched:
            masked = {key: value[0] for key, value in masked.items()}
        return masked

    def spans(self, token_ids):
        """Which span each token was selected in: int32 `(B, T)`, -1 where not selected.

        The numbers are a sequence's span slots (equal numbers are one
        span); the draws are those `__call__` would make from the same
        random state.
        """
        token_ids = tf.convert_to_tensor(token_ids)
        span, selected = self._select(token_ids, self._draws(token_ids))
        return tf.where(selected, span, -1)

    def _draws(self, token_ids):
        # One op draws everything, so that a `seed` gives independent streams:
        # span lengths, span order, the last span's coin, treatment, random id.
        shape = tf.shape(token_ids)
        return tf.random.uniform([shape[0], shape[1] + 1, 5], seed=self.seed)  # (B, S, 5)

    def _select(self, token_ids, draws):
        """`(span, selected)`: each token's span slot `(B, T)` and whether it is selected."""
        batch, length = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
        selectable = tf.ones_like(token_ids, tf.bool)
        for unselectable in self.unselectable_token_ids:
            selectable &= tf.not_equal(token_ids, unselectable)
        ones = tf.cast(selectable, tf.int32)  # (B, T)

        # Tile each sequence's selectable tokens, in order, with spans of drawn lengths.
        bounds = tf.constant(np.cumsum(self.span_probabilities)[:-1], tf.float32)  # (K - 1,)
        drawn = 1 + tf.reduce_sum(tf.cast(draws[:, :, 0, None] >= bounds, tf.int32), -1)  # (B, S)
        ends = tf.cumsum(drawn[:, :length], axis=1)  # (B, T) ascending
        rank = tf.cumsum(ones, axis=1) - 1  # (B, T) index among the selectable tokens
        tile = tf.searchsorted(ends, rank, side="right")  # (B, T)
        # A span starts at a new tile, and after an unselectable token.
        previous_tile = tf.pad(tile[:, :-1], [[0, 0], [1, 0]], constant_values=-1)
        previous_selectable = tf.pad(selectable[:, :-1], [[0, 0], [1, 0]])
        starts = selectable & (~previous_selectable | tf.not_equal(tile, previous_tile))
        span = tf.cumsum(tf.cast(starts, tf.int32), axis=1) - 1  # (B, T)
        span = tf.where(selectable, span, length)  # slot T: tokens in no span

        segments = span + tf.range(batch)[:, None] * (length + 1)
        span_length = tf.math.unsorted_segment_sum(ones, segments, batch * (length + 1))
        span_length = tf.reshape(span_length, [batch, length + 1])  # (B, S)

        # Spans in random order, taken while the running total is under k;
        # the span that passes k is taken with probability (k - before) / length.
        keys = tf.where(span_length > 0, draws[:, :, 1], 2.0)  # empty slots last
        order = tf.argsort(keys, axis=1, stable=True)  # (B, S)
        ordered_length = tf.gather(span_length, order, batch_dims=1)  # (B, S)
        total = tf.cumsum(ordered_length, axis=1)
        before = total - ordered_length
        # keras-hub's count, in float32 as it computes it.
        budget = tf.math.ceil(tf.cast(tf.reduce_sum(ones, 1), tf.float32) * tf.constant(self.mask_rate, tf.float32))
        budget = tf.minimum(tf.cast(budget, tf.int32), self.mask_selection_length)[:, None]  # (B, 1)
        coin = draws[:, :, 2] * tf.cast(ordered_length, tf.float32)
        taken = (before < budget) & (coin < tf.cast(budget - before, tf.float32))
        taken &= total <= self.mask_selection_length
        taken = tf.gather(taken, tf.argsort(order, axis=1), batch_dims=1)  # (B, S) by slot
        selected = selectable & tf.gather(taken, span, batch_dims=1)  # (B, T)
        return span, selected

    def _mask(self, token_ids, draws):
        span, selected = self._select(token_ids, draws)
        batch, length = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
        treatment = tf.gather(draws[:, :, 3], span, batch_dims=1)  # (B, T), one draw per span
        to_mask = selected & (treatment < self.mask_token_rate)
        to_random = selected & ~to_mask & (treatment < self.mask_token_rate + self.random_token_rate)
        # A random id among the selectable ones: draw below their count, then
        # step over each unselectable id at or below the draw.
        count = self.vocabulary_size - len(self._excluded_ids)
        random_ids = tf.minimum(tf.cast(draws[:, :length, 4] * count, tf.int32), count - 1)  # (B, T)
        for excluded in self._excluded_ids:
            random_ids += tf.cast(random_ids >= excluded, tf.int32)
        masked_ids = tf.where(to_random, tf.cast(random_ids, token_ids.dtype), token_ids)
        masked_ids = tf.where(to_mask, tf.constant(self.mask_token_id, token_ids.dtype), masked_ids)

        where = tf.where(selected)  # (N, 2) row-major: ascending positions per row
        rows = where[:, 0]
        shape = tf.stack([tf.cast(batch, tf.int64), self.mask_selection_length])

        def dense(values):  # (N,) -> (B, P)
            return tf.RaggedTensor.from_value_rowids(values, rows, nrows=tf.cast(batch, tf.int64)).to_tensor(
                shape=shape
            )

        mask_positions = dense(tf.cast(where[:, 1], tf.int32))
        mask_ids = dense(tf.gather_nd(token_ids, where))
        mask_weights = dense(tf.ones_like(rows, tf.float32))
        static = [token_ids.shape[0], self.mask_selection_length]
        for tensor in (mask_positions, mask_ids, mask_weights):
            tensor.set_shape(static)
        masked_ids.set_shape(token_ids.shape)
        return {
            "token_ids": masked_ids,
            "mask_positions": mask_positions,
            "mask_ids": mask_ids,
            "mask_weights": mask_weights,
        }
