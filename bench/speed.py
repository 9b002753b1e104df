"""Training and serving speed: keras_encoder against keras-hub and PyTorch, each row in its own process.

Every training row trains the same architecture (hidden 128, 4 heads,
intermediate 512, 2 layers, max length 128, batch 64, AdamW with the
training schedule, dropout 0.1, GELU) on the same batches of the built-in
`reviews` training split, with its real length distribution:

- the anchors: keras-hub (`TokenAndPositionEmbedding` +
  `TransformerEncoder`, inputs padded to 128), and PyTorch
  `nn.TransformerEncoder` on the same padded batches and on `train.py`'s
  bucketed ones (when `torch` is installed);
- `keras_encoder` as `train.py` runs it (length-bucketed batches, `fit`),
  and, one lever at a time, the same model with other input, compile
  settings, dtype policy or Keras backend (torch; JAX when installed).

Then raw-string SavedModels of the keras-hub model and ours are served
(sequences/s at batch 32, latency at batch 1), and each model is trained
for `--epochs` epochs and scored once on the test split.

Each measurement runs in a fresh process (`bench/speed_worker.py`), so no
two frameworks or exports share threads, and the rows take turns within
each of `--rounds` rounds, so a slow spell of the machine hits every row
rather than one. Tables report the median over rounds and the range; each
ratio is the median of the per-round ratios.

    pip install -e ".[bench]"
    python bench/speed.py --write        # about 80 minutes on 2 CPU cores
    python bench/speed.py --rounds 1 --epochs 0 --rows hub,ours   # a quick look

`--write` puts the result in BENCHMARKS.md (or the file it names) under
"## Training and serving speed", replacing only that section.
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's bench helpers

from bench.common import run_json, write_section  # noqa: E402

SECTION = "## Training and serving speed"
WORKER = REPO / "bench" / "speed_worker.py"
OURS = "keras_encoder as `train.py` runs it"

# key: (name, backend, what it is). The keys are bench/speed_worker.py's.
TRAINING = {
    "hub": ("keras-hub, padded to 128 (anchor)", "tensorflow",
            "keras_hub TokenAndPositionEmbedding + TransformerEncoder, `fit`, Keras default `jit_compile`"),
    "torch": ("PyTorch, padded to 128 (anchor)", "torch", "`nn.TransformerEncoder`, eager"),
    "torch-buckets": ("PyTorch, keras_encoder's bucketed batches (anchor)", "torch",
                      "`nn.TransformerEncoder` fed `train.py`'s batches"),
    "padded": ("keras_encoder, padded to 128", "tensorflow", "lever baseline: no bucketing"),
    "ours": (OURS, "tensorflow", "length buckets, each batch padded to its longest"),
    "xla": ("keras_encoder, buckets + XLA", "tensorflow",
            "batches padded to bucket bounds (6 shapes); compiling them is the warm-up"),
    "bf16": ("keras_encoder, buckets + bfloat16", "tensorflow", "mixed precision, float32 weights"),
    "sparse-adamw": ("keras_encoder, buckets + SparseAdamW", "tensorflow",
                     "only the embedding rows a batch uses are updated"),
    "backend-torch": ("keras_encoder, Keras torch backend", "torch", "`train.py`'s batches, eager"),
    "backend-torch-compile": ("keras_encoder, Keras torch backend + `torch.compile`", "torch",
                              "batches padded to bucket bounds (6 shapes); compiling them is the warm-up"),
    "backend-jax": ("keras_encoder, Keras JAX backend", "jax",
                    "batches padded to bucket bounds (6 shapes), jit-compiled; compiling them is the warm-up"),
}
SERVING = {
    "hub": "keras-hub, padded to 128 (anchor)",
    "hub-xla": "keras-hub, padded to 128, XLA",
    "flat": "keras_encoder, one batch padded to its longest, no XLA",
    "grouped": "keras_encoder, 3 length groups, no XLA",
    "coarse": "keras_encoder, 3 length groups, power-of-two row counts, XLA",
    "ours": "keras_encoder, `EncoderClassifier.export` (5 length groups, XLA)",
}
# Not run unless named: `torch.compile` spent 213 s compiling 5 batch shapes
# in a trial, against 12 s of warm-up for `train.py`'s path.
OPTIONAL = ("backend-torch-compile",)
ACCURACY = ("hub", "ours", "backend-jax")

# Each lever against the row it changes: (lever, row, baseline row, table,
# whether the defaults use it).
LEVERS = (
    ("length bucketing (train)", "ours", "padded", "training", True),
    ("XLA with fixed bucket shapes (train)", "xla", "ours", "training", False),
    ("bfloat16 mixed precision (train)", "bf16", "ours", "training", False),
    ("row-wise embedding updates, SparseAdamW (train)", "sparse-adamw", "ours", "training", False),
    ("Keras torch backend (train)", "backend-torch", "ours", "training", False),
    ("Keras torch backend, `torch.compile` on bucket shapes (train)", "backend-torch-compile", "ours", "training", False),
    ("Keras JAX backend, XLA on bucket shapes (train)", "backend-jax", "ours", "training", False),
    ("rows grouped by length (serve)", "grouped", "flat", "serving", True),
    ("XLA on fixed group shapes (serve)", "coarse", "grouped", "serving", True),
    ("finer groups and row counts, 5 x 16 shapes instead of 3 x 7 (serve)", "ours", "coarse", "serving", True),
)


def available(backend):
    return backend == "tensorflow" or importlib.util.find_spec(backend) is not None


def keys_option(value, known, flag):
    keys = [key for key in value.split(",") if key] if value != "all" else [k for k in known if k not in OPTIONAL]
    unknown = [key for key in keys if key not in known]
    if unknown:
        raise SystemExit(f"error: {flag}: unknown row(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return keys


class Runner:
    """Starts worker processes with the shared options."""

    def __init__(self, workdir, options):
        self.workdir, self.options = workdir, options

    def __call__(self, job, *extra, backend="tensorflow"):
        env = dict(
            os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", SPEED_OPTIONS=json.dumps(self.options)
        )
        if backend == "jax":
            env.setdefault("JAX_PLATFORMS", "cpu")
        command = [sys.executable, str(WORKER), job, str(self.workdir), *map(str, extra)]
        return run_json(command, f"{job} {' '.join(map(str, extra))}".strip(), env=env, cwd=REPO)


def median_range(values, fmt="{:,.0f}"):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def ratios(rows, key, anchor, field):
    """Per-round ratios of `key`'s `field` to `anchor`'s."""
    if key not in rows or anchor not in rows:
        return []
    return [a[field] / b[field] for a, b in zip(rows[key], rows[anchor])]


def ratio_text(values):
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}x"
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def machine_description():
    """The CPU, its vector extensions that matter here, and the cores."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    vector = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
    extensions = f" ({', '.join(vector)})" if vector else ""
    return f"{cpu}{extensions}, {os.cpu_count()} cores visible; Python {platform.python_version()}"


