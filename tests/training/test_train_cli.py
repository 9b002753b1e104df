"""`python train.py` end to end, in a subprocess, on a tiny config."""

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "train.py")

POSITIVE = ["很好", "不错", "喜欢", "满意", "推荐"]
NEGATIVE = ["很差", "失望", "糟糕", "退货", "难用"]
FILLER = "这个手机屏幕电池速度外观价格服务物流包装"


def write_corpus(path, rows=240, seed=0):
    """A small labelled CSV with a learnable signal (sentiment words)."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for index in range(rows):
            label = ["neg", "pos"][index % 2]
            words = POSITIVE if label == "pos" else NEGATIVE
            filler = "".join(rng.choice(list(FILLER), size=rng.integers(3, 20)))
            writer.writerow([f"{filler}{rng.choice(words)}{index}", label])


def tiny_flags(data, logdir, run_name, epochs=2):
    return [
        "--data", str(data), "--logdir", str(logdir), "--run-name", run_name,
        "--epochs", str(epochs), "--layers", "1", "--hidden", "16", "--heads", "2",
        "--intermediate", "32", "--batch-size", "16", "--max-length", "32",
        "--vocabulary-size", "200", "--probe-sentences", "2",
    ]


def train(flags, **kwargs):
    env = dict(os.environ, CI="true")
    return subprocess.run(
        [sys.executable, TRAIN, *flags], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=600, **kwargs,
    )


def event_tags(directory):
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        directory, size_guidance={event_accumulator.IMAGES: 0, event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    data = root / "reviews.csv"
    write_corpus(data)
    result = train(tiny_flags(data, root / "logs", "e2e"))
    return root, result


@pytest.mark.slow
def test_exit_code_and_summary(finished_run):
    _, result = finished_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test accuracy" in result.stdout
    assert "tensorboard --logdir" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_run_directory_contents(finished_run):
    root, _ = finished_run
    run_dir = root / "logs" / "e2e"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["hidden"] == 16 and config["epochs"] == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test_accuracy", "test_macro_f1", "num_train", "num_test", "epochs_run", "train_seconds"):
        assert key in metrics, key
    assert metrics["num_train"] + metrics["num_validation"] + metrics["num_test"] == 240
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["epochs_run"] == 2
    assert metrics["train_seconds"] > 0
    assert metrics["monitor"] == "val_loss"  # classification keeps the loss
    with open(run_dir / "history.csv", newline="") as handle:
        losses = [float(row["val_loss"]) for row in csv.DictReader(handle)]
    assert metrics["best_val_loss"] == pytest.approx(min(losses))
    assert metrics["best_epoch"] == losses.index(min(losses)) + 1
    assert (run_dir / "vocab.txt").exists()
    assert (run_dir / "model.keras").exists()
    assert (run_dir / "checkpoints" / "best.keras").exists()
    assert not (run_dir / "backup").exists()  # removed once training finished


def assert_literal_config(config):
    """config.json holds every `TrainConfig` field with the value the run used."""
    from keras_encoder.training.config import TrainConfig

    assert set(config) == {field.name for field in dataclasses.fields(TrainConfig)}
    for name, value in config.items():
        assert value is not None and value != -1 and value != "auto", (name, value)
        assert isinstance(value, (str, int, float, bool)), (name, value)
    assert TrainConfig.from_dict(config).to_dict() == config


@pytest.mark.slow
def test_config_json_holds_the_literal_values_that_ran(finished_run):
    root, _ = finished_run
    config = json.loads((root / "logs" / "e2e" / "config.json").read_text())
    assert_literal_config(config)
    # The data picked the classify preset; the flags overrode single values.
    assert (config["preset"], config["task"], config["tag_scheme"]) == ("classify", "classify", "")
    assert (config["hidden"], config["layers"], config["batch_size"]) == (16, 1, 16)
    assert (config["position"], config["monitor"], config["bigram_buckets"]) == ("sinusoidal", "val_loss", 32768)
    assert (config["window_features"], config["crf"], config["ema"]) == (0, False, 0.0)


@pytest.mark.slow
def test_hparams_summary_holds_the_config_and_test_scores(finished_run):
    import tensorflow as tf
    from tensorboard.plugins.hparams import metadata

    root, _ = finished_run
    run_dir = root / "logs" / "e2e"
    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    events = event_tags(str(run_dir))  # the run directory's root, not train/ or validation/
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    session = metadata.parse_session_start_info_plugin_data(content)
    assert session.group_name == "e2e"
    recorded = {name: getattr(value, value.WhichOneof("kind")) for name, value in session.hparams.items()}
    assert recorded == pytest.approx(config)
    for name in ("test_accuracy", "test_macro_f1", "best_val_loss", "epochs_run"):
        [event] = events.Tensors(f"hparams/{name}")
        assert float(tf.make_ndarray(event.tensor_proto)) == pytest.approx(metrics[name], rel=1e-6), name


@pytest.mark.slow
def test_tensorboard_has_curves_attention_maps_and_confusion_matrix(finished_run):
    root, _ = finished_run
    run_dir = root / "logs" / "e2e"
    train_events = event_tags(str(run_dir / "train"))
    validation_events = event_tags(str(run_dir / "validation"))
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_learning_rate", "epoch_seconds"):
        assert tag in train_events.Tags()["tensors"], tag
    validation_tensors = validation_events.Tags()["tensors"]
    for tag in ("epoch_loss", "epoch_accuracy", "epoch_macro_f1",
                "attention/sentence_0/block_0", "confusion_matrix"):
        assert tag in validation_tensors, (tag, validation_tensors)
    # Images are stored as [width, height, png bytes...]; one per epoch.
    images = validation_events.Tensors("attention/sentence_1/block_0")
    assert [event.step for event in images] == [0, 1]
    png = images[0].tensor_proto.string_val[2]
    assert png.startswith(b"\x89PNG")


@pytest.mark.slow
def test_saved_model_serves_raw_strings_in_a_fresh_process(finished_run):
    root, _ = finished_run
    run_dir = root / "logs" / "e2e"
    texts = ["这个手机很好", "", "退货" * 5000, "mixed English 和中文 很差"]
    script = (
        "import json, sys, tensorflow as tf, tensorflow_text\n"
        f"serve = tf.saved_model.load({str(run_dir / 'export')!r}).signatures['serving_default']\n"
        f"out = serve(tf.constant({texts!r}))\n"
        "print(json.dumps({'probabilities': out['probabilities'].numpy().tolist(),"
        " 'label': [x.decode() for x in out['label'].numpy()],"
        " 'label_id': out['label_id'].numpy().tolist(),"
        " 'modules': sorted(m for m in sys.modules if m.startswith(('keras_encoder', 'keras_hub')))}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["modules"] == []
    assert served["label"] == [["neg", "pos"][i] for i in served["label_id"]]

    import keras
    import tensorflow as tf

    from keras_encoder.text import Tokenizer

    model = keras.models.load_model(run_dir / "model.keras")
    tokenizer = Tokenizer.load(run_dir)
    ids = tokenizer.tokenize(tf.constant(texts)).to_tensor()
    expected = tf.nn.softmax(model(ids)).numpy()
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    # The task model reads the same raw strings itself.
    predicted = model.predict(texts)
    np.testing.assert_allclose(predicted["probabilities"], expected, atol=1e-5)
    assert list(predicted["label"]) == served["label"]


@pytest.mark.slow
def test_saved_model_cli_shows_the_signature(finished_run):
    root, _ = finished_run
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli is not installed next to this python")
    result = subprocess.run(
        [cli, "show", "--dir", str(root / "logs" / "e2e" / "export"), "--all"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for expected in ("serving_default", "text", "probabilities", "label_id", "label"):
        assert expected in result.stdout


@pytest.mark.slow
def test_second_run_of_a_finished_command_gets_a_new_directory(finished_run):
    root, first = finished_run
    before = (root / "logs" / "e2e" / "metrics.json").read_bytes()
    result = train(tiny_flags(root / "reviews.csv", root / "logs", "e2e", epochs=1))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "logs" / "e2e-2" / "metrics.json").exists()
    assert (root / "logs" / "e2e" / "metrics.json").read_bytes() == before


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped(tmp_path):
    data = tmp_path / "reviews.csv"
    write_corpus(data, rows=400)
    flags = tiny_flags(data, tmp_path / "logs", "resume", epochs=8) + ["--patience", "0"]
    run_dir = tmp_path / "logs" / "resume"
    process = subprocess.Popen(
        [sys.executable, TRAIN, *flags], cwd=REPO, env=dict(os.environ, CI="true"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    history = run_dir / "history.csv"
    while time.time() < deadline and process.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 3:  # header + 2 epochs
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "metrics.json").exists()
    done_before = len(history.read_text().splitlines()) - 1
    assert done_before < 8

    result = train(flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming" in result.stdout
    match = [line for line in result.stdout.splitlines() if "resuming after epoch" in line]
    assert match, result.stdout[-2000:]
    resumed_after = int(match[0].rsplit(" ", 1)[-1])
    assert resumed_after >= 2
    epochs = [int(row["epoch"]) for row in csv.DictReader(history.open())]
    assert sorted(set(epochs)) == list(range(8))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == 8
