"""Run directory rules: resume the same config, never touch a finished run."""

import json

import keras
import pytest

from keras_encoder.errors import ConfigError
from keras_encoder.optimizers import SparseAdamW
from keras_encoder.training.config import TrainConfig
from keras_encoder.training.run import _best_epoch, _open_run_dir, _optimizer, _read_history


def test_new_resume_and_finished(tmp_path):
    config = TrainConfig(logdir=str(tmp_path), run_name="job")
    first, resumed = _open_run_dir(config, echo=lambda *_: None)
    assert first.endswith("job") and not resumed
    assert json.loads((tmp_path / "job" / "config.json").read_text()) == config.to_dict()

    again, resumed = _open_run_dir(config, echo=lambda *_: None)
    assert again == first and resumed

    other = TrainConfig(logdir=str(tmp_path), run_name="job", epochs=3)
    second, resumed = _open_run_dir(other, echo=lambda *_: None)
    assert second.endswith("job-2") and not resumed

    (tmp_path / "job" / "metrics.json").write_text("{}")
    third, resumed = _open_run_dir(config, echo=lambda *_: None)
    assert third.endswith("job-3") and not resumed


def test_auto_settings_resolve_per_task():
    config = TrainConfig()
    classify, tag = config.encoder_config(100, "classify"), config.encoder_config(100, "tag")
    assert (classify.position, classify.bigram_buckets) == ("sinusoidal", 32768)
    assert (tag.position, tag.bigram_buckets) == ("rotary", 32768)
    assert TrainConfig(bigram_buckets=0).encoder_config(100, "classify").bigram_buckets == 0
    assert TrainConfig(bigram_buckets=64).encoder_config(100, "tag").bigram_buckets == 64


def test_run_name_defaults_to_data_name():
    assert TrainConfig().resolved_run_name == "reviews"
    assert TrainConfig(data="/data/my.reviews.csv").resolved_run_name == "my.reviews"


def test_history_keeps_the_last_row_of_a_redone_epoch(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n0,1.0,0.9\n1,0.8,0.7\n1,0.75,0.65\n")
    history = _read_history(str(tmp_path))
    assert [row["epoch"] for row in history] == [0, 1]
    assert history[1]["val_loss"] == 0.65


def test_best_epoch_follows_the_monitor_direction():
    history = [
        {"epoch": 0, "val_loss": 0.5, "val_entity_f1": 0.7},
        {"epoch": 1, "val_loss": 0.4, "val_entity_f1": 0.8},
        {"epoch": 2, "val_loss": 0.6, "val_entity_f1": 0.9},
    ]
    assert _best_epoch(history, ("val_loss", "min"))["epoch"] == 1
    assert _best_epoch(history, ("val_entity_f1", "max"))["epoch"] == 2
    assert _best_epoch(history, ("val_macro_f1", "max")) == {}
    assert _best_epoch([], ("val_loss", "min")) == {}


def test_optimizer_choice():
    adamw = _optimizer(TrainConfig(), steps_per_epoch=10, epochs=2)
    sparse = _optimizer(TrainConfig(optimizer="sparse_adamw"), steps_per_epoch=10, epochs=2)
    assert type(adamw) is keras.optimizers.AdamW
    assert isinstance(sparse, SparseAdamW)
    for optimizer in (adamw, sparse):
        assert (optimizer.weight_decay, optimizer.clipnorm) == (0.01, 1.0)
    with pytest.raises(ConfigError, match="--optimizer must be one of adamw, sparse_adamw. Received: 'sgd'"):
        TrainConfig(optimizer="sgd")


def test_token_dropout_reaches_training_batches_only():
    from keras_encoder.text import Tokenizer
    from keras_encoder.training.tasks import _token_dropout

    tokenizer = Tokenizer.learn(["好的 很好", "差 不好"] * 10, vocabulary_size=50, sequence_length=8)
    config = TrainConfig(token_dropout=0.2)
    assert _token_dropout(config, tokenizer, "train") == {
        "token_dropout": 0.2, "unk_id": tokenizer.unk_id, "first_regular_id": tokenizer.first_regular_id,
    }
    for split in ("validation", "test"):
        assert _token_dropout(config, tokenizer, split)["token_dropout"] == 0.0


def test_window_features_are_for_tagging_only():
    with pytest.raises(ConfigError, match=r"--window-features applies to tagging \(--task tag\) only"):
        TrainConfig(window_features=1024)
    assert TrainConfig(window_features=1024, data="peoples-daily-ner").window_features == 1024
    with pytest.raises(ConfigError, match=r"--window-features must be -1 \(auto\), 0 \(none\) or a positive integer. Received: -2"):
        TrainConfig(window_features=-2, data="peoples-daily-ner")
    assert TrainConfig(data="peoples-daily-ner").resolved_window_features(7) == 1048576
    assert TrainConfig(data="peoples-daily-pos").resolved_window_features(44) == 262144
    assert TrainConfig(data="peoples-daily-pos", window_features=2048).resolved_window_features(44) == 2048
    assert TrainConfig().resolved_window_features() == 0
    # A small training set caps the auto table: a power of two >= 14 per token.
    ner = TrainConfig(data="peoples-daily-ner")
    assert ner.resolved_window_features(7, num_tokens=10) == 4096
    assert ner.resolved_window_features(7, num_tokens=1000) == 16384
    assert ner.resolved_window_features(7, num_tokens=10**6) == 1048576
    assert TrainConfig(data="peoples-daily-pos").resolved_window_features(44, num_tokens=10**6) == 262144
    assert TrainConfig(data="peoples-daily-ner", window_features=2**20).resolved_window_features(7, num_tokens=10) == 2**20
    with pytest.raises(ConfigError, match="--window-scale has no effect with --window-features 0"):
        TrainConfig(data="peoples-daily-ner", window_features=0, window_scale=3)
    with pytest.raises(ConfigError, match=r"--window-scale applies to tagging \(--task tag\) only"):
        TrainConfig(window_scale=10.0)
    for bad in (0, -2.0, float("inf"), True, "10"):
        with pytest.raises(ConfigError, match=r"--window-scale must be -1 \(auto\) or a positive finite number"):
            TrainConfig(window_scale=bad, data="peoples-daily-ner")
    assert TrainConfig(data="peoples-daily-ner").resolved_window_scale() == 10
    assert TrainConfig(data="peoples-daily-ner", window_scale=3).resolved_window_scale() == 3.0


def test_ngram_features_are_for_classification_only():
    with pytest.raises(ConfigError, match="--ngram-features applies to classification only"):
        TrainConfig(ngram_features=1024, data="peoples-daily-ner")
    assert TrainConfig(ngram_features=1024).ngram_features == 1024
    with pytest.raises(ConfigError, match="--ngram-features must be -1 .auto., 0 .none. or a positive integer. Received: True"):
        TrainConfig(ngram_features=True)


def test_crf_tagging_has_no_per_token_argmax_accuracy_to_monitor():
    from keras_encoder.training.tasks import TaggingTask

    task = TaggingTask.__new__(TaggingTask)  # monitor() needs only the config and the scheme
    task.bio = True
    task.config = TrainConfig(data="peoples-daily-ner")
    with pytest.raises(ConfigError, match="--monitor val_accuracy is not computed for BIO tagging"):
        task.monitor("val_accuracy")
    assert task.monitor("auto") == ("val_entity_f1", "max")
    task.config = TrainConfig(data="peoples-daily-ner", crf=False)
    assert task.monitor("val_accuracy") == ("val_accuracy", "max")
