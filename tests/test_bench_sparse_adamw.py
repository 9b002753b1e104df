"""`SparseAdamW` against Keras' AdamW on embedding and dense gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bench.sparse_adamw import SparseAdamW


def embedding_step(optimizer, table, ids, upstream, densify=False):
    """One step on `table` with the gradient of `sum(upstream * table[ids])`.

    `densify` hands the optimizer the same gradient as a dense tensor: the
    reference. (Keras' AdamW given the `tf.IndexedSlices` itself squares
    duplicate rows before summing them, in its norm clip and its second
    moment, so it is not one.)
    """
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(table, ids) * upstream)
    gradient = tape.gradient(loss, table)
    optimizer.apply([tf.convert_to_tensor(gradient) if densify else gradient], [table])
    return gradient


def make(kind, **kwargs):
    options = dict(learning_rate=0.01, weight_decay=0.0, clipnorm=1.0)
    options.update(kwargs)
    return (SparseAdamW if kind == "sparse" else keras.optimizers.AdamW)(**options)


def run_steps(kind, batches, rows=10, **kwargs):
    table = keras.Variable(np.random.default_rng(0).normal(size=(rows, 4)), dtype="float32")
    optimizer = make(kind, **kwargs)
    for ids, upstream in batches:
        gradient = embedding_step(
            optimizer, table, tf.constant(ids), tf.constant(upstream, "float32"), densify=kind == "dense"
        )
    return table.numpy(), optimizer, gradient


def batch(ids, seed):
    return ids, np.random.default_rng(seed).normal(size=(len(ids), 4))


def test_lookup_gradients_are_sparse():
    _, _, gradient = run_steps("sparse", [batch([1, 2], 0)])
    assert isinstance(gradient, tf.IndexedSlices)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_matches_adamw_when_every_step_uses_every_row(weight_decay):
    # Duplicates (row 3 twice) are summed; the norm clip (1.0) is active.
    batches = [batch([0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9], seed) for seed in range(3)]
    sparse, _, _ = run_steps("sparse", batches, weight_decay=weight_decay)
    dense, _, _ = run_steps("dense", batches, weight_decay=weight_decay)
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-6)


def test_matches_adamw_on_rows_with_no_history_and_no_decay():
    # Rows 5-9 are never used: their dense updates are 0 / (0 + epsilon).
    batches = [batch([0, 1, 1, 2], 0), batch([2, 0, 1], 1)]
    sparse, _, _ = run_steps("sparse", batches)
    dense, _, _ = run_steps("dense", batches)
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-6)


def test_rows_a_step_does_not_use_keep_weights_and_moments():
    before, optimizer, _ = run_steps("sparse", [batch([0, 1, 2], 0)], weight_decay=0.1)
    table = optimizer._trainable_variables[0]
    m, v = (optimizer._momentums[0].numpy(), optimizer._velocities[0].numpy())
    embedding_step(optimizer, table, tf.constant([0, 5]), tf.ones((2, 4)))
    after = table.numpy()
    for row in (1, 2, 3, 9):  # used before (1, 2) or never (3, 9); not now
        np.testing.assert_array_equal(after[row], before[row])
        np.testing.assert_array_equal(optimizer._momentums[0].numpy()[row], m[row])
        np.testing.assert_array_equal(optimizer._velocities[0].numpy()[row], v[row])
    assert not np.allclose(after[0], before[0]) and not np.allclose(after[5], before[5])
    # Dense AdamW moves row 1 on its momentum even though the step skips it.
    dense_before, dense_opt, _ = run_steps("dense", [batch([0, 1, 2], 0)], weight_decay=0.1)
    embedding_step(
        dense_opt, dense_opt._trainable_variables[0], tf.constant([0, 5]), tf.ones((2, 4)), densify=True
    )
    assert not np.allclose(dense_opt._trainable_variables[0].numpy()[1], dense_before[1])


def test_dense_gradients_take_adamw_path():
    def train(kind):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer=make(kind, weight_decay=0.05), loss="mse")
        x = np.random.default_rng(2).normal(size=(16, 3)).astype("float32")
        model.fit(x, x[:, :2] * 2, epochs=3, batch_size=4, verbose=0, shuffle=False)
        return [w.numpy() for w in model.weights]

    for sparse, dense in zip(train("sparse"), train("dense")):
        np.testing.assert_allclose(sparse, dense, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_model_with_embedding_trains_and_round_trips(tmp_path):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((5,), dtype="int32"),
        keras.layers.Embedding(50, 8),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(2),
    ])
    model.compile(
        optimizer=SparseAdamW(learning_rate=0.05, weight_decay=0.01, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(4)
    x = rng.integers(0, 50, size=(64, 5)).astype("int32")
    y = (x[:, 0] < 25).astype("int32")  # the first token decides the class
    history = model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    assert history.history["accuracy"][-1] > 0.9
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, SparseAdamW)
    assert loaded.optimizer.get_config()["weight_decay"] == pytest.approx(0.01)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_under_xla_it_is_adamw_on_the_dense_gradient():
    ids = tf.constant([0, 1, 1, 2])
    upstream = tf.constant(np.random.default_rng(5).normal(size=(4, 4)), "float32")

    def one_step(kind):
        table = keras.Variable(np.random.default_rng(0).normal(size=(10, 4)), dtype="float32")
        optimizer = make(kind, weight_decay=0.1)
        optimizer.build([table])

        @tf.function(jit_compile=True)
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.gather(table.value, ids) * upstream)
            gradient = tape.gradient(loss, table.value)
            if kind == "dense":
                gradient = tf.convert_to_tensor(gradient)
            optimizer.apply([gradient], [table])

        step()
        step()
        return table.numpy(), optimizer

    sparse, optimizer = one_step("sparse")
    dense, _ = one_step("dense")
    assert optimizer._sparse_keys == set()  # the row-wise path was not taken
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-6)


def test_global_clipnorm_takes_the_dense_path_with_decay():
    batches = [batch([0, 1, 1, 2], 0), batch([2, 0], 1)]
    options = dict(clipnorm=None, global_clipnorm=1.0, weight_decay=0.1)
    sparse, optimizer, _ = run_steps("sparse", batches, **options)
    dense, _, _ = run_steps("dense", batches, **options)
    assert optimizer._sparse_keys == set()
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-6)