def render(results):
    meta, rounds = results["meta"], results["rounds"]
    peak = statistics.median(results["peak"])
    training, serving = results["training"], results["serving"]
    lines = [
        SECTION,
        "",
        f"`{results['command']}` ({results['date']}; {results['machine']}; {results['versions']}).",
        "",
        "Every row runs in its own process; the rows take turns in each of "
        f"{rounds} round(s). Figures are the median over rounds (range); each ratio is the "
        "median of the per-round ratios (range).",
        "",
        "### Training throughput",
        "",
        "Model in every row: hidden 128, 4 heads, intermediate 512, 2 layers, max length 128, "
        "batch 64, dropout 0.1, GELU, AdamW (the `train.py` schedule, clip norm 1); the "
        "keras_encoder rows also have the token-pair embeddings that `train.py` adds (32,768 "
        "buckets, 4.2M of their 5.2M parameters). Data: the built-in `reviews` training split "
        f"({meta['num_train']:,} reviews, median {meta['median_tokens']} tokens with `[CLS]`/`[SEP]`, "
        f"{meta['share_over']:.1%} cut at 128), the same {results['steps']} batches after "
        f"{results['warmup']} warm-up batches in every row. Real tokens are non-padding tokens; "
        "padded tokens are what the step computes on. The matmul-peak column counts the "
        "matrix multiplies of the padded step (forward x 3) against a float32 `tf.matmul` peak "
        f"measured in each round (median {peak / 1e9:,.1f} GFLOP/s).",
        "",
        "| run | real tokens/s | padded tokens/s | padding | % of matmul peak | vs keras-hub "
        "| vs PyTorch padded | vs PyTorch, same batches | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, measured in training.items():
        name, _, description = TRAINING[key]
        peak_share = [m["flops_per_s"] / p for m, p in zip(measured, results["peak"])]
        lines.append(
            f"| {name} | {median_range([m['real_tokens_per_s'] for m in measured])} | "
            f"{statistics.median(m['padded_tokens_per_s'] for m in measured):,.0f} | "
            f"{measured[0]['padding_share']:.0%} | {statistics.median(peak_share):.1%} | "
            f"{ratio_text(ratios(training, key, 'hub', 'real_tokens_per_s'))} | "
            f"{ratio_text(ratios(training, key, 'torch', 'real_tokens_per_s'))} | "
            f"{ratio_text(ratios(training, key, 'torch-buckets', 'real_tokens_per_s'))} | "
            f"{description}; {measured[0]['note']} |"
        )
    if serving:
        lines += [
            "",
            "### Serving the raw-string SavedModel",
            "",
            f"The first {meta['texts']:,} test-split reviews in corpus order, at batch 32, and "
            f"single-review calls for latency (the first {results['latency_samples']}); tokenizer "
            "included, the output read back. Both are timed after one untimed pass over the same "
            "inputs, whose time is the first-pass column: an XLA export compiles each shape it meets "
            "there, once per process. Padding is the share of padding in what the model computes on "
            "at batch 32 (padding rows included). Both models were fitted on the warm-up batches.",
            "",
            "| export | sequences/s (batch 32) | padding | p50 latency (batch 1) | p95 latency "
            "| throughput vs keras-hub | p50 speed-up vs keras-hub | first pass |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, measured in serving.items():
            p50 = [m["p50_ms"] for m in measured]
            speedup = [a / b for a, b in zip((m["p50_ms"] for m in serving.get("hub", [])), p50)]
            lines.append(
                f"| {SERVING[key]} | {median_range([m['sequences_per_s'] for m in measured])} | "
                f"{meta['serving_padding'][key]:.0%} | {statistics.median(p50):.2f} ms | "
                f"{statistics.median(m['p95_ms'] for m in measured):.2f} ms | "
                f"{ratio_text(ratios(serving, key, 'hub', 'sequences_per_s'))} | {ratio_text(speedup)} | "
                f"{statistics.median(m['first_pass_s'] for m in measured):.1f} s |"
            )
    lines += levers(results)
    if results.get("accuracy"):
        lines += [
            "",
            "### Accuracy after the same number of epochs",
            "",
            f"Each model trained {results['epochs']} epochs on the training split (the learning-rate "
            "schedule spanning them), fed as in its training row, then scored once on the test split.",
            "",
            "| run | test accuracy | seconds of training |",
            "|---|---|---|",
        ]
        for key, row in results["accuracy"].items():
            lines.append(f"| {TRAINING[key][0]} | {row['test_accuracy']:.4f} | {row['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def levers(results):
    """One line per lever: its measured effect on the row it changes."""
    lines = ["", "### Levers, one at a time", "", "| lever | measured effect | kept |", "|---|---|---|"]
    for lever, key, baseline, table, default in LEVERS:
        rows = results[table]
        if key not in rows or baseline not in rows:
            continue
        if table == "training":
            effect = f"{ratio_text(ratios(rows, key, baseline, 'real_tokens_per_s'))} real tokens/s"
        else:
            latency = [b["p50_ms"] / a["p50_ms"] for a, b in zip(rows[key], rows[baseline])]
            effect = (
                f"{ratio_text(ratios(rows, key, baseline, 'sequences_per_s'))} sequences/s at batch 32, "
                f"{ratio_text(latency)} p50 at batch 1"
            )
        lines.append(f"| {lever} | {effect} | {'yes (default)' if default else 'no'} |")
    return lines


def rotated(keys, round_index):
    """The rows in turn, starting one later each round."""
    shift = round_index % len(keys) if keys else 0
    return keys[shift:] + keys[:shift]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every row, in turns (default 3)")
    parser.add_argument("--steps", type=int, default=80, help="measured training steps per row (default 80)")
    parser.add_argument("--warmup", type=int, default=8, help="warm-up steps per row (default 8)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs for the accuracy rows, 0 to skip (default 3)")
    parser.add_argument("--latency-samples", type=int, default=300, help="batch-1 calls for latency")
    parser.add_argument("--serving-texts", type=int, default=0, help="serve only the first N test texts (default 0: all)")
    parser.add_argument("--rows", default="all", help=f"training rows, comma-separated (default all but {','.join(OPTIONAL)}): {','.join(TRAINING)}")
    parser.add_argument("--serving", default="all", help=f"serving rows, comma-separated (or none): {','.join(SERVING)}")
    parser.add_argument("--accuracy", default=",".join(ACCURACY), help="rows trained for --epochs and scored on test")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--vocabulary-size", type=int, default=8000)
    parser.add_argument(
        "--write", nargs="?", const=str(REPO / "BENCHMARKS.md"), metavar="PATH",
        help="write the result into this Markdown file (default: BENCHMARKS.md), replacing its section",
    )
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1 or args.warmup < 1:
        parser.error("--rounds, --steps and --warmup must be at least 1")
    rows = keys_option(args.rows, TRAINING, "--rows")
    serving_keys = [] if args.serving == "none" else keys_option(args.serving, SERVING, "--serving")
    accuracy_keys = [] if not args.epochs else keys_option(args.accuracy, TRAINING, "--accuracy")
    for keys in (rows, accuracy_keys):
        for key in list(keys):
            backend = TRAINING[key][1]
            if not available(backend):
                print(f"  ({TRAINING[key][0]} skipped: {backend} is not installed)", flush=True)
                keys.remove(key)
    command = shlex.join(["python", "bench/speed.py", *(argv if argv is not None else sys.argv[1:])])
    options = {
        "seed": args.seed, "warmup": args.warmup, "steps": args.steps, "vocabulary_size": args.vocabulary_size,
        "serving_texts": args.serving_texts, "latency_samples": args.latency_samples,
    }
    results = {
        "command": command,
        "date": datetime.date.today().isoformat(),
        "machine": machine_description(),
        "rounds": args.rounds,
        "steps": args.steps,
        "warmup": args.warmup,
        "latency_samples": args.latency_samples,
        "peak": [],
        "training": {key: [] for key in rows},
        "serving": {key: [] for key in serving_keys},
    }
    with tempfile.TemporaryDirectory() as directory:
        run = Runner(Path(directory), options)
        print("Data: reviews, seed", args.seed, flush=True)
        results["versions"] = run("prepare")["versions"]
        results["meta"] = json.loads((Path(directory) / "meta.json").read_text())
        results["meta"]["texts"] = len(results["meta"]["texts"])
        for round_index in range(args.rounds):
            peak = run("peak")["flops_per_s"]
            results["peak"].append(peak)
            print(f"Round {round_index + 1}: matmul peak {peak / 1e9:,.1f} GFLOP/s", flush=True)
            for key in rotated(rows, round_index):
                row = run("train", key, backend=TRAINING[key][1])
                results["training"][key].append(row)
                print(
                    f"  {TRAINING[key][0]}: {row['real_tokens_per_s']:,.0f} real tokens/s "
                    f"({row['steps']} steps in {row['seconds']:.1f} s; warm-up {row['warmup_seconds']:.1f} s)",
                    flush=True,
                )
        if serving_keys:
            print("Serving (raw-string SavedModels)", flush=True)
            run("export", ",".join(serving_keys))
            for round_index in range(args.rounds):
                for key in rotated(serving_keys, round_index):
                    row = run("serve", key)
                    results["serving"][key].append(row)
                    print(
                        f"  round {round_index + 1}, {SERVING[key]}: {row['sequences_per_s']:,.0f} sequences/s; "
                        f"p50 {row['p50_ms']:.2f} ms, p95 {row['p95_ms']:.2f} ms",
                        flush=True,
                    )
        if accuracy_keys:
            print(f"Accuracy after {args.epochs} epochs (test split, scored once)", flush=True)
            results["epochs"] = args.epochs
            results["accuracy"] = {}
            for key in accuracy_keys:
                row = run("accuracy", key, args.epochs, backend=TRAINING[key][1])
                results["accuracy"][key] = row
                print(f"  {TRAINING[key][0]}: {row['test_accuracy']:.4f} ({row['seconds']:.0f} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    report = render(results)
    print()
    print(report)
    if args.write:
        write_section(report, args.write, SECTION)
        print(f"Written to {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
