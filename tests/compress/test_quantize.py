"""int8 quantization: what it changes in a task model, its export, and the run-level tools."""

import os

import keras
import numpy as np
import pytest

from keras_encoder.compress import quantize_model
from keras_encoder.errors import ConfigError
from keras_encoder.models import EncoderClassifier, EncoderPreprocessor

TEXTS = ["这个手机很好用", "质量太差了", "还不错 推荐", "mixed English 和中文", "很好", "太差"]
NAMES = ["negative", "positive"]


@pytest.fixture
def classifier(make_backbone, tokenizer):
    model = EncoderClassifier(
        make_backbone(hidden_dim=32, num_heads=4, intermediate_dim=64, num_layers=2), 2,
        EncoderPreprocessor(tokenizer), label_names=NAMES,
    )
    model(model.preprocessor(TEXTS))  # built
    return model


def probabilities(model, ids):
    return keras.ops.convert_to_numpy(keras.ops.softmax(model(ids, training=False)))


def projection_modes(model):
    """Quantization mode of every Dense, EinsumDense and Embedding layer, by path."""
    kinds = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Embedding)
    return {layer.path: layer.quantization_mode for layer in model._flatten_layers() if isinstance(layer, kinds)}


def test_every_projection_and_table_is_quantized_and_predictions_stay_close(classifier):
    ids = classifier.preprocessor(TEXTS)
    before = probabilities(classifier, ids)
    assert set(projection_modes(classifier).values()) == {None}
    assert quantize_model(classifier, "int8") is classifier
    modes = projection_modes(classifier)
    # Query, key, value and output of 2 blocks, 2 feed-forward layers each,
    # the token table and the head (and the pooler, where there is one).
    assert len(modes) >= 2 * 6 + 2 and set(modes.values()) == {"int8"}, modes
    after = probabilities(classifier, ids)
    assert not np.array_equal(after, before)  # the weights really changed
    np.testing.assert_allclose(after, before, atol=0.02)
    # predict() on raw text traces a function; quantizing drops it.
    np.testing.assert_allclose(classifier.predict(TEXTS)["probabilities"], after, atol=1e-6)


def test_quantized_outputs_do_not_depend_on_padding(classifier):
    """Activations are quantized per token, so a long neighbour in the batch
    (more padding for the short text) changes nothing at real positions."""
    quantize_model(classifier, "int8")
    ids = classifier.preprocessor(["很好", "这个手机很好用 mixed English 和中文"]).numpy()
    alone = classifier.preprocessor(["很好"]).numpy()
    assert ids.shape[1] > alone.shape[1]
    np.testing.assert_allclose(probabilities(classifier, ids)[:1], probabilities(classifier, alone), atol=1e-5)


def test_an_unknown_mode_is_refused():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ConfigError, match="--quantize must be one of int8, int8-weights. Received: 'int4'"):
        quantize_model(model, "int4")
    assert model.layers[0].quantization_mode is None


@pytest.mark.slow
def test_weight_only_export_is_smaller_and_serves_what_the_model_predicts(
    classifier, tmp_path, serve_in_fresh_python
):
    from keras_encoder.compress.quantize import directory_bytes

    classifier.export(tmp_path / "float32")
    quantize_model(classifier, "int8-weights")
    classifier.export(tmp_path / "int8")
    float_bytes = directory_bytes(tmp_path / "float32" / "variables")
    int8_bytes = directory_bytes(tmp_path / "int8" / "variables")
    assert int8_bytes < 0.45 * float_bytes, (int8_bytes, float_bytes)
    batches = [TEXTS + ["", "好" * 20_000]]
    served = serve_in_fresh_python(tmp_path / "int8", batches)[0]
    expected = classifier.predict(batches[0])
    np.testing.assert_allclose(served["probabilities"], expected["probabilities"], atol=1e-5)
    assert served["label"].tolist() == expected["label"].tolist()


