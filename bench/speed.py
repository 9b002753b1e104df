"""Training and serving speed: keras_encoder against keras-hub and PyTorch.

Every row trains the same architecture (hidden 128, 4 heads, intermediate
512, 2 layers, max length 128, batch 64, AdamW with the training schedule,
dropout 0.1, GELU) on the built-in `reviews` training split, with its real
length distribution, one row after another in this process:

- `keras_encoder` as `train.py` runs it (length-bucketed batches, `fit`),
  and, one lever at a time, the same model with other data or compile
  settings;
- the anchor most users write: `keras_hub.layers.TokenAndPositionEmbedding`
  + `keras_hub.layers.TransformerEncoder`, inputs padded to the max length;
- PyTorch `nn.TransformerEncoder` on the same padded batches and on the
  bucketed ones (only when `torch` is installed: `pip install torch==2.13.0`).

Then the exported raw-string SavedModels are served (sequences/s at batch
32, latency at batch 1), and the training step's FLOP/s is set against a
measured float32 matrix-multiply peak. The table is printed and written to
BENCHMARKS.md with the machine description.

    pip install -e ".[bench]"
    python bench/speed.py                      # about 15 minutes on 2 CPU cores
    python bench/speed.py --epochs 0 --output /tmp/speed.md   # speed only
"""

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

# Lets the script run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import keras_hub  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_encoder  # noqa: E402
from bench.sparse_adamw import SparseAdamW  # noqa: E402
from keras_encoder.data import load_reviews, split_dataset  # noqa: E402
from keras_encoder.data.pipeline import (  # noqa: E402
    DEFAULT_BUCKET_BOUNDARIES,
    classification_dataset,
    padded_length_bounds,
    tokenize_all,
)
from keras_encoder.export import classifier_serving, write_saved_model  # noqa: E402
from keras_encoder.models import EncoderClassifier, EncoderPreprocessor, build_encoder  # noqa: E402
from keras_encoder.text import Tokenizer  # noqa: E402
from keras_encoder.training import TrainConfig  # noqa: E402
from keras_encoder.training.optimizer import make_optimizer  # noqa: E402

# Expected here: fit on finite datasets that the benchmark shuffles itself,
# and keras-hub's position embedding dropping the mask (the blocks still
# get it from the token embedding).
for message in ("`shuffle=True` was passed", "Your input ran out of data", "Layer 'position_embedding'"):
    warnings.filterwarnings("ignore", message=message)

HIDDEN, HEADS, INTERMEDIATE, LAYERS, MAX_LENGTH, BATCH = 128, 4, 512, 2, 128, 64
OURS = "keras_encoder as `train.py` runs it"
TRAIN_PY = {"jit_compile": False}  # what train.py compiles with
SPARSE_ADAMW = "keras_encoder, buckets + SparseAdamW"
SERVING_DEFAULT = "keras_encoder, `EncoderClassifier.export` (5 length groups, XLA)"
SERVING_COARSE = "keras_encoder, 3 length groups, power-of-two row counts, XLA"
SERVING_GROUPED = "keras_encoder, 3 length groups, no XLA"
# The earlier export grouping (bounds 32 and 64), kept as the lever baseline.
COARSE_BOUNDS = (32, 64)
SERVING_FLAT = "keras_encoder, one batch padded to its longest, no XLA"


# === Data ===


def prepare_data(seed, vocabulary_size):
    data = load_reviews()
    parts = split_dataset(data, validation_fraction=0.1, test_fraction=0.1, seed=seed)
    tokenizer = Tokenizer.learn(
        parts["train"].texts, vocabulary_size=vocabulary_size, sequence_length=MAX_LENGTH
    )
    ids = {name: tokenize_all(tokenizer, part.texts) for name, part in parts.items()}
    labels = {name: np.asarray(part.labels, "int32") for name, part in parts.items()}
    return data, parts, tokenizer, ids, labels


