"""`--ema`: averaged weights for validation, checkpoints and export; raw weights for training and resume."""

import json
import os

import keras
import numpy as np
import pytest

from keras_encoder.training.config import TrainConfig
from keras_encoder.training.run import _optimizer, _RawWeightsBack


def test_ema_flag_sets_up_the_optimizer_average():
    plain = _optimizer(TrainConfig(ema=0.99), steps_per_epoch=10, epochs=2)
    averaged = _optimizer(TrainConfig(ema=0.99), steps_per_epoch=10, epochs=2, ema=True)
    assert not plain.use_ema  # pretraining stages never average
    assert averaged.use_ema and averaged.ema_momentum == 0.99
    assert not _optimizer(TrainConfig(), steps_per_epoch=10, epochs=2, ema=True).use_ema
    tagging = _optimizer(TrainConfig(data="peoples-daily-ner"), steps_per_epoch=560, epochs=2, ema=True)
    assert tagging.use_ema and tagging.ema_momentum == 0.998  # auto: on for tagging
    short = _optimizer(TrainConfig(data="peoples-daily-ner"), steps_per_epoch=10, epochs=2, ema=True)
    assert short.use_ema and short.ema_momentum == pytest.approx(0.9)  # about one epoch's steps
    assert TrainConfig(data="peoples-daily-ner", ema=0).resolved_ema() == 0.0
    from keras_encoder.errors import ConfigError

    for bad in (1.0, -0.5, True):
        with pytest.raises(ConfigError, match=r"--ema must be -1 \(auto\) or in \[0, 1\). Received: " + repr(bad)):
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
        callbacks=[_Record("begin", log), swap, _Record("ema", log), _RawWeightsBack(swap), _Record("raw", log)],
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
    from keras_encoder.training.tasks import make_task

    task = make_task(config, echo=lambda *_: None)
    task.prepare(Tokenizer.load(str(run_dir)))
    loss = model.evaluate(task.datasets["validation"], verbose=0, return_dict=True)["loss"]
    # The checkpoint is the epoch with the lowest logged validation loss,
    # which SwapEMAWeights computed on the averaged weights.
    assert loss == pytest.approx(metrics["best_val_loss"], rel=1e-4)
    with open(run_dir / "config.json", encoding="utf-8") as handle:
        assert json.load(handle)["ema"] == 0.9
    assert not os.path.exists(run_dir / "backup")
