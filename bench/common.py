"""Helpers the benchmark scripts share (no framework imports here)."""

import json
import statistics
import subprocess
import sys
import time


def write_section(text, path, section):
    """Replace (or append) `section` (a `## ` heading line) of a Markdown
    file with `text`, which starts with that heading; leave the rest alone."""
    try:
        with open(path, encoding="utf-8") as handle:
            content = handle.read()
    except FileNotFoundError:
        content = "# Benchmarks\n"
    start = content.find(section + "\n")
    if start < 0:
        content = content.rstrip("\n") + "\n\n" + text
    else:
        end = content.find("\n## ", start + len(section))
        content = content[:start] + text + ("" if end < 0 else content[end:])
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(content)


def time_serving(serve, texts, latency_samples):
    """Sequences/s at batch 32 and batch-1 latency of a `serving_default`.

    One untimed pass over every input comes first: an XLA export compiles
    each new shape on first use, which a server pays once per process.
    Returns a dict with `sequences_per_s`, `p50_ms`, `p95_ms` and
    `first_pass_s`.
    """
    import tensorflow as tf

    batches = [tf.constant(texts[start : start + 32]) for start in range(0, len(texts), 32)]
    singles = [tf.constant([text]) for text in texts[:latency_samples]]
    start = time.perf_counter()
    for batch in batches + singles:
        serve(batch)["label_id"].numpy()
    first_pass = time.perf_counter() - start
    start = time.perf_counter()
    for batch in batches:
        serve(batch)["label_id"].numpy()
    seconds = time.perf_counter() - start
    latencies = []
    for single in singles:
        start = time.perf_counter()
        serve(single)["label_id"].numpy()
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    return {
        "sequences_per_s": len(texts) / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "first_pass_s": first_pass,
    }


def run_json(command, what, env=None, cwd=None):
    """Run `command` in a fresh process; its last stdout line is JSON.

    Exits with the process's error output when it fails.
    """
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"error: {what} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    lines = result.stdout.strip().splitlines()
    if not lines:
        sys.exit(f"error: {what} printed no result:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])
