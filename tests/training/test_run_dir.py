"""Run directory rules, the training optimizer and what the tasks feed it."""

import json

import keras
import numpy as np
import pytest

from keras_encoder.errors import ConfigError
from keras_encoder.training.config import TrainConfig
from keras_encoder.training.optimizer import make_optimizer
from keras_encoder.training.run_dir import best_epoch, open_run_dir, read_history


def quiet(*_):
    pass


def test_new_resume_and_finished(tmp_path):
    config = TrainConfig(logdir=str(tmp_path), run_name="job")
    first, resumed = open_run_dir(config, echo=quiet)
    assert first.endswith("job") and not resumed
    assert json.loads((tmp_path / "job" / "config.json").read_text()) == config.to_dict()

    again, resumed = open_run_dir(config, echo=quiet)
    assert again == first and resumed

    other = TrainConfig(logdir=str(tmp_path), run_name="job", epochs=3)
    second, resumed = open_run_dir(other, echo=quiet)
    assert second.endswith("job-2") and not resumed

    (tmp_path / "job" / "metrics.json").write_text("{}")
    third, resumed = open_run_dir(config, echo=quiet)
    assert third.endswith("job-3") and not resumed


def test_a_run_from_before_a_new_field_resumes_when_it_used_its_default(tmp_path):
    config = TrainConfig(logdir=str(tmp_path), run_name="old")
    stored = {key: value for key, value in config.to_dict().items() if key != "mask_rate"}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(stored))
    run_dir, resumed = open_run_dir(config, echo=quiet)
    assert run_dir.endswith("old") and resumed
    # A value other than the default is another run.
    other = TrainConfig(logdir=str(tmp_path), run_name="old", task="pretrain", preset="pretrain",
                        mask_rate=0.3, token_dropout=0.0)
    run_dir, resumed = open_run_dir(other, echo=quiet)
    assert run_dir.endswith("old-2") and not resumed


def test_run_name_defaults_to_data_name():
    assert TrainConfig().run_name == "reviews"
    assert TrainConfig(data="/data/my.reviews.csv").run_name == "my.reviews"
    assert TrainConfig(data="/data/ner.conll/").run_name == "ner"
    with pytest.raises(ConfigError, match="--run-name must be a plain directory name. Received: '..'"):
        TrainConfig(run_name="..")


def test_history_keeps_the_last_row_of_a_redone_epoch(tmp_path):
    (tmp_path / "history.csv").write_text(
        "epoch,loss,val_loss\n0,1.0,0.9\n1,0.8,0.7\n1,0.75,0.65\n2,0.7\n"  # the last row cut short
    )
    history = read_history(str(tmp_path))
    assert [row["epoch"] for row in history] == [0, 1]
    assert history[1]["val_loss"] == 0.65
    assert read_history(str(tmp_path / "absent")) == []


def test_best_epoch_follows_the_monitor_direction():
    history = [
        {"epoch": 0, "val_loss": 0.5, "val_entity_f1": 0.7},
        {"epoch": 1, "val_loss": 0.4, "val_entity_f1": 0.8},
        {"epoch": 2, "val_loss": 0.6, "val_entity_f1": 0.9},
    ]
    assert best_epoch(history, ("val_loss", "min"))["epoch"] == 1
    assert best_epoch(history, ("val_entity_f1", "max"))["epoch"] == 2
    assert best_epoch(history, ("val_macro_f1", "max")) == {}
    assert best_epoch([], ("val_loss", "min")) == {}


def test_optimizer_is_adamw_with_warmup_and_cosine_decay():
    config = TrainConfig(epochs=2, learning_rate=1e-3, warmup_fraction=0.1)
    optimizer = make_optimizer(config, steps_per_epoch=50)
    assert isinstance(optimizer, keras.optimizers.AdamW)  # ours sums replicas before clipping
    assert (optimizer.weight_decay, optimizer.clipnorm) == (0.01, 1.0)
    assert not optimizer.use_ema
    rates = []
    for step in (0, 10, 55, 100):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    assert rates[0] == 0.0  # warm-up starts at zero ...
    assert rates[1] == pytest.approx(1e-3)  # ... peaks after a tenth of the 100 steps ...
    assert 0.0 < rates[2] < 1e-3 and rates[3] == pytest.approx(0.0, abs=1e-9)  # ... and decays to zero


def test_optimizer_decays_weights_but_not_biases_and_norms():
    optimizer = make_optimizer(TrainConfig(warmup_fraction=0.0, weight_decay=0.5), steps_per_epoch=10)
    names = ("kernel", "bias", "gamma", "beta")
    variables = [keras.Variable(np.ones(2, "float32"), name=name) for name in names]
    optimizer.apply([np.zeros(2, "float32")] * len(names), variables)  # no gradient: decay only
    values = {name: variable.numpy() for name, variable in zip(names, variables)}
    np.testing.assert_allclose(values["kernel"], 1 - 1e-3 * 0.5, rtol=1e-6)
    for name in ("bias", "gamma", "beta"):
        np.testing.assert_array_equal(values[name], 1.0)
