"""`SparseAdamW`: AdamW that updates only the embedding rows a batch uses.

A lever `bench/speed.py` measures (the "row-wise embedding updates" row);
training does not use it (RESULTS.md: within noise on speed, behind on
accuracy), so it lives here rather than in the package. Import this module
before loading a `.keras` file saved with it.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="bench")
class SparseAdamW(keras.optimizers.AdamW):
    """AdamW whose embedding tables are updated row by row ("lazy" Adam).

    TensorFlow hands over the gradient of an embedding lookup as
    `tf.IndexedSlices`, the rows the batch used. Keras' AdamW turns it into a
    dense tensor and then rewrites every row of the table, of its two moment
    tables and of its weight decay on every step: for the 32,768-row
    token-pair table that is most of the optimizer's work, although a batch
    uses a few thousand rows. Here those gradients stay sparse: clipping,
    weight decay and the Adam moments touch only the rows in the batch, as in
    LazyAdam. A row that a batch does not use keeps its weights and moments
    for that step (dense AdamW would still move it by its momentum and
    decay). Dense gradients take AdamW's own path unchanged.

    Duplicate rows in a gradient (a token used twice in a batch) are summed
    first, so a step that uses every row, or rows with no history, matches
    AdamW on the dense gradient exactly. (Keras' AdamW handed the
    `tf.IndexedSlices` itself squares each duplicate's piece before summing,
    in its norm clip and its second moment, so it does not.)

    Arguments are those of `keras.optimizers.AdamW`. Under XLA
    (`jit_compile=True`), with `amsgrad=True`, `global_clipnorm`,
    `clipvalue` or gradient accumulation it makes the gradients dense and is
    AdamW (`clipnorm` stays row-wise): the row-wise path needs
    `tf.unique`, whose data-dependent shape XLA compiles poorly (training
    ran 10x slower when we tried). TensorFlow backend only (other backends
    never produce `tf.IndexedSlices`, so it behaves as AdamW there).
    """

    def _backend_apply_gradients(self, grads, trainable_variables):
        # Variables with sparse gradients get their weight decay row by row
        # in update_step, so AdamW's dense decay pass skips them. Gradient
        # accumulation adds sparse gradients into dense accumulators.
        self._sparse_keys = (
            set()
            if self.gradient_accumulation_steps
            or self.amsgrad
            or self.global_clipnorm
            or self.clipvalue
            or _in_xla()
            else {
                self._var_key(variable)
                for gradient, variable in zip(grads, trainable_variables)
                if isinstance(gradient, tf.IndexedSlices)
            }
        )
        super()._backend_apply_gradients(grads, trainable_variables)

    def _use_weight_decay(self, variable):
        if self._var_key(variable) in getattr(self, "_sparse_keys", ()):
            return False
        return super()._use_weight_decay(variable)

    def _clip_gradients(self, grads):
        # Every gradient passes here before update_step: sum duplicate rows
        # once for the row-wise path, or make the gradient dense for AdamW's.
        row_wise = bool(getattr(self, "_sparse_keys", None))
        grads = [
            (_sum_duplicates(g) if row_wise else tf.convert_to_tensor(g))
            if isinstance(g, tf.IndexedSlices)
            else g
            for g in grads
        ]
        return super()._clip_gradients(grads)

    def _clip_by_norm(self, values, axes=None):
        if not isinstance(values, tf.IndexedSlices):
            return super()._clip_by_norm(values, axes)
        # Duplicates are summed: the slices' norm is the dense gradient's.
        clipped = super()._clip_by_norm(values.values, axes)
        return tf.IndexedSlices(clipped, values.indices, values.dense_shape)

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        rows = gradient.indices  # (R,) distinct row ids
        dtype = variable.dtype
        g = tf.cast(gradient.values, dtype)  # (R, D)
        lr = tf.cast(learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))

        if self.weight_decay and super()._use_weight_decay(variable):
            # AdamW decays before the Adam step, from the current weights.
            decay = tf.gather(variable, rows) * tf.cast(self.weight_decay, dtype) * lr
            self.assign_sub(variable, tf.IndexedSlices(decay, rows, gradient.dense_shape))

        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        m_rows = tf.gather(m.value, rows) * beta_1 + g * (1 - beta_1)
        v_rows = tf.gather(v.value, rows) * beta_2 + tf.square(g) * (1 - beta_2)
        self.assign(m, tf.IndexedSlices(m_rows, rows, gradient.dense_shape))
        self.assign(v, tf.IndexedSlices(v_rows, rows, gradient.dense_shape))
        update = m_rows * alpha / (tf.sqrt(v_rows) + tf.cast(self.epsilon, dtype))
        self.assign_sub(variable, tf.IndexedSlices(update, rows, gradient.dense_shape))


def _in_xla():
    """Whether the graph being traced will be compiled by XLA."""
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # private module moved: assume no XLA
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _sum_duplicates(slices):
    """The same `tf.IndexedSlices` with each row id once."""
    rows, positions = tf.unique(slices.indices)
    values = tf.math.unsorted_segment_sum(slices.values, positions, tf.shape(rows)[0])
    return tf.IndexedSlices(values, rows, slices.dense_shape)
