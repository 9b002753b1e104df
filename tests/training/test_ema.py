"""`--ema`: averaged weights for validation, checkpoints and export; raw weights for training and resume."""

import json
import os

import keras
import numpy as np
import pytest

from keras_encoder.errors import ConfigError
from keras_encoder.training.callbacks import RawWeightsBack
from keras_encoder.training.config import TrainConfig
from keras_encoder.training.optimizer import make_optimizer
from keras_encoder.training.presets import PRESETS, fitted_to_data


def test_ema_flag_sets_up_the_optimizer_average():
    assert not make_optimizer(TrainConfig(), steps_per_epoch=10).use_ema  # classify: off
    averaged = make_optimizer(TrainConfig(ema=0.99), steps_per_epoch=10)
    assert averaged.use_ema and averaged.ema_momentum == 0.99
    tagging = make_optimizer(TrainConfig.from_preset("tag-bio"), steps_per_epoch=560)
    assert tagging.use_ema and tagging.ema_momentum == 0.998
    # A short run averages over about one epoch's steps (10 here), not 500.
    short = TrainConfig.from_preset("tag-bio", **fitted_to_data(PRESETS["tag-bio"], num_train_examples=640))
    assert short.ema == pytest.approx(0.9)
    assert make_optimizer(short, steps_per_epoch=10).ema_momentum == pytest.approx(0.9)
    for bad in (1.0, -0.5, True):
        with pytest.raises(ConfigError, match=r"--ema must be in \[0, 1\). Received: " + repr(bad)):
            TrainConfig(ema=bad)


class _Record(keras.callbacks.Callback):
    def __init__(self, when, log):
        super().__init__()
        self.when, self.log = when, log

    def _record(self, epoch):
        optimizer = self.model.optimizer
        self.log.append(
            (
                self.when,
                epoch,
                [w.numpy().copy() for w in self.model.trainable_weights],
                [v.numpy().copy() for v in getattr(optimizer, "_model_variables_moving_average", [])],
            )
        )

    def on_epoch_begin(self, epoch, logs=None):
        if self.when == "begin":
            self._record(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if self.when != "begin":
            self._record(epoch)


def test_average_is_in_the_model_between_the_swaps_only():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 1))).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.9), loss="mse")
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    log = []
    model.fit(
        x, y, batch_size=8, epochs=3, verbose=0,
        callbacks=[_Record("begin", log), swap, _Record("ema", log), RawWeightsBack(swap), _Record("raw", log)],
    )
    by = {(when, epoch): (weights, averages) for when, epoch, weights, averages in log}
    for epoch in range(2):
        ema_weights, raw_in_average = by[("ema", epoch)]
        raw_weights, average = by[("raw", epoch)]
        assert not np.allclose(ema_weights[0], raw_weights[0])  # the two differ
        for a, b in zip(ema_weights, average):
            np.testing.assert_array_equal(a, b)  # the average went back to the optimizer
        for a, b in zip(raw_in_average, raw_weights):
            np.testing.assert_array_equal(a, b)  # and the raw weights to the model
        # The next epoch trains on from the raw weights.
        next_weights, _ = by[("begin", epoch + 1)]
        for a, b in zip(raw_weights, next_weights):
            np.testing.assert_array_equal(a, b)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def _fit_with_backup(backup_dir, epochs, interrupt=False, raw_weights_back=True):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 1))).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.9), loss="mse")
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    callbacks = [
        swap,
        *([RawWeightsBack(swap)] if raw_weights_back else []),
        keras.callbacks.BackupAndRestore(str(backup_dir)),
        *([_Interrupt()] if interrupt else []),
    ]
    model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)
    return model


@pytest.mark.parametrize("raw_weights_back", [True, False])
def test_a_resumed_run_continues_as_an_uninterrupted_one(tmp_path, raw_weights_back):
    whole = _fit_with_backup(tmp_path / "whole", epochs=4, raw_weights_back=raw_weights_back)
    with pytest.raises(KeyboardInterrupt):
        _fit_with_backup(tmp_path / "resumed", epochs=4, interrupt=True, raw_weights_back=raw_weights_back)
    resumed = _fit_with_backup(tmp_path / "resumed", epochs=4, raw_weights_back=raw_weights_back)
    same = all(
        np.allclose(a, b, atol=1e-6) for a, b in zip(whole.get_weights(), resumed.get_weights())
    )
    # Without RawWeightsBack the backup holds the averaged weights, and the
    # resumed run trains on from them: another run than the uninterrupted one.
    assert same == raw_weights_back


@pytest.mark.slow
def test_checkpoint_holds_the_weights_that_were_validated(tmp_path):
    from keras_encoder.training.run import run
    from tests.training.test_train_cli import write_corpus

    data = tmp_path / "tiny.csv"
    write_corpus(data)
    config = TrainConfig(
        data=str(data), logdir=str(tmp_path), run_name="ema", epochs=3, layers=1, hidden=16,
        heads=2, intermediate=32, batch_size=16, max_length=32, vocabulary_size=200,
        probe_sentences=1, ema=0.9, patience=0,
    )
    metrics = run(config, echo=lambda *_: None)
    run_dir = tmp_path / "ema"
    model = keras.models.load_model(run_dir / "checkpoints" / "best.keras")
    from keras_encoder.text import Tokenizer
    from keras_encoder.training.tasks import load_task

    task = load_task(config.data, config.task, echo=lambda *_: None)
    task.prepare(Tokenizer.load(str(run_dir)), config)
    loss = model.evaluate(task.datasets["validation"], verbose=0, return_dict=True)["loss"]
    # The checkpoint is the epoch with the lowest logged validation loss,
    # which SwapEMAWeights computed on the averaged weights.
    assert loss == pytest.approx(metrics["best_val_loss"], rel=1e-4)
    with open(run_dir / "config.json", encoding="utf-8") as handle:
        assert json.load(handle)["ema"] == 0.9
    assert not os.path.exists(run_dir / "backup")
