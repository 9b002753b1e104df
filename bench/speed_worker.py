"""One measurement of `bench/speed.py`, in its own process.

`bench/speed.py` starts this script once per row and round, with
`KERAS_BACKEND` set for the row, so that no framework shares a process
with another, and prints what it measured as one JSON line. Jobs:

    prepare  DIR            data, tokenizer and the measured batches, once
    peak     DIR            float32 matrix-multiply peak
    train    DIR ROW        training throughput of one row
    export   DIR            the raw-string SavedModels the serving rows time
    serve    DIR ROW        sequences/s and latency of one SavedModel
    accuracy DIR ROW EPOCHS train, then score the test split once
"""

import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

# Lets the script run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.common import time_serving  # noqa: E402
from keras_encoder.data import load_reviews, split_dataset  # noqa: E402
from keras_encoder.data.pipeline import (  # noqa: E402
    DEFAULT_BUCKET_BOUNDARIES,
    classification_dataset,
    pad_to_lengths,
    padded_length_bounds,
    tokenize_all,
)
from keras_encoder.export import (  # noqa: E402
    SERVING_LENGTH_BOUNDS,
    SERVING_ROW_SIZES,
    classifier_serving,
    grouped_by_length,
    write_saved_model,
)
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
TRAIN_PY = {"jit_compile": False}  # what train.py compiles with
# The earlier export grouping (bounds 32 and 64), kept as a lever baseline.
COARSE_BOUNDS = (32, 64)

# Training rows: the model, the batches it is fed, compile options, the
# dtype policy and the Keras backend. "padded" pads every batch to 128;
# "bucketed" is train.py's input (length buckets, each batch padded to its
# longest); "fixed" pads each bucketed batch up to its bucket's bound, so
# that XLA meets 6 shapes.
TRAINING = {
    "hub": dict(model="hub", batches="padded", options={}),
    "torch": dict(model="torch", batches="padded"),
    "torch-buckets": dict(model="torch", batches="bucketed"),
    "padded": dict(model="ours", batches="padded", options=TRAIN_PY),
    "ours": dict(model="ours", batches="bucketed", options=TRAIN_PY),
    "xla": dict(model="ours", batches="fixed", options={"jit_compile": True}),
    "bf16": dict(model="ours", batches="bucketed", options=TRAIN_PY, policy="mixed_bfloat16"),
    "sparse-adamw": dict(model="ours", batches="bucketed", options={**TRAIN_PY, "sparse_adamw": True}),
    "backend-torch": dict(model="ours", batches="bucketed", options={"jit_compile": False}, backend="torch"),
    "backend-torch-compile": dict(model="ours", batches="fixed", options={"jit_compile": True}, backend="torch"),
    "backend-jax": dict(model="ours", batches="fixed", options={"jit_compile": True}, backend="jax"),
}

# Serving rows: which trained model, and the export options.
SERVING = {
    "hub": dict(model="hub", options=dict(length_bounds=(), jit_compile=False)),
    "hub-xla": dict(model="hub", options=dict(length_bounds=())),
    "flat": dict(model="ours", options=dict(length_bounds=(), jit_compile=False)),
    "grouped": dict(model="ours", options=dict(length_bounds=COARSE_BOUNDS, jit_compile=False)),
    "coarse": dict(model="ours", options=dict(length_bounds=COARSE_BOUNDS, row_sizes=(1, 2, 4, 8, 16, 32, 64))),
    "ours": dict(model="ours", options={}),
}


# === Data ===


def padded_dataset(ids, labels, batch_size, shuffle, seed):
    """What most users write: every sequence padded to the max length."""
    dense = ids.to_tensor(shape=[None, MAX_LENGTH])
    dataset = tf.data.Dataset.from_tensor_slices((dense, labels))
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def padded_to_bucket_bounds(dataset):
    """Each batch padded up to its bucket's bound (the last to the max length),
    as `train.py --jit-compile` pads them: 6 shapes with the default buckets,
    each compiled once by XLA."""
    return pad_to_lengths(dataset, padded_length_bounds(DEFAULT_BUCKET_BOUNDARIES, MAX_LENGTH))


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
    spec = (tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32))
    return tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=spec).prefetch(2)


