"""Where `train.py`'s training step spends its time, part by part.

    python bench/profile_step.py                  # train.py's path, no XLA
    python bench/profile_step.py --jit-compile    # train.py --jit-compile's path
    python bench/profile_step.py --write BENCHMARKS.md

On the reviews corpus, the model and batches `train.py` uses by default
(length buckets; with `--jit-compile`, padded to the bucket bounds and
compiled by XLA), each part runs forward and backward over the same
batches, as a `tf.function` compiled the way the training step is:

    input pipeline   iterating train.py's tf.data batches, nothing else
    embeddings       token, token-pair table and positions
    attention        each block's self-attention (projections, scores, softmax)
    feed-forward     each block's two dense layers and activation
    whole model      forward and backward of the full classifier and its loss
    optimizer        a full step (forward, backward, AdamW with clipping) less the above
    Keras fit        `model.fit` over the batches, less the full steps

What the parts do not account for within the whole model (norms,
dropout, residual adds, pooling, the loss) is shown as the remainder.
Times are medians over `--repeats` passes, per step. Everything runs in
one process, one framework: the parts compete for nothing.
"""

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.common import write_section  # noqa: E402
from keras_encoder.models import build_encoder  # noqa: E402
from keras_encoder.text import Tokenizer  # noqa: E402
from keras_encoder.training import TrainConfig  # noqa: E402
from keras_encoder.training.optimizer import make_optimizer  # noqa: E402
from keras_encoder.training.tasks import load_task  # noqa: E402

SECTION = "## Where the training step's time goes"
# fit over a finite generator says so at the end of each pass.
warnings.filterwarnings("ignore", message="Your input ran out of data")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="batches timed per pass (default: 40)")
    parser.add_argument("--repeats", type=int, default=3, help="passes per part; the median counts (default: 3)")
    parser.add_argument("--jit-compile", action="store_true", help="profile train.py --jit-compile's path")
    parser.add_argument("--vocabulary-size", type=int, default=TrainConfig.vocabulary_size)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--write", metavar="FILE.md", help=f"replace the section '{SECTION}' of this file")
    parser.add_argument("--json", metavar="FILE.json", help="write the measured numbers here")
    return parser.parse_args(argv)


def batches_and_model(args):
    """`train.py`'s default model and the first `--steps` of its training
    batches, made by the same task code `train.py` runs."""
    config = TrainConfig(seed=args.seed, vocabulary_size=args.vocabulary_size, jit_compile=args.jit_compile)
    keras.utils.set_random_seed(config.seed)
    task = load_task(config.data, config.task, validation_fraction=config.validation_fraction,
                     test_fraction=config.test_fraction, seed=config.seed, echo=lambda *_: None)
    tokenizer = Tokenizer.learn(task.texts("train"), vocabulary_size=config.vocabulary_size,
                                sequence_length=config.max_length)
    task.prepare(tokenizer, config)
    dataset = task.datasets["train"]
    batches = [(x, y) for x, y in dataset.take(args.steps)]
    backbone = build_encoder(config.encoder_config(tokenizer.vocabulary_size))
    model = task.build_model(config, backbone, preprocessor=None)
    model.compile(optimizer=make_optimizer(config, len(batches)), jit_compile=config.jit_compile)
    model.build((None, None))
    model.optimizer.build(model.trainable_variables)
    return config, dataset, batches, model


def timed(function, inputs, repeats):
    """Median seconds per call of `function` over `inputs`, after a warm pass."""
    for item in inputs:
        function(*item)
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in inputs:
            result = function(*item)
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
        passes.append((time.perf_counter() - start) / len(inputs))
    return statistics.median(passes)


# Parts timed on their own; the others are differences of two timings.
MEASURED_ALONE = ("input pipeline", "embeddings", "attention", "feed-forward")
IDS = tf.TensorSpec([None, None], tf.int32)
LABELS = tf.TensorSpec([None], tf.int32)


def gradient_of(layer_call, variables, jit_compile, signature):
    """A compiled function: forward and backward of `layer_call(x, ...)`, to
    its variables and (when it is a float tensor) its input; the loss is the
    mean square of the output."""

    def run(x, *extra):
        floating = x.dtype.is_floating
        with tf.GradientTape() as tape:
            if floating:
                tape.watch(x)
            out = layer_call(x, *extra)
            loss = tf.reduce_mean(tf.square(out))
        return tape.gradient(loss, [*variables, *([x] if floating else [])])

    return tf.function(run, jit_compile=jit_compile, input_signature=signature)


