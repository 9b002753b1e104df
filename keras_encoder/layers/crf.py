"""Linear-chain conditional random field over per-token tag scores.

Shape legend: B batch, T tokens, K tags.
"""

import keras
import numpy as np
from keras import ops

from keras_encoder.layers.layer_utils import check_positive_int

# Score of a transition the tag scheme forbids: low enough that no path
# takes one, finite so that log-sum-exp over a row stays finite.
FORBIDDEN = -1e4


@keras.saving.register_keras_serializable(package="keras_encoder")
class ChainCRF(keras.layers.Layer):
    """Learned tag-transition scores for joint tagging (a linear-chain CRF).

    A per-token head scores each tag at each position on its own; a CRF
    also scores each pair of consecutive tags, so training maximises the
    probability of the whole gold sequence and decoding (Viterbi) finds the
    best sequence rather than the best tag at each position. This layer
    holds the `(K, K)` transition, `(K,)` start and `(K,)` end scores and
    passes the emission scores (the tag logits) through unchanged, so a
    model's output, its Keras mask and everything that reads tag logits
    stay as they were. `EncoderTagger` trains it with `log_likelihood` (in
    its `compute_loss`) and decodes with `decode_scores()` (Viterbi).

    Positions whose weight is 0 (padding, `[CLS]`/`[SEP]`, the second and
    later word pieces of a word) are skipped: the chain links the labelled
    positions only, in order.

    Args:
        num_tags: int. Number of tags `K`.
        allowed: optional `(K, K)` nested list of bools, `allowed[i][j]`
            whether tag `j` may follow tag `i` (e.g. from
            `keras_encoder.models.tagger.bio_transitions`). A forbidden move
            gets a fixed score of -1e4 in training and decoding; the
            default allows every move.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        inputs: float tensor `(B, T, K)` of emission scores (tag logits).

    Example:
    >>> crf = ChainCRF(3)
    >>> logits = keras.random.normal((2, 5, 3))
    >>> tuple(crf(logits).shape)
    (2, 5, 3)
    >>> tuple(crf.log_likelihood(logits, keras.ops.zeros((2, 5), "int32")).shape)
    (2,)
    """

    def __init__(self, num_tags, allowed=None, **kwargs):
        check_positive_int("num_tags", num_tags)
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=bool)
            if allowed.shape != (num_tags, num_tags):
                raise ValueError(
                    f"`allowed` must have shape ({num_tags}, {num_tags}) for num_tags={num_tags}. "
                    f"Received: shape {allowed.shape}"
                )
        super().__init__(**kwargs)
        self.num_tags = num_tags
        self.allowed = allowed
        self._forbidden = (
            np.zeros((num_tags, num_tags), "float32")
            if allowed is None
            else np.where(allowed, 0.0, FORBIDDEN).astype("float32")
        )
        self.supports_masking = True

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.num_tags:
            raise ValueError(
                f"ChainCRF with num_tags={self.num_tags} got inputs with {input_shape[-1]} "
                f"scores per position. Received: input_shape={input_shape}"
            )
        self.transitions = self.add_weight(
            shape=(self.num_tags, self.num_tags), initializer="zeros", name="transitions"
        )
        self.start_scores = self.add_weight(shape=(self.num_tags,), initializer="zeros", name="start_scores")
        self.end_scores = self.add_weight(shape=(self.num_tags,), initializer="zeros", name="end_scores")

    def call(self, inputs):
        return ops.copy(inputs)

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def decode_scores(self):
        """`(transitions (K, K), start (K,), end (K,))`, forbidden moves included."""
        transitions = ops.cast(self.transitions, "float32") + ops.convert_to_tensor(self._forbidden)
        return transitions, ops.cast(self.start_scores, "float32"), ops.cast(self.end_scores, "float32")

    def log_likelihood(self, emissions, tags, weights=None):
        """Log-probability of each tag sequence, `(B,)`.

        Args:
            emissions: float `(B, T, K)` tag scores.
            tags: int `(B, T)` gold tags (any value where the weight is 0).
            weights: `(B, T)`; positions with weight 0 are left out of the
                chain. Defaults to every position. A sequence with no
                weighted position scores 0.
        """
        emissions = ops.cast(emissions, "float32")
        tags = ops.cast(tags, "int32")
        batch = ops.shape(emissions)[0]
        live = (
            ops.ones(ops.shape(tags), dtype="bool") if weights is None else ops.not_equal(weights, 0)
        )
        transitions, start, end = self.decode_scores()
        flat_transitions = ops.reshape(transitions, (-1,))
        k = self.num_tags

        def step(carry, inputs):
            alpha, gold, previous, started = carry  # (B, K), (B,), (B,), (B,)
            emission = inputs[:, :k]  # (B, K)
            # Clipped: skipped positions may hold any label (e.g. -1).
            tag = ops.clip(ops.cast(inputs[:, k], "int32"), 0, k - 1)  # (B,)
            alive = ops.greater(inputs[:, k + 1], 0.5)  # (B,)
            chained = ops.logsumexp(alpha[:, :, None] + transitions[None], axis=1) + emission
            first = start[None] + emission
            new_alpha = ops.where(started[:, None], chained, first)
            # A one-hot sum, not take_along_axis: that broadcasts to a shape
            # known only at run time, whose gradient XLA cannot compile.
            emitted = ops.sum(emission * ops.one_hot(tag, k, dtype=emission.dtype), axis=1)
            moved = ops.where(started, ops.take(flat_transitions, previous * k + tag), ops.take(start, tag))
            alpha = ops.where(alive[:, None], new_alpha, alpha)
            gold = gold + ops.where(alive, emitted + moved, 0.0)
            previous = ops.where(alive, tag, previous)
            started = ops.logical_or(started, alive)
            return alpha, gold, previous, started

        initial = (
            ops.zeros((batch, k), "float32"),
            ops.zeros((batch,), "float32"),
            ops.zeros((batch,), "int32"),
            ops.zeros((batch,), "bool"),
        )
        # One stacked input per step (emissions, tag, weight): Keras'
        # TensorFlow scan cannot check several inputs of unknown length.
        stacked = ops.concatenate(
            [emissions, ops.cast(tags, "float32")[..., None], ops.cast(live, "float32")[..., None]],
            axis=-1,
        )  # (B, T, K + 2)
        alpha, gold, previous, started = _final_carry(step, initial, ops.transpose(stacked, (1, 0, 2)))
        log_partition = ops.logsumexp(alpha + end[None], axis=1)
        gold = gold + ops.take(end, previous)
        return ops.where(started, gold - log_partition, 0.0)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_tags": self.num_tags,
                "allowed": None if self.allowed is None else self.allowed.tolist(),
            }
        )
        return config


def _final_carry(step, initial, steps):
    """The carry after `carry = step(carry, steps[t])` for every t in order.

    On TensorFlow this is a `tf.while_loop` that declares its trip count,
    which XLA needs to differentiate a loop (`--jit-compile`); Keras'
    `ops.scan` does not declare it, and it also stacks every step's output,
    which the forward algorithm does not need. Other backends use `ops.scan`.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        count = tf.shape(steps)[0]
        _, carry = tf.while_loop(
            lambda index, _: index < count,
            lambda index, carry: (index + 1, step(carry, steps[index])),
            (tf.constant(0), initial),
            maximum_iterations=count,
        )
        return carry

    def scan_step(carry, inputs):
        carry = step(carry, inputs)
        return carry, carry  # Keras' scan wants each step's output shaped like the carry

    carry, _ = ops.scan(scan_step, initial, steps)
    return carry