def save_ragged(path, ragged):
    np.savez(path, values=ragged.flat_values.numpy(), lengths=ragged.row_lengths().numpy())


def load_ragged(path):
    with np.load(path) as saved:
        return tf.RaggedTensor.from_row_lengths(saved["values"], saved["lengths"])


def save_batches(path, batches):
    arrays = {}
    for index, (x, y) in enumerate(batches):
        arrays[f"x{index}"], arrays[f"y{index}"] = x, y
    np.savez(path, **arrays)


def load_batches(path):
    with np.load(path) as saved:
        return [(saved[f"x{i}"], saved[f"y{i}"]) for i in range(len(saved.files) // 2)]


def prepare(workdir, seed, vocabulary_size, warmup, steps, serving_texts):
    """Everything the other jobs read: one tokenizer, the same batches for
    every training row, the test texts, and the data's shape."""
    keras.utils.set_random_seed(seed)
    data = load_reviews()
    parts = split_dataset(data, validation_fraction=0.1, test_fraction=0.1, seed=seed)
    tokenizer = Tokenizer.learn(parts["train"].texts, vocabulary_size=vocabulary_size, sequence_length=MAX_LENGTH)
    tokenizer.save(workdir / "tokenizer")
    ids = {name: tokenize_all(tokenizer, parts[name].texts) for name in ("train", "test")}
    labels = {name: np.asarray(parts[name].labels, "int32") for name in ("train", "test")}
    for name in ("train", "test"):
        save_ragged(workdir / f"{name}_ids.npz", ids[name])
        np.save(workdir / f"{name}_labels.npy", labels[name])
    count = warmup + steps
    bucketed = lambda: classification_dataset(ids["train"], labels["train"], BATCH, shuffle=True, seed=seed)  # noqa: E731
    save_batches(workdir / "padded.npz", materialize(padded_dataset(ids["train"], labels["train"], BATCH, True, seed), count))
    save_batches(workdir / "bucketed.npz", materialize(bucketed(), count))
    save_batches(workdir / "fixed.npz", materialize(padded_to_bucket_bounds(bucketed()), count))
    texts = list(parts["test"].texts[: serving_texts or None])
    lengths = ids["train"].row_lengths().numpy()
    meta = {
        "label_names": list(data.label_names),
        "vocabulary_size": tokenizer.vocabulary_size,
        "num_train": len(labels["train"]),
        "median_tokens": int(np.median(lengths)),
        "share_over": float(np.mean(lengths >= MAX_LENGTH)),
        "steps_per_epoch": math.ceil(len(labels["train"]) / BATCH),
        "texts": texts,
        "serving_padding": serving_padding(tokenizer, texts),
    }
    (workdir / "meta.json").write_text(json.dumps(meta))
    return {"versions": versions()}


def versions():
    import keras_hub

    import keras_encoder

    parts = [f"TensorFlow {tf.__version__}", f"Keras {keras.__version__}", f"keras-hub {keras_hub.__version__}",
             f"keras_encoder {keras_encoder.__version__}"]
    for name in ("torch", "jax"):
        try:
            parts.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            pass
    return ", ".join(parts)


def serving_padding(tokenizer, texts):
    """The share of padding in what each serving row's model computes on,
    over `texts` at batch 32, counted by the same grouping code the export
    runs (padding rows included)."""
    shares = {}
    for key, row in SERVING.items():
        options = dict(row["options"])
        fixed = {}
        if options.pop("jit_compile", True):
            fixed = {"max_length": MAX_LENGTH, "row_sizes": tuple(options.pop("row_sizes", SERVING_ROW_SIZES))}
        bounds = options.pop("length_bounds", SERVING_LENGTH_BOUNDS)
        counted = {"real": 0, "computed": 0}

        def fn(dense, hub=row["model"] == "hub"):
            counted["real"] += int(tf.math.count_nonzero(dense))
            counted["computed"] += int(dense.shape[0]) * (MAX_LENGTH if hub else int(dense.shape[1]))
            return tf.zeros([tf.shape(dense)[0], 2])

        for start in range(0, len(texts), 32):
            token_ids = tokenizer.tokenize(tf.constant(texts[start : start + 32]))
            grouped_by_length(fn, token_ids, bounds, (2,), pad_id=tokenizer.pad_id, **fixed)
        shares[key] = 1 - counted["real"] / counted["computed"]
    return shares


def read_meta(workdir):
    return json.loads((workdir / "meta.json").read_text())


# === Models ===


def train_config(seed, epochs=1):
    return TrainConfig(
        epochs=epochs,
        batch_size=BATCH,
        max_length=MAX_LENGTH,
        layers=LAYERS,
        hidden=HIDDEN,
        heads=HEADS,
        intermediate=INTERMEDIATE,
        seed=seed,
    )


def ours_model(config, vocabulary_size, label_names, tokenizer=None):
    """The classifier `train.py` builds; with a tokenizer, its preprocessor
    too (for `export`)."""
    return EncoderClassifier(
        build_encoder(config.encoder_config(vocabulary_size)),
        num_classes=len(label_names),
        preprocessor=EncoderPreprocessor(tokenizer) if tokenizer else None,
        label_names=label_names,
        dropout=config.dropout,
    )


def keras_hub_model(vocabulary_size, num_classes):
    import keras_hub

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
        from bench.sparse_adamw import SparseAdamW

        optimizer = SparseAdamW.from_config(optimizer.get_config())
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
    return model


def build_row_model(row, meta, config, tokenizer=None):
    """The compiled Keras model of a training row."""
    if row["model"] == "hub":
        model = keras_hub_model(meta["vocabulary_size"], len(meta["label_names"]))
    else:
        model = ours_model(config, meta["vocabulary_size"], meta["label_names"], tokenizer)
    return compile_model(model, config, meta["steps_per_epoch"], **row.get("options", {}))


# === Training throughput ===


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


def shapes_once(batches):
    """One batch of every distinct shape, for warming up XLA."""
    seen, picked = set(), []
    for x, y in batches:
        if x.shape not in seen:
            seen.add(x.shape)
            picked.append((x, y))
    return picked


def throughput(measured, seconds, warm_seconds, note):
    real, padded = token_counts(measured)
    return {
        "steps": len(measured),
        "seconds": seconds,
        "warmup_seconds": warm_seconds,
        "real_tokens_per_s": real / seconds,
        "padded_tokens_per_s": padded / seconds,
        "padding_share": 1 - real / padded,
        "flops_per_s": step_flops(measured) / seconds,
        "note": note,
    }


def train_row(workdir, key, seed, warmup_count):
    """`fit` over the warm-up batches (with, for XLA, one batch of every
    shape to come), then `fit` over the measured ones, timed."""
    row = TRAINING[key]
    meta = read_meta(workdir)
    batches = load_batches(workdir / f"{row['batches']}.npz")
    warmup, measured = batches[:warmup_count], batches[warmup_count:]
    if row["model"] == "torch":
        return torch_row(batches, warmup_count, meta, seed)
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(row.get("policy", "float32"))
    model = build_row_model(row, meta, train_config(seed))
    start = time.perf_counter()
    model.fit(from_batches(warmup + shapes_once(measured)), epochs=1, verbose=0)
    warm_seconds = time.perf_counter() - start
    start = time.perf_counter()
    model.fit(from_batches(measured), epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    note = f"Keras {keras.backend.backend()} backend"
    if keras.backend.backend() == "torch":
        import torch

        note += f", torch {torch.__version__}, {torch.get_num_threads()} threads"
    elif keras.backend.backend() == "jax":
        import jax

        note += f", jax {jax.__version__}"
    return throughput(measured, seconds, warm_seconds, note)


def torch_row(batches, warmup_count, meta, seed):
    """PyTorch `nn.TransformerEncoder`, the same architecture and batches."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    vocabulary_size, num_classes = meta["vocabulary_size"], len(meta["label_names"])

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
    for x, y in tensors[:warmup_count]:
        step(x, y)
    warm_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for x, y in tensors[warmup_count:]:
        step(x, y)
    seconds = time.perf_counter() - start
    note = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    return throughput(batches[warmup_count:], seconds, warm_seconds, note)


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
    return {"flops_per_s": 10 * 2 * size**3 / best}


# === Serving ===


class PadToMaxLength(keras.layers.Layer):
    """Pads token ids to the max length, as the keras-hub anchor expects."""

    def call(self, token_ids):
        return tf.pad(token_ids, [[0, 0], [0, MAX_LENGTH - tf.shape(token_ids)[1]]])


def export(workdir, seed, warmup_count, keys):
    """The keras-hub model and ours, fitted on the warm-up batches, exported
    as each serving row in `keys` does (the weights do not change the
    speed; the fit makes them real ones)."""
    meta = read_meta(workdir)
    tokenizer = Tokenizer.load(workdir / "tokenizer")
    config = train_config(seed)
    models = {}
    for name, row in (("hub", TRAINING["hub"]), ("ours", TRAINING["ours"])):
        keras.utils.set_random_seed(seed)
        model = build_row_model(row, meta, config, tokenizer)
        model.fit(from_batches(load_batches(workdir / f"{row['batches']}.npz")[:warmup_count]), epochs=1, verbose=0)
        models[name] = model
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    hub_padded = keras.Model(token_ids, models["hub"](PadToMaxLength()(token_ids)))
    for key in keys:
        row = SERVING[key]
        path = workdir / "exports" / key
        if row["model"] == "hub":
            serve = classifier_serving(hub_padded, tokenizer, meta["label_names"], **row["options"])
            write_saved_model(str(path), serve, hub_padded, tokenizer)
        else:
            models["ours"].export(str(path), **row["options"])
    return {"exports": list(keys)}


def serve_row(workdir, key, latency_samples):
    import tensorflow_text  # noqa: F401  (the tokenizer's ops)

    texts = read_meta(workdir)["texts"]
    serve = tf.saved_model.load(str(workdir / "exports" / key)).signatures["serving_default"]
    return time_serving(serve, texts, latency_samples)


# === Accuracy ===


def accuracy_row(workdir, key, seed, epochs):
    """Train `epochs` on the whole training split as the row's model and
    input, then score the test split once."""
    row = TRAINING[key]
    meta = read_meta(workdir)
    ids = {name: load_ragged(workdir / f"{name}_ids.npz") for name in ("train", "test")}
    labels = {name: np.load(workdir / f"{name}_labels.npy") for name in ("train", "test")}
    if row["batches"] == "padded":
        train = padded_dataset(ids["train"], labels["train"], BATCH, True, seed)
        test = padded_dataset(ids["test"], labels["test"], BATCH, False, None)
    else:
        train = classification_dataset(ids["train"], labels["train"], BATCH, shuffle=True, seed=seed)
        test = classification_dataset(ids["test"], labels["test"], BATCH)
        if row["batches"] == "fixed":
            train, test = padded_to_bucket_bounds(train), padded_to_bucket_bounds(test)
    keras.utils.set_random_seed(seed)
    config = train_config(seed, epochs)
    model = build_row_model(row, meta, config)
    start = time.perf_counter()
    model.fit(train, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    results = model.evaluate(test, verbose=0, return_dict=True)
    return {"test_accuracy": float(results["accuracy"]), "seconds": seconds}


def main(argv):
    job, workdir, *rest = argv
    workdir = Path(workdir)
    options = json.loads(os.environ.get("SPEED_OPTIONS", "{}"))
    seed, warmup = options.get("seed", 1234), options.get("warmup", 8)
    if job == "prepare":
        result = prepare(
            workdir, seed, options.get("vocabulary_size", 8000), warmup, options.get("steps", 80),
            options.get("serving_texts", 0),
        )
    elif job == "peak":
        result = matmul_peak()
    elif job == "train":
        result = train_row(workdir, rest[0], seed, warmup)
    elif job == "export":
        result = export(workdir, seed, warmup, rest[0].split(","))
    elif job == "serve":
        result = serve_row(workdir, rest[0], options.get("latency_samples", 300))
    elif job == "accuracy":
        result = accuracy_row(workdir, rest[0], seed, int(rest[1]))
    else:
        sys.exit(f"error: unknown job {job!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