def profile(args):
    config, dataset, batches, model = batches_and_model(args)
    jit = config.jit_compile
    backbone = model.backbone
    embedding = backbone.get_layer("embedding")
    blocks = [backbone.get_layer(f"block_{index}") for index in range(config.layers)]
    rng = np.random.default_rng(0)
    hidden = [
        (tf.constant(rng.normal(size=(*x.shape, config.hidden)).astype("float32")), tf.not_equal(x, 0))
        for x, _ in batches
    ]
    ids_only = [(x,) for x, _ in batches]
    parts = {}

    # Input pipeline: the same batches, iterated without a model.
    def iterate(count=len(batches)):
        for _ in dataset.take(count):
            pass

    iterate()
    passes = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        iterate()
        passes.append((time.perf_counter() - start) / len(batches))
    parts["input pipeline"] = statistics.median(passes)

    states = [tf.TensorSpec([None, None, config.hidden]), tf.TensorSpec([None, None], tf.bool)]
    states = [tf.TensorSpec([None, None, config.hidden]), tf.TensorSpec([None, None], tf.bool)]
    if not jit:
        # Under XLA the parts fuse with their neighbours, so they are not
        # timed apart (and XLA compiles the parts alone far worse).
        parts["embeddings"] = timed(gradient_of(lambda x: embedding(x, training=True),
                                                embedding.trainable_variables, jit, [IDS]), ids_only, args.repeats)
        parts["attention"] = sum(
            timed(gradient_of(lambda x, mask, block=block: block.attention(x, padding_mask=mask, training=True),
                              block.attention.trainable_variables, jit, states), hidden, args.repeats)
            for block in blocks
        )
        parts["feed-forward"] = sum(
            timed(gradient_of(lambda x, mask, block=block: block.ffn_outer(block.ffn_inner(x)),
                              [*block.ffn_inner.trainable_variables, *block.ffn_outer.trainable_variables], jit,
                              states),
                  hidden, args.repeats)
            for block in blocks
        )
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def forward_backward(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    whole = timed(tf.function(forward_backward, jit_compile=jit, input_signature=[IDS, LABELS]), batches,
                  args.repeats)
    timed_parts = sum(parts.get(name, 0.0) for name in ("embeddings", "attention", "feed-forward"))
    rest = "rest of the model (norms, dropout, residuals, pooling, loss)" if not jit else "the model, forward and backward"
    parts[rest] = whole - timed_parts

    def full_step(x, y):
        gradients = forward_backward(x, y)
        model.optimizer.apply(gradients, model.trainable_variables)

    step = timed(tf.function(full_step, jit_compile=jit, input_signature=[IDS, LABELS]), batches, args.repeats)
    parts["optimizer (AdamW, clipping, schedule)"] = step - whole

    def fit_seconds(times):
        """Seconds of one `fit` over the batches `times` times over."""
        arrays = [(x.numpy(), y.numpy()) for x, y in batches] * times
        dataset = tf.data.Dataset.from_generator(
            lambda: iter(arrays),
            output_signature=(tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)),
        )
        start = time.perf_counter()
        model.fit(dataset, epochs=1, verbose=0)
        return time.perf_counter() - start

    # Per step, the difference of a fit over the batches twice and once,
    # so that what each fit call costs once (its iterator, its first
    # batch) is counted apart.
    fit_seconds(1)
    once, twice = [], []
    for _ in range(args.repeats):
        once.append(fit_seconds(1))
        twice.append(fit_seconds(2))
    fit = (statistics.median(twice) - statistics.median(once)) / len(batches)
    parts["Keras fit (metrics, logs, loop)"] = fit - step
    real = sum(int(tf.math.count_nonzero(x)) for x, _ in batches)
    padded = sum(int(tf.size(x)) for x, _ in batches)
    return {
        "parts": parts,
        "fit_step_seconds": fit,
        "fit_call_seconds": statistics.median(once) - fit * len(batches),
        "steps": len(batches),
        "real_tokens_per_step": real / len(batches),
        "padded_tokens_per_step": padded / len(batches),
        "jit_compile": jit,
        "versions": f"TensorFlow {tf.__version__}, Keras {keras.__version__}",
    }


def render(result, command):
    total = result["fit_step_seconds"] + result["parts"]["input pipeline"]
    lines = [
        SECTION,
        "",
        f"`{command}`: train.py's default model on the reviews, {result['steps']} training batches "
        f"of {result['real_tokens_per_step']:.0f} real tokens ({result['padded_tokens_per_step']:.0f} with "
        f"padding) on average, {'XLA' if result['jit_compile'] else 'no XLA'}; {result['versions']}. "
        "Each part's forward and backward pass timed on its own; the median of passes, per step.",
        "",
        "| part | ms per step | share |",
        "|---|---|---|",
    ]
    for name, seconds in result["parts"].items():
        marker = "" if name in MEASURED_ALONE else " †"
        lines.append(f"| {name}{marker} | {seconds * 1e3:.1f} | {seconds / total:.0%} |")
    lines.append(f"| **one step of `fit`, with its input** | **{total * 1e3:.1f}** | 100% |")
    lines.append("")
    lines.append("† A difference of two timings (for example a full step less forward and backward), so it "
                 "carries the noise of both; a negative value means the part is below that noise.")
    lines.append("")
    lines.append(f"Each `fit` call also costs {result['fit_call_seconds']:.1f} s once (its iterator, its first "
                 "batch), not counted above.")
    lines.append("")
    lines.append(
        "The input pipeline runs beside the step (prefetch), so its share is what it would cost "
        "if it did not overlap; it includes filling the shuffle and length buckets at the start "
        "of each pass."
    )
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    result = profile(args)
    command = "python bench/profile_step.py" + (" --jit-compile" if args.jit_compile else "")
    text = render(result, command)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.write:
        write_section(text, args.write, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