def test_quantize_run_needs_a_finished_run(tmp_path):
    from keras_encoder.compress import quantize_run

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"is not a finished run directory: metrics.json is missing"):
        quantize_run(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_quantize_run_refuses_an_existing_output(tmp_path):
    from keras_encoder.compress import quantize_run

    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "metrics.json", "model.keras"):
        (run / name).write_text("{}")
    (tmp_path / "run-int8").mkdir()
    (tmp_path / "run-int8" / "kept.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"run-int8 already exists; pass another --out or remove it\."):
        quantize_run(str(run), "int8")
    assert (tmp_path / "run-int8" / "kept.txt").read_text() == "mine"


@pytest.mark.slow
def test_train_quantize_flag_and_the_compress_commands_on_a_finished_run(tmp_path):
    """`train.py --quantize int8` exports int8 and keeps model.keras float32;
    `python -m keras_encoder.compress.quantize` re-quantizes a finished run
    and `python -m keras_encoder.compress.prune` prunes it, each into a new
    directory, leaving the run alone; `train.py --teacher` distils it;
    bench/compress.py tabulates them."""
    import json
    import subprocess
    import sys

    from tests.training.test_train_cli import REPO, tiny_flags, train, write_corpus

    data = tmp_path / "tiny.csv"
    write_corpus(data, rows=160)
    result = train([*tiny_flags(data, tmp_path / "logs", "tiny", epochs=1), "--quantize", "int8"])
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "logs" / "tiny"
    assert "int8: Validation accuracy" in result.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["quantize"] == "int8"
    for scores in (metrics["validation_float32"], metrics["validation_int8"], metrics["float32_test"]):
        assert 0 <= scores.get("validation_accuracy", scores.get("test_accuracy")) <= 1
    assert set(metrics["float32_test"]) == {"test_accuracy", "test_macro_f1"}
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["export_bytes"] > 0
    assert json.loads((run / "config.json").read_text())["quantize"] == "int8"
    model = keras.models.load_model(run / "model.keras")  # float32: reloads
    assert set(projection_modes(model).values()) == {None}

    before = {path: os.path.getmtime(path) for path in run.rglob("*")}
    command = [sys.executable, "-m", "keras_encoder.compress.quantize", str(run), "--mode", "int8-weights"]
    env = dict(os.environ, CI="true")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "logs" / "tiny-int8-weights"
    assert "Export:" in done.stdout and str(out) in done.stdout
    assert {path: os.path.getmtime(path) for path in run.rglob("*")} == before  # the run is untouched
    derived = json.loads((out / "metrics.json").read_text())
    assert derived["source"] == str(run) and derived["quantize"] == "int8-weights"
    assert derived["float32_test"] == metrics["float32_test"]
    assert derived["export_bytes"] < derived["float32_export_bytes"]
    assert json.loads((out / "config.json").read_text())["quantize"] == "int8-weights"

    # Half the heads pruned, fine-tuned for two steps, into its own directory.
    pruned = tmp_path / "logs" / "tiny-pruned50"
    prune = [sys.executable, "-m", "keras_encoder.compress.prune", str(run), "--share", "0.5",
             "--steps", "2", "--score-batches", "2"]
    done = subprocess.run(prune, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Pruned 1 of 2 heads: block_0 [" in done.stdout and str(pruned) in done.stdout
    assert {path: os.path.getmtime(path) for path in run.rglob("*")} == before
    trimmed = json.loads((pruned / "metrics.json").read_text())
    assert (trimmed["heads"], trimmed["heads_before"], trimmed["pruned_share"]) == (1, 2, 0.5)
    assert trimmed["parameters"] < metrics["parameters"] and trimmed["fine_tune_steps"] == 2
    for key in ("validation_full", "validation_pruned", "validation_fine_tuned"):
        assert 0 <= trimmed[key]["validation_accuracy"] <= 1
    # The fine-tuned weights are kept only where validation says so.
    better = trimmed["validation_fine_tuned"]["validation_accuracy"] > trimmed["validation_pruned"]["validation_accuracy"]
    assert trimmed["fine_tuned_kept"] is better
    assert ("Kept the weights before fine-tuning" in done.stdout) is not better
    assert trimmed["full_test"]["test_accuracy"] == metrics["test_accuracy"]  # the source run's
    reloaded = keras.models.load_model(pruned / "model.keras")
    assert reloaded.backbone.get_layer("block_0").attention.num_heads == 1
    assert (pruned / "export" / "saved_model.pb").exists()

    # A student distilled from the run, with the teacher's tokenizer and blocks.
    student = tmp_path / "logs" / "tiny-student"
    result = train(["--data", str(data), "--logdir", str(tmp_path / "logs"), "--run-name", "tiny-student",
                    "--teacher", str(run), "--layers", "1", "--epochs", "1", "--batch-size", "16",
                    "--probe-sentences", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Student of 1 blocks, from the teacher's blocks 0:" in result.stdout
    assert "0.5 x labels + 0.5 x teacher at temperature 2" in result.stdout
    assert {path: os.path.getmtime(path) for path in run.rglob("*")} == before
    taught = json.loads((student / "metrics.json").read_text())
    assert taught["teacher"] == str(run) and taught["parameters"] == model.count_params()  # one block of one
    assert (student / "vocab.txt").read_text() == (run / "vocab.txt").read_text()

    # bench/compress.py compares the runs, and replaces only its section.
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\n## Smaller and faster\n\nother table\n\n"
                      "## Smaller and faster: tiny\n\nold table\n\n## Other\n\nkept\n")
    bench = [
        sys.executable, os.path.join(REPO, "bench", "compress.py"), str(run), str(out), str(pruned),
        str(student), "--rounds", "1", "--texts", "32", "--latency-samples", "3", "--write", str(report),
        "--section", "## Smaller and faster: tiny",
    ]
    done = subprocess.run(bench, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = report.read_text()
    assert "old table" not in text and text.endswith("## Other\n\nkept\n")
    assert "## Smaller and faster\n\nother table\n\n## Smaller and faster: tiny\n\n`python bench/" in text
    rows = [line for line in text.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 4, text
    assert rows[0].startswith(f"| tiny | {metrics['test_accuracy']:.4f} | ")
    assert rows[1].startswith(f"| tiny-int8-weights | {derived['test_accuracy']:.4f} (")
    assert rows[2].startswith(f"| tiny-pruned50 | {trimmed['test_accuracy']:.4f} (")
    assert rows[3].startswith(f"| tiny-student | {taught['test_accuracy']:.4f} (")
    assert rows[0].split(" | ")[6] == "1.00x"
