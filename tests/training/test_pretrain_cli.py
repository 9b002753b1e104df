"""`train.py --task pretrain`: a masked-LM run on unlabelled text, then fine-tuned with `--init`."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_encoder.errors import ConfigError
from keras_encoder.training import train as keras_encoder_train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "train.py")
CHARACTERS = list("这个手机屏幕电池很好不错喜欢差失望糟糕的了是我们他们今天明天")


def train(*flags):
    env = dict(os.environ, CI="true")
    return subprocess.run(
        [sys.executable, TRAIN, *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def scalar_tags(directory):
    tags = set()
    for name in os.listdir(directory):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
            tags |= {value.tag for value in event.summary.value}
    return tags


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny pretraining run on a text file: `(root, run_dir, result)`."""
    root = tmp_path_factory.mktemp("pretrain")
    rng = np.random.default_rng(0)
    lines = ["".join(rng.choice(CHARACTERS, size=rng.integers(4, 20))) for _ in range(300)]
    (root / "text.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = train(
        "--task", "pretrain", "--data", str(root / "text.txt"), "--logdir", str(root / "logs"),
        "--epochs", "2", "--layers", "1", "--hidden", "16", "--heads", "2", "--intermediate", "32",
        "--bigram-buckets", "64", "--batch-size", "32", "--validation-fraction", "0.1",
        "--test-fraction", "0.1", "--probe-sentences", "1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root, root / "logs" / "text", result


@pytest.mark.slow
def test_pretraining_writes_a_run_directory_scored_on_held_out_masks(pretrained):
    root, run, result = pretrained
    config = json.loads((run / "config.json").read_text())
    assert (config["task"], config["preset"], config["position"], config["mask_rate"]) == (
        "pretrain", "pretrain", "rotary", 0.15
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test_masked_lm_accuracy"] <= 1 and metrics["test_masked_lm_loss"] > 0
    assert metrics["num_test"] == 30 and metrics["epochs_run"] == 2
    assert "Test masked-LM accuracy" in result.stdout and f"--init {run}" in result.stdout
    # The masked LM is a starting point, not a service: no SavedModel.
    assert (run / "model.keras").exists() and not (run / "export").exists()
    assert metrics["export_bytes"] is None
    # TensorBoard curves of the masked-token loss and accuracy, train and held out.
    for split in ("train", "validation"):
        assert {"epoch_loss", "epoch_accuracy"} <= scalar_tags(run / split)


@pytest.mark.slow
def test_pretraining_with_span_masking_records_and_keeps_it(tmp_path):
    import keras

    from keras_encoder.data.masking import SpanMaskGenerator

    rng = np.random.default_rng(2)
    lines = ["".join(rng.choice(CHARACTERS, size=rng.integers(4, 20))) for _ in range(100)]
    (tmp_path / "text.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = train(
        "--task", "pretrain", "--data", str(tmp_path / "text.txt"), "--logdir", str(tmp_path / "logs"),
        "--mask-spans", "3", "--epochs", "1", "--layers", "1", "--hidden", "16", "--heads", "2",
        "--intermediate", "32", "--bigram-buckets", "0", "--batch-size", "32", "--max-length", "24",
        "--validation-fraction", "0.1", "--test-fraction", "0.1", "--probe-sentences", "1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "logs" / "text"
    assert json.loads((run / "config.json").read_text())["mask_spans"] == 3
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["mask_spans"], metrics["mask_rate"]) == (3, 0.15)
    assert 0 <= metrics["test_masked_lm_accuracy"] <= 1 and metrics["test_masked_lm_loss"] > 0
    model = keras.models.load_model(run / "model.keras")
    assert model.mask_spans == 3 and isinstance(model.mask_generator(), SpanMaskGenerator)


@pytest.mark.slow
def test_a_pretrained_run_starts_a_classifier_and_guards_its_held_out_text(pretrained, tmp_path):
    root, run, _ = pretrained
    rng = np.random.default_rng(1)
    rows = ["text,label"] + [
        f"{''.join(rng.choice(CHARACTERS, size=6))}{['很好', '很差'][i % 2]},{['pos', 'neg'][i % 2]}"
        for i in range(120)
    ]
    (tmp_path / "labelled.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = train(
        "--data", str(tmp_path / "labelled.csv"), "--init", str(run), "--logdir", str(tmp_path / "logs"),
        "--epochs", "1", "--batch-size", "16", "--probe-sentences", "1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(the checkpoint's)" in result.stdout
    fine_tuned = tmp_path / "logs" / "labelled"
    config = json.loads((fine_tuned / "config.json").read_text())
    # The pretrained architecture, token-pair table included, carries over.
    assert (config["layers"], config["hidden"], config["position"], config["bigram_buckets"]) == (
        1, 16, "rotary", 64
    )
    assert (fine_tuned / "vocab.txt").read_text() == (run / "vocab.txt").read_text()
    # Our own pretraining keeps the task preset's schedule, not a BERT checkpoint's.
    assert (config["learning_rate"], config["token_dropout"]) == (1e-3, 0.1)
    assert (fine_tuned / "export" / "saved_model.pb").exists()
    # LoRA from our own pretraining takes its larger learning rate.
    result = train(
        "--data", str(tmp_path / "labelled.csv"), "--init", str(run), "--logdir", str(tmp_path / "logs"),
        "--epochs", "1", "--batch-size", "16", "--probe-sentences", "1", "--lora-rank", "2",
        "--run-name", "lora",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "logs" / "lora" / "config.json").read_text())["learning_rate"] == 2e-3

    # A run pretrained on chinese-text at seed 1234 left out the reviews' held-out
    # text of that seed only: another seed is refused before any data is read.
    claimed = tmp_path / "claimed"
    shutil.copytree(run, claimed)
    config = json.loads((claimed / "config.json").read_text())
    (claimed / "config.json").write_text(json.dumps({**config, "data": "chinese-text", "seed": 1234}))
    with pytest.raises(ConfigError, match="would score text it was pretrained on"):
        keras_encoder_train({"data": "reviews", "init": str(claimed), "seed": 1,
                             "logdir": str(tmp_path / "refused")}, echo=lambda line: None)
    assert not (tmp_path / "refused").exists()
    # One pretrained with --held-out-seeds serves each seed named, and only those.
    from keras_encoder.training.run import check_lineage

    (claimed / "config.json").write_text(
        json.dumps({**config, "data": "chinese-text", "seed": 1234, "held_out_seeds": "1234,1"})
    )
    check_lineage(str(claimed), "", "reviews", 1, 0.1, 0.1)
    with pytest.raises(ConfigError, match="--seed 1234 --held-out-seeds 1 .*Fine-tune at --seed 1234 or 1 "):
        keras_encoder_train({"data": "reviews", "init": str(claimed), "seed": 2,
                             "logdir": str(tmp_path / "refused")}, echo=lambda line: None)
    (claimed / "config.json").write_text(json.dumps({**config, "data": "chinese-text", "seed": 1234}))
    # So is a run fine-tuned from it, as a start or as a teacher: the chain
    # of --init leads back to the pretraining.
    chained = tmp_path / "chained"
    shutil.copytree(fine_tuned, chained)
    config = json.loads((chained / "config.json").read_text())
    (chained / "config.json").write_text(json.dumps({**config, "init": str(claimed)}))
    for flag in ("init", "teacher"):
        with pytest.raises(ConfigError, match=f"--{flag} {chained} starts from {claimed}, which was pretrained"):
            keras_encoder_train({"data": "reviews", flag: str(chained), "seed": 2,
                                 "logdir": str(tmp_path / "refused")}, echo=lambda line: None)
    # An ancestor that is gone cannot be checked, so it is refused for the built-in tasks.
    (chained / "config.json").write_text(json.dumps({**config, "init": str(tmp_path / "gone")}))
    with pytest.raises(ConfigError, match="is not there any more"):
        keras_encoder_train({"data": "reviews", "init": str(chained), "logdir": str(tmp_path / "refused")},
                            echo=lambda line: None)
    assert not (tmp_path / "refused").exists()
