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
def test_init_fine_tunes_a_checkpoint_and_then_a_run(tmp_path, serve_in_fresh_python):
    from keras_encoder.models import EncoderClassifier

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
    # A finished run is a starting point too; here for prefix tuning.
    again = train(*common, "--init", str(run), "--run-name", "second", "--prefix-length", "3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Prefix of 3 key/value vectors per head in 1 blocks: 130 of" in again.stdout
    second = tmp_path / "logs" / "second"
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["init"] == str(run) and metrics["prefix_length"] == 3
    # The prefixes (2 x 3 x 16 in one block) and the head (16 x 2 + 2) train.
    assert metrics["trainable_parameters"] == 2 * 3 * 16 + 16 * 2 + 2
    assert json.loads((second / "config.json").read_text())["learning_rate"] == 5e-3
    # The export attends over the prefixes as the trained model does.
    texts = texts[:8] + ["", "很好"]
    served = serve_in_fresh_python(second / "export", [texts])[0]
    expected = EncoderClassifier.from_preset(str(second)).predict(texts)
    np.testing.assert_allclose(served["probabilities"], expected["probabilities"], atol=1e-5)


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


def test_init_from_a_prefix_run_or_a_compressed_model_is_refused(tmp_path):
    write_corpus(tmp_path / "reviews.csv")
    prefixed = tmp_path / "prefixed"
    prefixed.mkdir()
    (prefixed / "model.keras").write_text("")
    (prefixed / "vocab.txt").write_text("[PAD]\n")
    (prefixed / "config.json").write_text(json.dumps({"prefix_length": 16, "init": "base/bert"}))
    pruned = tmp_path / "pruned"
    pruned.mkdir()
    (pruned / "model.keras").write_text("")
    (pruned / "config.json").write_text("{}")
    for path, message in (
        (prefixed, f"--init {prefixed} was trained with --prefix-length 16: its prefixes belong to that run; "
                   "start from the checkpoint it started from (base/bert)."),
        (pruned, f"--init {pruned}: a model.keras without vocab.txt, as the compress commands write"),
    ):
        result = train("--data", str(tmp_path / "reviews.csv"), "--init", str(path), "--logdir", str(tmp_path / "logs"))
        assert result.returncode == 2
        assert message in result.stderr
        assert not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_lora_trains_adapters_saves_them_alone_and_exports_merged(tmp_path):
    import zipfile

    from keras_encoder.adapters import load_adapters
    from keras_encoder.models import EncoderClassifier

    texts = write_corpus(tmp_path / "reviews.csv")
    write_checkpoint(tmp_path / "bert", texts)
    result = train(
        "--data", str(tmp_path / "reviews.csv"), "--logdir", str(tmp_path / "logs"),
        "--init", str(tmp_path / "bert"), "--lora-rank", "2", "--epochs", "2", "--patience", "0",
        "--batch-size", "16", "--probe-sentences", "1", "--run-name", "lora",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LoRA rank 2 on query, value of 1 blocks" in result.stdout
    run = tmp_path / "logs" / "lora"
    config = json.loads((run / "config.json").read_text())
    assert config["lora_rank"] == 2 and config["learning_rate"] == 5e-4
    metrics = json.loads((run / "metrics.json").read_text())
    # Adapters (query and value: 16 x 2 heads x rank 2 + 2 x 8, each) and the head train.
    assert metrics["trainable_parameters"] == 2 * (16 * 2 * 2 + 2 * 8) + (16 * 2 + 2)
    assert metrics["parameters"] > 20 * metrics["trainable_parameters"]
    # model.keras and the export hold plain merged kernels, no adapters.
    with zipfile.ZipFile(run / "model.keras") as archive:
        assert "lora" not in archive.read("config.json").decode()
    assert (run / "export" / "saved_model.pb").exists()

    # The adapter file alone, on the base checkpoint, gives the trained model.
    trained = EncoderClassifier.from_preset(str(run))
    base = EncoderClassifier.from_preset(
        str(tmp_path / "bert"), num_classes=2, label_names=trained.label_names,
        sequence_length=trained.preprocessor.tokenizer.sequence_length,
    )
    load_adapters(base, run / "adapters.safetensors")
    sample = texts[:16]
    np.testing.assert_allclose(
        base.predict(sample)["probabilities"], trained.predict(sample)["probabilities"], atol=1e-5
    )
    assert (run / "adapters.safetensors").stat().st_size < (run / "model.keras").stat().st_size / 5