def padded_dataset(ids, labels, batch_size, shuffle, seed):
    """What most users write: every sequence padded to the max length."""
    dense = ids.to_tensor(shape=[None, MAX_LENGTH])
    dataset = tf.data.Dataset.from_tensor_slices((dense, labels))
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def padded_to_bucket_bounds(dataset):
    """Each batch padded up to its bucket's bound (the last to the max length).

    Batches then come in a few fixed shapes (6 with the default buckets),
    which is what XLA needs to compile each shape once; `train.py` pads
    each batch to its longest sequence only (see the lever table).
    """
    bounds = tf.constant(padded_length_bounds(DEFAULT_BUCKET_BOUNDARIES, MAX_LENGTH), tf.int32)

    def pad(token_ids, labels):
        length = tf.shape(token_ids)[1]
        index = tf.minimum(tf.searchsorted(bounds, length[tf.newaxis], side="left")[0], tf.size(bounds) - 1)
        extra = tf.maximum(bounds[index] - length, 0)
        return tf.pad(token_ids, [[0, 0], [0, extra]]), labels

    return dataset.map(pad, num_parallel_calls=tf.data.AUTOTUNE)


def materialize(dataset, count):
    """The first `count` batches (all when `count` is 0) as numpy arrays."""
    batches = []
    for x, y in dataset:
        batches.append((x.numpy(), y.numpy()))
        if count and len(batches) == count:
            break
    return batches


def from_batches(batches):
    """A dataset that yields exactly `batches`, in order."""
    spec = (
        tf.TensorSpec([None, None], tf.int32),
        tf.TensorSpec([None], tf.int32),
    )
    return tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=spec).prefetch(2)


def token_counts(batches):
    real = sum(int(np.count_nonzero(x)) for x, _ in batches)
    padded = sum(int(x.size) for x, _ in batches)
    return real, padded


def step_flops(batches):
    """Matrix-multiply FLOPs of the training steps (forward x 3).

    Per block and token: q, k, v and output projections (4 D^2) and the
    feed-forward (2 D I) multiply-adds; per head, scores and context
    (2 T^2 H per sequence). Embedding lookups, norms and softmax are left out.
    """
    head_dim = HIDDEN // HEADS
    total = 0
    for x, _ in batches:
        b, t = x.shape
        dense = 2 * b * t * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * INTERMEDIATE)
        attention = 2 * 2 * b * HEADS * t * t * head_dim
        total += 3 * LAYERS * (dense + attention)
    return total


# === Models ===


def train_config(args):
    return TrainConfig(
        epochs=max(args.epochs, 1),
        batch_size=BATCH,
        max_length=MAX_LENGTH,
        layers=LAYERS,
        hidden=HIDDEN,
        heads=HEADS,
        intermediate=INTERMEDIATE,
        seed=args.seed,
    )


def ours_model(config, tokenizer, label_names):
    """The classifier `train.py` builds, with its preprocessor (for `export`)."""
    return EncoderClassifier(
        build_encoder(config.encoder_config(tokenizer.vocabulary_size)),
        num_classes=len(label_names),
        preprocessor=EncoderPreprocessor(tokenizer),
        label_names=label_names,
        dropout=config.dropout,
    )


