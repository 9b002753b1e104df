"""Per-step cost of training on 2 workers against 1, on this machine.

Runs `train.py` with the classify preset's model (2 blocks, 128 wide, 4
heads, 32,768 token-pair buckets) on a synthetic labelled corpus of short
Chinese texts: once in one process, once on 2 workers started by
`python -m keras_encoder.launch`, alternating over several rounds so that a
slow spell of the machine hits both. Each run trains 3 epochs of the same
global batches (batch 64); the first epoch pays for tracing and is left
out. Reported: the median seconds per step of epochs 2-3 over the rounds,
the spread, and the ratio. It also prints the gradient bytes that one
step all-reduces, for the arithmetic of real clusters (BENCHMARKS.md).

    python bench/multi_worker.py
    python bench/multi_worker.py --rounds 5 --rows 6400

Both workers share this machine's cores, and the two processes exchange
every gradient through gRPC on localhost: on 2 cores, 2 workers cannot
be faster than 1. The number that transfers to real machines is the
exchange cost, not the ratio.
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FILLER = "这个手机屏幕电池速度外观价格服务物流包装质量不错很差喜欢失望"


def write_corpus(path, rows, seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for index in range(rows):
            label = ["neg", "pos"][index % 2]
            text = "".join(rng.choice(list(FILLER), size=rng.integers(8, 40)))
            writer.writerow([text + ("很好" if label == "pos" else "很差"), label])


def train(workers, data, logdir, name):
    flags = ["--data", str(data), "--logdir", str(logdir), "--run-name", name, "--epochs", "3",
             "--patience", "0", "--probe-sentences", "2", "--batch-size", "64"]
    script = [str(REPO / "train.py"), *flags]
    if workers == 1:
        command = [sys.executable, *script]
    else:
        command = [sys.executable, "-m", "keras_encoder.launch", "--workers", str(workers), *script]
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run(command, cwd=REPO, env=dict(env, CI="true"), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    steps = None
    for line in result.stdout.splitlines():
        if line.startswith("Training ") and " epochs of " in line:
            steps = int(line.split(" epochs of ")[1].split()[0])
    with open(logdir / name / "history.csv", newline="") as handle:
        epochs = [float(row["seconds"]) for row in csv.DictReader(handle)]
    return [seconds / steps * 1000 for seconds in epochs[1:]], steps


def gradient_bytes():
    """Dense and embedding-table parameters of the classify preset's model."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_encoder.models import build_encoder
    from keras_encoder.training import TrainConfig

    config = TrainConfig()
    backbone = build_encoder(config.encoder_config(4000))
    tables = sum(int(np.prod(w.shape)) for w in backbone.weights if "embedding" in w.path and len(w.shape) == 2)
    total = backbone.count_params()
    return total, tables


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=3200, help="corpus rows (80%% train)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data = root / "corpus.csv"
        write_corpus(data, args.rows)
        times = {1: [], 2: []}
        for round_index in range(args.rounds):
            for workers in (1, 2):
                step_ms, steps = train(workers, data, root / "logs", f"r{round_index}-w{workers}")
                times[workers].extend(step_ms)
                print(f"round {round_index + 1}, {workers} worker(s): "
                      + ", ".join(f"{ms:.0f}" for ms in step_ms) + f" ms/step ({steps} steps/epoch)",
                      flush=True)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    total, tables = gradient_bytes()
    print()
    print(f"command: python bench/multi_worker.py --rounds {args.rounds} --rows {args.rows}")
    print(f"1 worker : median {one:.0f} ms/step (range {min(times[1]):.0f}-{max(times[1]):.0f})")
    print(f"2 workers: median {two:.0f} ms/step (range {min(times[2]):.0f}-{max(times[2]):.0f})")
    print(f"2 workers / 1 worker: {two / one:.2f}x the time per step of the same global batch")
    print(f"parameters: {total:,} ({tables:,} in embedding tables, whose gradients are sparse); "
          f"dense gradient per step: {(total - tables) * 4 / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
