"""Smaller and faster, measured: one row per finished run directory.

    python bench/compress.py logs/wordnet-supersenses logs/wordnet-supersenses-int8 \
        logs/wordnet-supersenses-int8-weights --rounds 3 --write

For each run directory (the first is the anchor the others are compared
with): its test score and parameter counts from `metrics.json`, the size of
its `export/` SavedModel on disk, and serving speed measured on the raw
test texts of the run's own split:

- sequences/s through `serving_default` at batch 32;
- p50 and p95 latency at batch 1.

Every timing runs in a fresh process (this script with `--worker`), and
the variants take turns within each of `--rounds` rounds, so a slow spell
of the machine hits every row rather than one. Each process first passes
over all its inputs once, untimed (an XLA export compiles each new shape
on first use, which a server pays once). The table reports the median over
rounds and the range.

`--write` puts the table in BENCHMARKS.md (or the file it names) under
"## Smaller and faster" (or the `--section` heading), replacing only that
section.
"""

import argparse
import json
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # this checkout's keras_encoder
SECTION = "## Smaller and faster"

from bench.common import run_json, time_serving, write_section  # noqa: E402
from keras_encoder.compress.quantize import directory_bytes, run_task  # noqa: E402  (no TensorFlow)


def test_texts(run_dir, count):
    """The first `count` raw texts of the run's test split, in split order."""
    _, task = run_task(run_dir, echo=lambda *_: None)
    return list(task.texts("test"))[:count]


def worker(run_dir, texts_count, latency_samples):
    """Time one export; print one JSON line."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the tokenizer's ops)

    texts = test_texts(run_dir, texts_count)
    if not texts:
        sys.exit(f"error: {run_dir} has no test texts to serve")
    serve = tf.saved_model.load(os.path.join(run_dir, "export")).signatures["serving_default"]
    print(json.dumps(time_serving(serve, texts, latency_samples)))


def time_in_fresh_process(run_dir, args):
    command = [
        sys.executable, os.path.abspath(__file__), "--worker", run_dir,
        "--texts", str(args.texts), "--latency-samples", str(args.latency_samples),
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return run_json(command, f"timing {run_dir}", env=env, cwd=REPO)


def main_score(metrics):
    """`(name, value)` of the run's headline test score."""
    for name in ("test_accuracy", "test_entity_f1", "test_token_accuracy"):
        if name in metrics:
            return name, metrics[name]
    raise SystemExit("error: metrics.json holds no test score")


def describe(run_dir):
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(path) or not os.path.isdir(os.path.join(run_dir, "export")):
        sys.exit(f"error: {run_dir} is not a finished run directory (metrics.json and export/ are needed)")
    with open(path, encoding="utf-8") as handle:
        metrics = json.load(handle)
    score_name, score = main_score(metrics)
    return {
        "run": run_dir,
        "score_name": score_name,
        "score": score,
        "macro_f1": metrics.get("test_macro_f1"),
        "trainable": metrics.get("trainable_parameters"),
        "export_mb": directory_bytes(os.path.join(run_dir, "export")) / 1e6,
    }


def render(rows, command, rounds, texts, latency_samples, section=SECTION):
    anchor = rows[0]
    score_label = anchor["score_name"].replace("test_", "test ").replace("_", " ")
    lines = [
        section,
        "",
        f"`{command}`",
        "",
        f"Serving `serving_default` on the first {texts} raw test texts of each run's own split "
        f"(batch 32) and {latency_samples} single texts (batch 1); each variant in its own process, "
        f"in turns, {rounds} rounds; median over rounds (range).",
        "",
        f"| variant | {score_label} | macro-F1 | trainable parameters | export MB | sequences/s at 32 | "
        "vs anchor | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        speeds = [t["sequences_per_s"] for t in row["timings"]]
        median = statistics.median(speeds)
        anchor_speed = statistics.median(t["sequences_per_s"] for t in anchor["timings"])
        delta = "" if row is anchor else f" ({100 * (row['score'] - anchor['score']):+.2f})"
        trainable = f"{row['trainable']:,}" if row["trainable"] else ""
        macro = f"{row['macro_f1']:.4f}" if row["macro_f1"] is not None else ""
        lines.append(
            f"| {os.path.basename(row['run'])} | {row['score']:.4f}{delta} | {macro} | {trainable} | "
            f"{row['export_mb']:.1f} | {median:,.0f} ({min(speeds):,.0f}-{max(speeds):,.0f}) | "
            f"{median / anchor_speed:.2f}x | "
            f"{statistics.median(t['p50_ms'] for t in row['timings']):.1f} | "
            f"{statistics.median(t['p95_ms'] for t in row['timings']):.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="finished run directories; the first is the anchor")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=1024, help="test texts served at batch 32")
    parser.add_argument("--latency-samples", type=int, default=200, help="texts served one at a time")
    parser.add_argument(
        "--write", nargs="?", const=os.path.join(REPO, "BENCHMARKS.md"), metavar="PATH",
        help="write the table into this Markdown file (default: BENCHMARKS.md), replacing its section",
    )
    parser.add_argument(
        "--section", default=SECTION,
        help=f"the Markdown heading of the table, which --write replaces (default: {SECTION!r})",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.texts, args.latency_samples)
        return
    if not args.runs:
        parser.error("name at least one finished run directory")
    if not args.section.startswith("## ") or "\n" in args.section:
        parser.error(f"--section must be one '## ' heading line. Received: {args.section!r}")
    rows = [describe(os.path.normpath(run)) for run in args.runs]
    for row in rows:
        row["timings"] = []
    for round_index in range(args.rounds):
        for row in rows:
            timing = time_in_fresh_process(row["run"], args)
            row["timings"].append(timing)
            print(
                f"round {round_index + 1}, {os.path.basename(row['run'])}: "
                f"{timing['sequences_per_s']:,.0f} sequences/s at 32; p50 {timing['p50_ms']:.1f} ms, "
                f"p95 {timing['p95_ms']:.1f} ms",
                flush=True,
            )
    command = "python bench/compress.py " + " ".join(
        [*args.runs, "--rounds", str(args.rounds), "--texts", str(args.texts),
         "--latency-samples", str(args.latency_samples)]
        + ([] if args.section == SECTION else ["--section", repr(args.section)])
    )
    table = render(rows, command, args.rounds, args.texts, args.latency_samples, args.section)
    print()
    print(table)
    if args.write:
        write_section(table, args.write, args.section)
        print(f"Written to {args.write}")


if __name__ == "__main__":
    main()