def keras_hub_model(vocabulary_size, num_classes):
    token_ids = keras.Input(shape=(MAX_LENGTH,), dtype="int32", name="token_ids")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size=vocabulary_size,
        sequence_length=MAX_LENGTH,
        embedding_dim=HIDDEN,
        mask_zero=True,
    )(token_ids)
    x = keras.layers.Dropout(0.1)(x)
    for _ in range(LAYERS):
        x = keras_hub.layers.TransformerEncoder(
            intermediate_dim=INTERMEDIATE,
            num_heads=HEADS,
            dropout=0.1,
            activation="gelu",
            layer_norm_epsilon=1e-5,
        )(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dropout(0.1)(x)
    logits = keras.layers.Dense(num_classes)(x)
    return keras.Model(token_ids, logits, name="keras_hub_classifier")


def compile_model(model, config, steps_per_epoch, jit_compile="auto", sparse_adamw=False):
    optimizer = make_optimizer(config, steps_per_epoch)
    if sparse_adamw:  # the same AdamW, updating only the embedding rows used
        optimizer = SparseAdamW.from_config(optimizer.get_config())
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
    return model


# === Training throughput ===


def time_keras_training(model, warmup, measured):
    """Seconds for `fit` over `measured` after `fit` over `warmup`.

    The warm-up traces (and, with XLA, compiles every batch shape of the
    measured batches) so that the measured fit is the steady state.
    """
    start = time.perf_counter()
    model.fit(from_batches(warmup), epochs=1, verbose=0)
    warm_seconds = time.perf_counter() - start
    start = time.perf_counter()
    model.fit(from_batches(measured), epochs=1, verbose=0)
    return time.perf_counter() - start, warm_seconds


def shapes_once(batches):
    """One batch of every distinct shape, for warming up XLA."""
    seen, picked = set(), []
    for x, y in batches:
        if x.shape not in seen:
            seen.add(x.shape)
            picked.append((x, y))
    return picked


def training_row(name, model, batches, args, note=""):
    warmup = batches[: args.warmup] + shapes_once(batches[args.warmup :])
    measured = batches[args.warmup :]
    seconds, warm_seconds = time_keras_training(model, warmup, measured)
    return throughput_row(name, measured, seconds, warm_seconds, note)


def throughput_row(name, measured, seconds, warm_seconds, note=""):
    real, padded = token_counts(measured)
    row = {
        "name": name,
        "steps": len(measured),
        "seconds": seconds,
        "warmup_seconds": warm_seconds,
        "real_tokens_per_s": real / seconds,
        "padded_tokens_per_s": padded / seconds,
        "padding_share": 1 - real / padded,
        "flops_per_s": step_flops(measured) / seconds,
        "note": note,
    }
    print(
        f"  {name}: {row['real_tokens_per_s']:,.0f} real tokens/s, "
        f"{row['padded_tokens_per_s']:,.0f} padded tokens/s "
        f"({len(measured)} steps in {seconds:.1f} s; warm-up {warm_seconds:.1f} s)",
        flush=True,
    )
    return row


def torch_training_row(name, batches, vocabulary_size, num_classes, args):
    import torch
    from torch import nn

    torch.manual_seed(args.seed)

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = nn.Embedding(vocabulary_size, HIDDEN, padding_idx=0)
            self.positions = nn.Embedding(MAX_LENGTH, HIDDEN)
            self.dropout = nn.Dropout(0.1)
            layer = nn.TransformerEncoderLayer(
                HIDDEN, HEADS, INTERMEDIATE, dropout=0.1, activation="gelu",
                layer_norm_eps=1e-5, batch_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
            self.head = nn.Linear(HIDDEN, num_classes)

        def forward(self, ids):
            real = ids != 0
            positions = torch.arange(ids.shape[1], device=ids.device)
            x = self.dropout(self.tokens(ids) + self.positions(positions)[None])
            x = self.encoder(x, src_key_padding_mask=~real)
            weights = real.unsqueeze(-1).float()
            pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            return self.head(self.dropout(pooled))

    model = Classifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss()
    tensors = [(torch.from_numpy(x).long(), torch.from_numpy(y).long()) for x, y in batches]

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    model.train()
    start = time.perf_counter()
    for x, y in tensors[: args.warmup]:
        step(x, y)
    warm_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for x, y in tensors[args.warmup :]:
        step(x, y)
    seconds = time.perf_counter() - start
    note = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    return throughput_row(name, batches[args.warmup :], seconds, warm_seconds, note)


# === Matrix-multiply peak ===


def matmul_peak(size=1024, repeats=20):
    """Best float32 FLOP/s of `tf.matmul` on `size` x `size` matrices."""
    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])

    @tf.function
    def chain(a, b):
        c = a
        for _ in range(10):
            c = tf.matmul(c, b) * 1e-3
        return c

    chain(a, b)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        chain(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 10 * 2 * size**3 / best


# === Serving ===


class PadToMaxLength(keras.layers.Layer):
    """Pads token ids to the max length, as the keras-hub anchor expects."""

    def call(self, token_ids):
        return tf.pad(token_ids, [[0, 0], [0, MAX_LENGTH - tf.shape(token_ids)[1]]])


def padded_to_max_length(model):
    """The keras-hub model behind a pad-to-128 step, for `export_saved_model`."""
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    return keras.Model(token_ids, model(PadToMaxLength()(token_ids)))


def export_saved_model(model, tokenizer, label_names, path, **options):
    """A raw-string SavedModel of any token-ids-to-logits model, as
    `EncoderClassifier.export` writes it (`options` as there)."""
    serve = classifier_serving(model, tokenizer, label_names, **options)
    write_saved_model(path, serve, model, tokenizer)


def serving_rows(exports, texts, args):
    """Sequences/s at batch 32 and batch-1 latency of each SavedModel.

    `exports` is a list of `(name, path)`. The exports are timed in turns
    (every export once per round, `args.serving_rounds` rounds; latency
    samples in turns too), so a slow spell of the machine hits all of them
    rather than one row.
    """
    serves = [(name, tf.saved_model.load(str(path)).signatures["serving_default"]) for name, path in exports]
    batches = [
        tf.constant(texts[start : start + 32]) for start in range(0, len(texts) - 31, 32)
    ]
    singles = [tf.constant([text]) for text in texts[: args.latency_samples]]
    # One untimed pass over every input first: an XLA export compiles each
    # new shape on first use, which a server pays once.
    first_pass = {}
    for name, serve in serves:
        start = time.perf_counter()
        for batch in batches + singles:
            serve(batch)["label_id"].numpy()
        first_pass[name] = time.perf_counter() - start
    seconds = {name: 0.0 for name, _ in serves}
    for _ in range(args.serving_rounds):
        for name, serve in serves:
            start = time.perf_counter()
            for batch in batches:
                serve(batch)["label_id"].numpy()
            seconds[name] += time.perf_counter() - start
    latencies = {name: [] for name, _ in serves}
    for single in singles:
        for name, serve in serves:
            start = time.perf_counter()
            serve(single)["label_id"].numpy()
            latencies[name].append(time.perf_counter() - start)
    rows = []
    count = args.serving_rounds * sum(int(batch.shape[0]) for batch in batches)
    for name, _ in serves:
        ordered = sorted(latencies[name])
        row = {
            "name": name,
            "sequences_per_s": count / seconds[name],
            "p50_ms": 1000 * statistics.median(ordered),
            "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
            "first_pass_s": first_pass[name],
        }
        print(
            f"  {name}: {row['sequences_per_s']:,.0f} sequences/s at batch 32; batch 1 "
            f"p50 {row['p50_ms']:.2f} ms, p95 {row['p95_ms']:.2f} ms; first pass {row['first_pass_s']:.1f} s",
            flush=True,
        )
        rows.append(row)
    return rows


# === Accuracy ===


def test_accuracy(model, dataset):
    results = model.evaluate(dataset, verbose=0, return_dict=True)
    return results["accuracy"]


# === Report ===


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = tf.config.list_physical_devices("GPU")
    device = (
        ", ".join(tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus)
        if gpus
        else "CPU only"
    )
    return (
        f"{cpu}, {os.cpu_count()} cores visible, {device}; Python "
        f"{platform.python_version()}, TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}, keras-hub {keras_hub.__version__}, "
        f"keras_encoder {keras_encoder.__version__}"
    )


def ratio(value, anchor):
    return f"{value / anchor:.2f}x" if anchor else "–"


def render(results):
    """BENCHMARKS.md: the machine, the command, the tables."""
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `{results['command']}` on {results['date']}.",
        "",
        f"Machine: {results['machine']}.",
        "",
        "Model in every row: hidden 128, 4 heads, intermediate 512, 2 layers, "
        "max length 128, batch 64, dropout 0.1, GELU, AdamW (the `train.py` "
        "schedule, clip norm 1); the keras_encoder rows also have the token-pair "
        "embeddings that `train.py` adds (32,768 buckets, "
        "4.2M of their 5.2M parameters). Data: the built-in `reviews` training split "
        f"({results['num_train']:,} reviews, median {results['median_tokens']} "
        f"tokens with `[CLS]`/`[SEP]`, {results['share_over']:.1%} cut at 128), "
        f"the first {results['steps']} batches after {results['warmup']} "
        "warm-up batches, the same seed for every row.",
        "",
        "## Training throughput",
        "",
        "Real tokens are non-padding tokens; padded tokens are what the step "
        "computes on. FLOP/s counts the matrix multiplies of the padded step "
        f"(forward x 3) against a measured float32 `tf.matmul` peak of "
        f"{results['matmul_peak'] / 1e9:,.1f} GFLOP/s.",
        "",
        "| run | real tokens/s | padded tokens/s | padding | % of matmul peak "
        "| real tokens/s vs keras-hub | vs PyTorch (padded) | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    anchor = results["anchors"].get("keras_hub")
    torch_anchor = results["anchors"].get("torch")
    for row in results["training"]:
        lines.append(
            f"| {row['name']} | {row['real_tokens_per_s']:,.0f} | "
            f"{row['padded_tokens_per_s']:,.0f} | {row['padding_share']:.0%} | "
            f"{row['flops_per_s'] / results['matmul_peak']:.1%} | "
            f"{ratio(row['real_tokens_per_s'], anchor)} | "
            f"{ratio(row['real_tokens_per_s'], torch_anchor)} | {row['note']} |"
        )
    if results.get("serving"):
        anchor = results["serving_anchor"]
        lines += [
            "",
            "## Serving the raw-string SavedModel",
            "",
            "Test-split reviews in corpus order; sequences/s over batches of 32, "
            f"latency over {results['latency_samples']} single-review calls "
            "(tokenizer included, the call's output read back). Both are timed "
            "after one untimed pass over the same inputs, whose time is the "
            "first-pass column: for an XLA export it includes compiling each "
            "shape it meets, once per process. The exports take turns: "
            f"{results.get('serving_rounds', 1)} round(s) of every export over the batches, "
            "then the single calls one export after another.",
            "",
            "| export | sequences/s (batch 32) | p50 latency (batch 1) | p95 latency "
            "| throughput vs keras-hub | p50 speed-up vs keras-hub | first pass |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in results["serving"]:
            lines.append(
                f"| {row['name']} | {row['sequences_per_s']:,.0f} | {row['p50_ms']:.2f} ms | "
                f"{row['p95_ms']:.2f} ms | {ratio(row['sequences_per_s'], anchor['sequences_per_s'])} | "
                f"{ratio(anchor['p50_ms'], row['p50_ms'])} | {row['first_pass_s']:.1f} s |"
            )
    lines += levers(results)
    if results.get("accuracy"):
        lines += [
            "",
            "## Accuracy after the same number of epochs",
            "",
            f"Each model trained {results['epochs']} epochs on the training split "
            "(the learning-rate schedule spanning them), then scored once on the "
            "test split.",
            "",
            "| run | test accuracy | seconds of training |",
            "|---|---|---|",
        ]
        for row in results["accuracy"]:
            lines.append(f"| {row['name']} | {row['test_accuracy']:.4f} | {row['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


# Each lever against the row it changes: (lever, row, baseline row, table,
# whether the defaults use it).
LEVERS = (
    ("length bucketing (train)", OURS, "keras_encoder, padded to 128", "training", True),
    ("XLA with fixed bucket shapes (train)", "keras_encoder, buckets + XLA", OURS, "training", False),
    ("bfloat16 mixed precision (train)", "keras_encoder, buckets + bfloat16", OURS, "training", False),
    ("row-wise embedding updates, SparseAdamW (train)", SPARSE_ADAMW, OURS, "training", False),
    ("rows grouped by length (serve)", SERVING_GROUPED, SERVING_FLAT, "serving", True),
    ("XLA on fixed group shapes (serve)", SERVING_COARSE, SERVING_GROUPED, "serving", True),
    ("finer groups and row counts, 5 x 16 shapes instead of 3 x 7 (serve)", SERVING_DEFAULT, SERVING_COARSE, "serving", True),
)


def levers(results):
    """One line per lever: its measured effect on the row it changes."""
    rows = {row["name"]: row for table in ("training", "serving") for row in results.get(table) or []}
    lines = [
        "",
        "## Levers, one at a time",
        "",
        "| lever | measured effect | kept |",
        "|---|---|---|",
    ]
    for lever, name, baseline, table, default in LEVERS:
        if name not in rows or baseline not in rows:
            continue
        if table == "training":
            speed = rows[name]["real_tokens_per_s"] / rows[baseline]["real_tokens_per_s"]
            effect = f"{speed:.2f}x real tokens/s"
        else:
            speed = rows[name]["sequences_per_s"] / rows[baseline]["sequences_per_s"]
            latency = rows[baseline]["p50_ms"] / rows[name]["p50_ms"]
            effect = f"{speed:.2f}x sequences/s at batch 32, {latency:.2f}x p50 at batch 1"
        kept = "yes (default)" if default else "no"
        lines.append(f"| {lever} | {effect} | {kept} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80, help="measured training steps per row (default 80)")
    parser.add_argument("--warmup", type=int, default=8, help="warm-up steps per row (default 8)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs for the accuracy check, 0 to skip (default 3)")
    parser.add_argument("--serving-rounds", type=int, default=3, help="passes over the test texts at batch 32, in turns")
    parser.add_argument("--latency-samples", type=int, default=300, help="batch-1 calls for latency")
    parser.add_argument(
        "--serving-texts", type=int, default=0, help="serve only the first N test texts (default 0: all)"
    )
    parser.add_argument("--torch", choices=("auto", "no"), default="auto", help="PyTorch rows when torch is installed")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--vocabulary-size", type=int, default=8000)
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "bench/speed.py", *(argv if argv is not None else sys.argv[1:])])
    keras.utils.set_random_seed(args.seed)

    print("Data: reviews, seed", args.seed, flush=True)
    data, parts, tokenizer, ids, labels = prepare_data(args.seed, args.vocabulary_size)
    num_classes = len(data.label_names)
    vocabulary_size = tokenizer.vocabulary_size
    lengths = ids["train"].row_lengths().numpy()
    count = args.warmup + args.steps
    config = train_config(args)
    steps_per_epoch = math.ceil(len(labels["train"]) / BATCH)

    def ours_dataset():
        return classification_dataset(ids["train"], labels["train"], BATCH, shuffle=True, seed=args.seed)

    padded = materialize(padded_dataset(ids["train"], labels["train"], BATCH, True, args.seed), count)
    bucketed = materialize(ours_dataset(), count)
    fixed = materialize(padded_to_bucket_bounds(ours_dataset()), count)

    results = {
        "command": command,
        "date": datetime.date.today().isoformat(),
        "machine": machine_description(),
        "num_train": len(labels["train"]),
        "median_tokens": int(np.median(lengths)),
        "share_over": float(np.mean(lengths >= MAX_LENGTH)),
        "steps": args.steps,
        "warmup": args.warmup,
        "training": [],
        "anchors": {},
    }

    print("Matrix-multiply peak (float32, 1024 x 1024)", flush=True)
    results["matmul_peak"] = matmul_peak()
    print(f"  {results['matmul_peak'] / 1e9:,.1f} GFLOP/s", flush=True)

    print("Training throughput", flush=True)
    training = results["training"]
    keras.utils.set_random_seed(args.seed)
    hub = compile_model(keras_hub_model(vocabulary_size, num_classes), config, steps_per_epoch)
    row = training_row(
        "keras-hub, padded to 128 (anchor)",
        hub,
        padded,
        args,
        "keras_hub TokenAndPositionEmbedding + TransformerEncoder, `fit`, Keras default `jit_compile`",
    )
    training.append(row)
    results["anchors"]["keras_hub"] = row["real_tokens_per_s"]

    if args.torch == "auto" and _has_torch():
        row = torch_training_row("PyTorch, padded to 128 (anchor)", padded, vocabulary_size, num_classes, args)
        training.append(row)
        results["anchors"]["torch"] = row["real_tokens_per_s"]
        training.append(
            torch_training_row("PyTorch, keras_encoder's bucketed batches", bucketed, vocabulary_size, num_classes, args)
        )

    # The levers, one at a time, on the same model.
    variants = [
        ("keras_encoder, padded to 128", padded, TRAIN_PY, "float32", "lever baseline: no bucketing"),
        (OURS, bucketed, TRAIN_PY, "float32", "length buckets, each batch padded to its longest"),
        ("keras_encoder, buckets + XLA", fixed, {"jit_compile": True}, "float32",
         "batches padded to bucket bounds (6 shapes); compiling them is the warm-up"),
        ("keras_encoder, buckets + bfloat16", bucketed, TRAIN_PY, "mixed_bfloat16", "mixed precision, float32 weights"),
        (SPARSE_ADAMW, bucketed, {**TRAIN_PY, "sparse_adamw": True}, "float32",
         "only the embedding rows a batch uses are updated"),
    ]
    for name, batches, options, policy, note in variants:
        keras.utils.set_random_seed(args.seed)
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = compile_model(
                ours_model(config, tokenizer, data.label_names), config, steps_per_epoch, **options
            )
            training.append(training_row(name, model, batches, args, note))
        finally:
            keras.mixed_precision.set_global_policy("float32")
        if name == OURS:
            ours = model

    print("Serving (exported SavedModels, raw strings in)", flush=True)
    texts = parts["test"].texts[: args.serving_texts or None]
    results["latency_samples"] = min(args.latency_samples, len(texts))
    results["serving_rounds"] = args.serving_rounds
    with tempfile.TemporaryDirectory() as directory:
        hub_padded = padded_to_max_length(hub)
        exports = [
            ("keras-hub, padded to 128 (anchor)", "hub", lambda path: export_saved_model(hub_padded, tokenizer, data.label_names, path, length_bounds=(), jit_compile=False)),
            ("keras-hub, padded to 128, XLA", "hub-xla", lambda path: export_saved_model(hub_padded, tokenizer, data.label_names, path, length_bounds=())),
            (SERVING_FLAT, "flat", lambda path: ours.export(path, length_bounds=(), jit_compile=False)),
            (SERVING_GROUPED, "grouped", lambda path: ours.export(path, length_bounds=COARSE_BOUNDS, jit_compile=False)),
            (SERVING_COARSE, "coarse", lambda path: ours.export(path, length_bounds=COARSE_BOUNDS, row_sizes=(1, 2, 4, 8, 16, 32, 64))),
            (SERVING_DEFAULT, "ours", lambda path: ours.export(path)),
        ]
        written = []
        for name, folder, write in exports:
            path = Path(directory) / folder
            write(path)
            written.append((name, path))
        results["serving"] = serving_rows(written, texts, args)
    results["serving_anchor"] = results["serving"][0]

    if args.epochs:
        print(f"Accuracy after {args.epochs} epochs (test split)", flush=True)
        results["epochs"] = args.epochs
        results["accuracy"] = []
        runs = [
            (
                "keras-hub, padded to 128",
                lambda: keras_hub_model(vocabulary_size, num_classes),
                padded_dataset(ids["train"], labels["train"], BATCH, True, args.seed),
                padded_dataset(ids["test"], labels["test"], BATCH, False, None),
            ),
            (
                OURS,
                lambda: ours_model(config, tokenizer, data.label_names),
                classification_dataset(ids["train"], labels["train"], BATCH, shuffle=True, seed=args.seed),
                classification_dataset(ids["test"], labels["test"], BATCH),
            ),
        ]
        for name, build, train, test in runs:
            keras.utils.set_random_seed(args.seed)
            model = compile_model(build(), config, steps_per_epoch, **(TRAIN_PY if name == OURS else {}))
            start = time.perf_counter()
            model.fit(train, epochs=args.epochs, verbose=0)
            seconds = time.perf_counter() - start
            accuracy = test_accuracy(model, test)
            results["accuracy"].append({"name": name, "test_accuracy": accuracy, "seconds": seconds})
            print(f"  {name}: test accuracy {accuracy:.4f} ({seconds:.0f} s)", flush=True)

    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    report = render(results)
    args.output.write_text(report)
    print()
    print(report)
    return 0


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        print("  (PyTorch rows skipped: torch is not installed)", flush=True)
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
