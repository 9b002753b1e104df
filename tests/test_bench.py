"""The scripts in `bench/` run against the current API and write what they print (tiny settings)."""

import json
import subprocess
import sys
from pathlib import Path

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
def test_speed_benchmark_writes_its_table(tmp_path):
    output, raw = tmp_path / "BENCHMARKS.md", tmp_path / "speed.json"
    result = run_script(
        "speed.py",
        "--steps", "2", "--warmup", "1", "--epochs", "0", "--torch", "no",
        "--serving-rounds", "1", "--latency-samples", "5", "--serving-texts", "64",
        "--output", str(output), "--json", str(raw),
    )
    report = output.read_text()
    assert report in result.stdout
    numbers = json.loads(raw.read_text())
    names = [row["name"] for row in numbers["training"]]
    assert names[0].startswith("keras-hub") and OURS in names
    for row in numbers["training"]:
        assert row["real_tokens_per_s"] > 0 and row["steps"] == 2
        assert row["padded_tokens_per_s"] >= row["real_tokens_per_s"]
        assert f"| {row['name']} | {row['real_tokens_per_s']:,.0f} |" in report
    rows = {row["name"]: row for row in numbers["training"]}
    # The XLA lever pads each batch up to its bucket's bound: more padding
    # than train.py's batches (padded to their longest), on the same texts.
    fixed, bucketed = rows["keras_encoder, buckets + XLA"], rows[OURS]
    assert fixed["padding_share"] > bucketed["padding_share"]
    assert fixed["real_tokens_per_s"] * fixed["seconds"] == pytest.approx(
        bucketed["real_tokens_per_s"] * bucketed["seconds"]
    )
    assert len(numbers["serving"]) == 6
    for row in numbers["serving"]:
        assert row["sequences_per_s"] > 0 and 0 < row["p50_ms"] <= row["p95_ms"]
        assert row["first_pass_s"] > 0
    assert "| keras_encoder, `EncoderClassifier.export` (5 length groups, XLA) |" in report
    assert "| XLA with fixed bucket shapes (train) |" in report
    assert "| XLA on fixed group shapes (serve) |" in report
    assert "| finer groups and row counts, 5 x 16 shapes instead of 3 x 7 (serve) |" in report
    assert "| row-wise embedding updates, SparseAdamW (train) |" in report
    assert "| keras-hub, padded to 128 (anchor) |" in report and "1.00x" in report
    assert "--steps 2" in report  # the command that made it


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
