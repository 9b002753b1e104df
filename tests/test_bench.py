"""The scripts in `bench/` run against the current API and write what they print (tiny settings)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = "keras_encoder as `train.py` runs it"


def run_script(name, *flags, timeout=1200):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / name), *flags], capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_speed_benchmark_writes_its_section(tmp_path):
    output, raw = tmp_path / "BENCHMARKS.md", tmp_path / "speed.json"
    output.write_text("# Benchmarks\n\n## Training and serving speed\n\nold\n\n## Other\n\nkept\n")
    result = run_script(
        "speed.py",
        "--rounds", "1", "--steps", "2", "--warmup", "1", "--epochs", "0",
        "--rows", "hub,ours", "--serving", "hub,flat",
        "--latency-samples", "5", "--serving-texts", "64", "--vocabulary-size", "1000",
        "--write", str(output), "--json", str(raw),
    )
    report = output.read_text()
    # Its own section replaced, the others left alone.
    assert "\nold\n" not in report and report.endswith("## Other\n\nkept\n")
    section = report[report.index("## Training and serving speed") : report.index("## Other")]
    assert section.strip() in result.stdout
    numbers = json.loads(raw.read_text())
    training = numbers["training"]
    assert list(training) == ["hub", "ours"] and len(numbers["peak"]) == 1
    for rounds in training.values():
        assert len(rounds) == 1  # one fresh process per row and round
        row = rounds[0]
        assert row["real_tokens_per_s"] > 0 and row["steps"] == 2
        assert row["padded_tokens_per_s"] >= row["real_tokens_per_s"]
    # keras-hub's 2 measured batches are 64 x 128 tokens each; train.py's
    # are padded to their longest only.
    hub, ours = training["hub"][0], training["ours"][0]
    assert hub["padded_tokens_per_s"] * hub["seconds"] == pytest.approx(2 * 64 * 128)
    assert ours["padded_tokens_per_s"] * ours["seconds"] < 2 * 64 * 128
    assert hub["padding_share"] > ours["padding_share"]
    assert "| keras-hub, padded to 128 (anchor) | " in section and "| 1.00x |" in section
    assert f"| {OURS} | " in section
    assert f"{ours['real_tokens_per_s'] / hub['real_tokens_per_s']:.2f}x" in section
    serving = numbers["serving"]
    assert list(serving) == ["hub", "flat"]
    for rounds in serving.values():
        row = rounds[0]
        assert row["sequences_per_s"] > 0 and 0 < row["p50_ms"] <= row["p95_ms"] and row["first_pass_s"] > 0
    assert "| keras_encoder, one batch padded to its longest, no XLA |" in section
    assert "| length bucketing (train) |" not in section  # its baseline row did not run
    assert "--rows hub,ours" in section  # the command that made it


def fake_training(tokens, padding=0.2):
    return {
        "real_tokens_per_s": tokens, "padded_tokens_per_s": tokens / (1 - padding), "padding_share": padding,
        "flops_per_s": tokens * 1e4, "note": "n", "steps": 2, "seconds": 1.0, "warmup_seconds": 1.0,
    }


def fake_serving(speed, p50):
    return {"sequences_per_s": speed, "p50_ms": p50, "p95_ms": 2 * p50, "first_pass_s": 1.0}


def test_speed_report_quotes_medians_and_per_round_ratios():
    from bench import speed

    results = {
        "command": "python bench/speed.py", "date": "2026-12-06", "machine": "m", "versions": "v",
        "rounds": 2, "steps": 2, "warmup": 1, "latency_samples": 5, "peak": [1e9, 2e9],
        "meta": {"num_train": 10, "median_tokens": 5, "share_over": 0.1, "texts": 64,
                 "serving_padding": {"hub": 0.6, "ours": 0.2}},
        # A slow spell halves every row in round 2.
        "training": {
            "hub": [fake_training(100), fake_training(50)],
            "padded": [fake_training(150), fake_training(40)],
            "ours": [fake_training(300), fake_training(100)],
        },
        "serving": {"hub": [fake_serving(100, 10), fake_serving(50, 20)],
                    "ours": [fake_serving(400, 4), fake_serving(100, 10)]},
    }
    section = speed.render(results)
    # Medians of each row; ratios are the median of per-round ratios (3.0
    # and 2.0), not a ratio of medians (200 / 75).
    assert f"| {OURS} | 200 (100-300) | 250 | 20% | " in section
    assert "| 2.50x (2.00-3.00) |" in section
    assert "| length bucketing (train) | 2.25x (2.00-2.50) real tokens/s | yes (default) |" in section
    assert "| keras_encoder, `EncoderClassifier.export` (5 length groups, XLA) | 250 (100-400) | 20% | 7.00 ms" in section
    assert "| 3.00x (2.00-4.00) | 2.25x (2.00-2.50) |" in section  # throughput, p50 speed-up
    assert "| keras-hub, padded to 128 (anchor) | 75 (50-100) | 60% |" in section
    # Per-round FLOP shares of each round's own peak: 1e6/1e9 and 5e5/2e9.
    assert "| 100.0% |" not in section and "| 0.1% |" in section


def test_bucket_bounds_and_serving_padding_are_counted_as_the_exports_run():
    import tensorflow as tf

    from bench import speed_worker
    from keras_encoder.data.pipeline import DEFAULT_BUCKET_BOUNDARIES, padded_length_bounds
    from keras_encoder.text import Tokenizer

    words = "the a cat sat on mat and then ran far away from home".split()
    texts = [" ".join(words[i % len(words)] for i in range(n)) for n in (3, 9, 20, 35, 50, 70, 90, 130) * 8]
    tokenizer = Tokenizer.learn(texts, vocabulary_size=100, sequence_length=128)
    lengths = tokenizer.tokenize(tf.constant(texts)).row_lengths().numpy()
    shares = speed_worker.serving_padding(tokenizer, texts)
    # keras-hub's export computes on 128 tokens a row, whatever the batch.
    assert shares["hub"] == pytest.approx(1 - lengths.sum() / (128 * len(texts)))
    # Grouping rows by length pads less than one batch padded to its longest.
    assert shares["hub"] >= shares["flat"] > shares["grouped"] > 0
    def dense_batches():
        for n in (3, 17, 40, 100):
            yield np.full((2, n), 5, "int32"), np.zeros(2, "int32")

    spec = (tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32))
    batches = tf.data.Dataset.from_generator(dense_batches, output_signature=spec)
    bounds = padded_length_bounds(DEFAULT_BUCKET_BOUNDARIES, 128)
    widths = [int(x.shape[1]) for x, _ in speed_worker.padded_to_bucket_bounds(batches)]
    assert widths == [16, 32, 48, 128] and set(widths) <= set(bounds)


def test_speed_benchmark_refuses_unknown_rows():
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "speed.py"), "--rows", "hub,nope"], capture_output=True, text=True
    )
    assert result.returncode != 0 and "--rows: unknown row(s) nope" in result.stderr


@pytest.mark.slow
def test_step_profile_times_every_part_and_writes_its_section(tmp_path):
    output, raw = tmp_path / "BENCHMARKS.md", tmp_path / "profile.json"
    output.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    result = run_script(
        "profile_step.py", "--steps", "3", "--repeats", "1", "--vocabulary-size", "1000",
        "--write", str(output), "--json", str(raw),
    )
    numbers = json.loads(raw.read_text())
    parts = numbers["parts"]
    # Timed on their own, so each is a positive time; the others are differences.
    for name in ("input pipeline", "embeddings", "attention", "feed-forward"):
        assert parts[name] > 0, (name, parts)
    assert numbers["steps"] == 3 and not numbers["jit_compile"]
    assert 0 < numbers["real_tokens_per_step"] <= numbers["padded_tokens_per_step"]
    report = output.read_text()
    assert "## Other\n\nkept\n" in report and "## Where the training step's time goes" in report
    assert "`python bench/profile_step.py`" in report and "| attention | " in report
    assert "## Where the training step's time goes" in result.stdout


@pytest.mark.slow
def test_reviews_baseline_scores_the_test_split(tmp_path):
    pytest.importorskip("sklearn")
    raw = tmp_path / "baseline.json"
    result = run_script("baseline_reviews.py", "--json", str(raw))
    numbers = json.loads(raw.read_text())
    assert 0.5 < numbers["test_accuracy"] <= 1.0 and 0.0 < numbers["test_macro_f1"] <= 1.0
    assert f"accuracy:  {numbers['test_accuracy']:.4f} (test)" in result.stdout
    sizes = numbers["split_sizes"]
    assert sizes["validation"] == sizes["test"] and sizes["train"] > 8 * sizes["test"]


@pytest.mark.slow
def test_tagging_baseline_scores_the_test_split(tmp_path):
    pytest.importorskip("sklearn_crfsuite")
    raw = tmp_path / "baseline.json"
    result = run_script("baseline_tagging.py", "--iterations", "1", "--json", str(raw))
    numbers = json.loads(raw.read_text())
    assert 0.0 < numbers["token_accuracy"] <= 1.0
    assert set(numbers["entities"]["per_type"]) == {"LOC", "ORG", "PER"}
    assert "1 of at most 1 iterations" in numbers["model"]
    assert "markdown row" in result.stdout
