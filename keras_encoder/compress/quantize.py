"""int8 quantization of a trained task model, scored before and after.

Two modes, both Keras' own quantization (`keras.Model.quantize`) of every
`Dense`, `EinsumDense` and `Embedding` layer (the attention and
feed-forward projections, the token table, the pooler and the head; the
position and segment tables, the norms and a CRF stay float32):

- `int8`: int8 kernels with a scale per output unit, and inputs quantized
  per row at run time (absolute maximum), so the matrix products run on
  int8 operands;
- `int8-weights`: int8 kernels only, turned back to float32 before each
  product. The export is about 4x smaller; the arithmetic stays float32.

The quantized model serves through the same export (`model.export`), with
the tokenizer inside. Its `.keras` file does not reload (Keras rebuilds
our layers' projections unquantized), so a run keeps `model.keras` in
float32 and quantizes again from it.

Command line, for a finished run directory:

    python -m keras_encoder.compress.quantize logs/wordnet-supersenses --mode int8

writes `logs/wordnet-supersenses-int8/` (`config.json`, `export/`,
`metrics.json`): the validation scores before and after, and the test
scores of the quantized model. The source run is not touched.
"""

import argparse
import dataclasses
import os
import shutil
import sys
import time
import warnings

from keras_encoder.errors import ConfigError, KerasEncoderError
from keras_encoder.training.config import QUANTIZE_MODES


def quantize_model(model, mode="int8"):
    """Quantize `model` in place with Keras' int8 quantization; return it.

    Args:
        model: a built Keras model (a task model from this package, or any
            model whose projections are `Dense`/`EinsumDense` layers).
        mode: `"int8"` (weights and activations) or `"int8-weights"`
            (weights only). See the module docstring.
    """
    if mode not in QUANTIZE_MODES:
        raise ConfigError(f"--quantize must be one of {', '.join(QUANTIZE_MODES)}. Received: {mode!r}")
    from keras.quantizers import Int8QuantizationConfig

    config = Int8QuantizationConfig(activation_quantizer=None) if mode == "int8-weights" else None
    with warnings.catch_warnings():
        # Keras warns for each layer it leaves alone (our position tables,
        # the preprocessor): by design here.
        warnings.filterwarnings("ignore", message=".*does not have a `quantize` method")
        model.quantize("int8", config=config)
    return model


def headline_scores(metrics, split):
    """The scalar scores of `split` in a task's metrics (`test_accuracy`, ...)."""
    return {
        key: value
        for key, value in metrics.items()
        if isinstance(value, float) and key.startswith(f"{split}_")
    }


def quantize_and_score(model, task, mode, echo=print):
    """Quantize `model` (in place) and score it; return `(test_metrics, line, record)`.

    `record` holds the validation scores before and after quantization:
    the numbers that decide whether the quantized export is worth serving.
    The test split is scored once, on the quantized model.
    """
    before, before_line = task.evaluate(model, "validation")
    quantize_model(model, mode)
    after, after_line = task.evaluate(model, "validation")
    echo(f"{mode}: {after_line} (float32: {before_line})")
    test_metrics, test_line = task.evaluate(model, "test")
    record = {
        "quantize": mode,
        "validation_float32": headline_scores(before, "validation"),
        f"validation_{mode}": headline_scores(after, "validation"),
    }
    return test_metrics, test_line, record


def directory_bytes(path):
    """Total size of the files under `path`."""
    return sum(
        os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names
    )


def check_finished_run(run_dir):
    """Raise `ConfigError` naming the first file a finished run directory lacks."""
    for name in ("config.json", "metrics.json", "model.keras"):
        if not os.path.exists(os.path.join(run_dir, name)):
            raise ConfigError(
                f"{run_dir} is not a finished run directory: {name} is missing "
                "(train it to the end with train.py first)."
            )


def run_task(run_dir, echo=print):
    """`(config, task)` of a run directory: its `TrainConfig` and its data, split
    as the run split it (the same seed and fractions)."""
    from keras_encoder.training.config import TrainConfig
    from keras_encoder.training.tasks import load_task

    path = os.path.join(run_dir, "config.json")
    config = TrainConfig.from_dict({**TrainConfig.read_json_file(path), "quantize": ""}, source=path)
    if config.task == "pretrain":
        raise ConfigError(
            f"{run_dir} is a pretraining run (a masked LM, nothing to serve); fine-tune it with "
            f"train.py --init {run_dir}, then compress that run."
        )
    task = load_task(
        config.data, config.task, config.text_column, config.label_column, config.tag_scheme,
        config.validation_fraction, config.test_fraction, config.seed, echo,
    )
    return config, task


def quantize_run(run_dir, mode="int8", out=None, echo=print):
    """Quantize a finished run's model, score it and export it to `out`.

    Returns the metrics written to `out/metrics.json`. `out` defaults to
    `<run_dir>-<mode>`; it must not exist yet (nothing is overwritten).
    """
    run_dir = os.path.normpath(run_dir)
    check_finished_run(run_dir)
    if mode not in QUANTIZE_MODES:
        raise ConfigError(f"--mode must be one of {', '.join(QUANTIZE_MODES)}. Received: {mode!r}")
    out = os.path.normpath(out or f"{run_dir}-{mode}")
    if os.path.exists(out):
        raise ConfigError(f"{out} already exists; pass another --out or remove it.")
    config, task = run_task(run_dir, echo)

    import keras

    import keras_encoder.models  # noqa: F401  (registers the layers for loading)
    from keras_encoder.training.run_dir import read_json, write_json

    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    task.prepare(model.preprocessor.tokenizer, config)
    start = time.perf_counter()
    test_metrics, test_line, record = quantize_and_score(model, task, mode, echo)

    staging = out + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    model.export(os.path.join(staging, "export"))
    with open(os.path.join(staging, "config.json"), "w", encoding="utf-8") as handle:
        handle.write(dataclasses.replace(config, quantize=mode).to_json())
    source = read_json(os.path.join(run_dir, "metrics.json")) or {}
    metrics = {
        "task": task.name,
        "source": run_dir,
        **record,
        **test_metrics,
        "float32_test": headline_scores(source, "test"),
        "export_bytes": directory_bytes(os.path.join(staging, "export")),
        "float32_export_bytes": directory_bytes(os.path.join(run_dir, "export")),
        "parameters": source.get("parameters"),
        "trainable_parameters": source.get("trainable_parameters"),
        "quantize_seconds": round(time.perf_counter() - start, 1),
    }
    write_json(os.path.join(staging, "metrics.json"), metrics)
    os.replace(staging, out)  # whole or not at all
    echo(f"{test_line} ({mode}; float32: {_float_line(source)})")
    echo(
        f"Export: {metrics['export_bytes'] / 1e6:.1f} MB "
        f"(float32: {metrics['float32_export_bytes'] / 1e6:.1f} MB) in {out}"
    )
    return metrics


def _float_line(source):
    return ", ".join(f"{key} {value:.4f}" for key, value in headline_scores(source, "test").items())


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_encoder.compress.quantize",
        description="Quantize a finished run's model to int8, score it on the validation "
        "and test splits, and export it.",
    )
    parser.add_argument("run_dir", help="a finished run directory (with model.keras and metrics.json)")
    parser.add_argument("--mode", choices=QUANTIZE_MODES, default="int8", help="what to quantize (default: int8)")
    parser.add_argument("--out", help="output directory (default: RUN_DIR-MODE); must not exist")
    args = parser.parse_args(argv)
    try:
        quantize_run(args.run_dir, args.mode, args.out)
    except KerasEncoderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
