"""`train.py --init`: fine-tune a BERT-layout checkpoint or one of our runs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_encoder import save_pretrained
from keras_encoder.models import EncoderConfig, build_encoder
from keras_encoder.text import Tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "train.py")
WORDS = {"pos": ["很好", "不错", "喜欢"], "neg": ["很差", "失望", "糟糕"]}


def write_corpus(path, rows=120):
    rng = np.random.default_rng(0)
    lines = ["text,label"]
    for index in range(rows):
        label = ["neg", "pos"][index % 2]
        filler = "".join(rng.choice(list("这个手机屏幕电池"), size=rng.integers(2, 8)))
        lines.append(f"{filler}{rng.choice(WORDS[label])}{index},{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [line.split(",")[0] for line in lines[1:]]


def write_checkpoint(path, texts):
    """A tiny random BERT-layout checkpoint whose vocabulary covers `texts`."""
    tokenizer = Tokenizer.learn(texts, vocabulary_size=200, sequence_length=32)
    backbone = build_encoder(EncoderConfig(
        vocabulary_size=tokenizer.vocabulary_size, max_length=64, hidden_dim=16, num_heads=2,
        num_layers=1, intermediate_dim=32, position="learned", embedding_norm=True,
        layer_norm_epsilon=1e-12, segment_vocabulary_size=2, pooler=True, pooling="cls",
    ))
    save_pretrained(backbone, tokenizer, path)


def train(*flags):
    env = dict(os.environ, CI="true")
    return subprocess.run(
        [sys.executable, TRAIN, *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_init_fine_tunes_a_checkpoint_and_then_a_run(tmp_path):
    texts = write_corpus(tmp_path / "reviews.csv")
    write_checkpoint(tmp_path / "bert", texts)
    common = ["--data", str(tmp_path / "reviews.csv"), "--logdir", str(tmp_path / "logs"),
              "--epochs", "1", "--batch-size", "16", "--probe-sentences", "1"]
    result = train(*common, "--init", str(tmp_path / "bert"), "--run-name", "first")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "logs" / "first"
    config = json.loads((run / "config.json").read_text())
    # The checkpoint's architecture and the pretrained start's values ran.
    assert (config["layers"], config["hidden"], config["heads"]) == (1, 16, 2)
    assert config["learning_rate"] == 5e-5 and config["bigram_buckets"] == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["init"] == str(tmp_path / "bert")
    assert (run / "export" / "saved_model.pb").exists()
    # A finished run is a starting point too.
    again = train(*common, "--init", str(run), "--run-name", "second")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "logs" / "second" / "metrics.json").read_text())["init"] == str(run)


def test_a_flag_that_contradicts_the_checkpoint_is_refused(tmp_path):
    texts = write_corpus(tmp_path / "reviews.csv")
    write_checkpoint(tmp_path / "bert", texts)
    result = train("--data", str(tmp_path / "reviews.csv"), "--init", str(tmp_path / "bert"),
                   "--layers", "3", "--logdir", str(tmp_path / "logs"))
    assert result.returncode == 2
    assert "--layers 3 contradicts --init" in result.stderr
    assert "Traceback" not in result.stderr


def test_init_that_is_no_checkpoint_is_named(tmp_path):
    write_corpus(tmp_path / "reviews.csv")
    result = train("--data", str(tmp_path / "reviews.csv"), "--init", str(tmp_path), "--logdir",
                   str(tmp_path / "logs"))
    assert result.returncode == 2
    assert f"--init {tmp_path}: neither a BERT checkpoint" in result.stderr
