"""`train.py --adalora-rank`: flags, conflicts, and one tiny end-to-end run."""

import json

import numpy as np
import pytest

from keras_encoder.errors import ConfigError
from keras_encoder.training.config import TrainConfig
from keras_encoder.training.presets import adapter_defaults
from tests.training.test_init import train, write_checkpoint, write_corpus


def test_the_target_rank_defaults_to_half_and_the_lora_rate_applies():
    assert adapter_defaults({"adalora_rank": 12}) == {
        "learning_rate": 5e-4, "ema": 0.0, "adalora_target_rank": 6, "lora_alpha": 96.0
    }
    assert adapter_defaults({"adalora_rank": 1})["adalora_target_rank"] == 1
    config = TrainConfig.from_preset("classify", **{**adapter_defaults({"adalora_rank": 8}), "adalora_rank": 8})
    assert (config.adalora_rank, config.adalora_target_rank, config.learning_rate) == (8, 4, 5e-4)


@pytest.mark.parametrize("values, message", [
    ({"adalora_rank": 4, "adalora_target_rank": 2, "lora_rank": 4, "ema": 0.0},
     r"--adalora-rank and --lora-rank are two ways .* \(received --adalora-rank 4 --lora-rank 4\)"),
    ({"adalora_rank": 4, "adalora_target_rank": 2, "prefix_length": 8, "ema": 0.0},
     r"--adalora-rank and --prefix-length are two ways"),
    ({"adalora_rank": 4, "adalora_target_rank": 2, "ema": 0.99},
     r"--adalora-rank does not combine with a weight average; use --ema 0 \(received --ema 0.99\)"),
    ({"adalora_rank": 4, "adalora_target_rank": 5, "ema": 0.0},
     r"--adalora-target-rank must be from 1 to --adalora-rank \(4\); leave it out for half of it. Received: 5"),
    ({"adalora_target_rank": 2}, r"--adalora-target-rank applies with --adalora-rank only"),
    ({"adalora_rank": -1}, r"--adalora-rank must be a non-negative integer. Received: -1"),
    ({"task": "pretrain", "preset": "pretrain", "adalora_rank": 4, "adalora_target_rank": 2, "ema": 0.0},
     r"--adalora-rank does not apply to pretraining"),
])
def test_bad_adalora_flags_name_the_flag(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**values)


@pytest.mark.slow
def test_adalora_trains_prunes_saves_adapters_alone_and_exports_merged(tmp_path):
    import zipfile

    from keras_encoder.adapters import load_adalora
    from keras_encoder.models import EncoderClassifier

    texts = write_corpus(tmp_path / "reviews.csv")
    write_checkpoint(tmp_path / "bert", texts)
    result = train(
        "--data", str(tmp_path / "reviews.csv"), "--logdir", str(tmp_path / "logs"),
        "--init", str(tmp_path / "bert"), "--adalora-rank", "4", "--epochs", "2", "--patience", "0",
        "--batch-size", "16", "--probe-sentences", "1", "--run-name", "adalora",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "AdaLoRA rank 4, pruned to 2 on average, on query, value of 1 blocks" in result.stdout
    run = tmp_path / "logs" / "adalora"
    config = json.loads((run / "config.json").read_text())
    assert (config["adalora_rank"], config["adalora_target_rank"], config["learning_rate"]) == (4, 2, 5e-4)
    assert config["lora_alpha"] == 32.0  # scale 8
    metrics = json.loads((run / "metrics.json").read_text())
    # Query and value (P 16 x 4, lambda 4, Q 4 x 16, each) and the head train.
    assert metrics["trainable_parameters"] == 2 * (16 * 4 + 4 + 4 * 16) + (16 * 2 + 2)
    assert metrics["parameters"] > 10 * metrics["trainable_parameters"]
    assert set(metrics["adalora_kept_ranks"]) == {
        "backbone/block_0/attention/query", "backbone/block_0/attention/value"
    }
    assert metrics["adalora_kept_rank"] == sum(metrics["adalora_kept_ranks"].values()) == 2 * 2
    assert metrics["adalora_schedule"]["total_steps"] > 0
    with zipfile.ZipFile(run / "model.keras") as archive:
        assert "adalora" not in archive.read("config.json").decode()
    assert (run / "export" / "saved_model.pb").exists()

    # The adapter file alone, on the base checkpoint, gives the trained model.
    trained = EncoderClassifier.from_preset(str(run))
    base = EncoderClassifier.from_preset(
        str(tmp_path / "bert"), num_classes=2, label_names=trained.label_names,
        sequence_length=trained.preprocessor.tokenizer.sequence_length,
    )
    assert sum(load_adalora(base, run / "adapters.safetensors")["kept_ranks"].values()) == 4
    sample = texts[:16]
    np.testing.assert_allclose(
        base.predict(sample)["probabilities"], trained.predict(sample)["probabilities"], atol=1e-5
    )
