"""`bench/speed.py` runs and writes the table it prints (tiny settings)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_speed_benchmark_writes_its_table(tmp_path):
    output, raw = tmp_path / "BENCHMARKS.md", tmp_path / "speed.json"
    command = [
        sys.executable, str(ROOT / "bench" / "speed.py"),
        "--steps", "2", "--warmup", "1", "--epochs", "0", "--torch", "no",
        "--serving-rounds", "1", "--latency-samples", "5",
        "--output", str(output), "--json", str(raw),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = output.read_text()
    assert report in result.stdout
    numbers = json.loads(raw.read_text())
    names = [row["name"] for row in numbers["training"]]
    assert names[0].startswith("keras-hub") and any("train.py" in name for name in names)
    for row in numbers["training"]:
        assert row["real_tokens_per_s"] > 0 and row["steps"] == 2
        assert row["padded_tokens_per_s"] >= row["real_tokens_per_s"]
        assert f"| {row['name']} | {row['real_tokens_per_s']:,.0f} |" in report
    assert len(numbers["serving"]) == 6
    for row in numbers["serving"]:
        assert row["sequences_per_s"] > 0 and 0 < row["p50_ms"] <= row["p95_ms"]
        assert row["first_pass_s"] > 0
    assert "| XLA on fixed group shapes (serve) |" in report
    assert "| finer groups and row counts, 5 x 16 shapes instead of 3 x 7 (serve) |" in report
    assert "| row-wise embedding updates, SparseAdamW (train) |" in report
    assert "| keras-hub, padded to 128 (anchor) |" in report and "1.00x" in report
    assert "--steps 2" in report  # the command that made it
