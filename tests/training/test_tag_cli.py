"""`python train.py` on tagging data end to end, and its bad-input messages."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.training.test_train_cli import REPO, event_tags, train

NAMES = {"PER": ["张三", "李小明", "王五"], "LOC": ["北京", "上海市"], "ORG": ["新华社", "联合国"]}
FILLER = "今天我们去看了他说这是很好的事情"


def write_conll(path, sentences=300, seed=0):
    """Char-level BIO sentences with a learnable signal; some long ones."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("-DOCSTART- O\n\n")
        for index in range(sentences):
            pairs = []
            for _ in range(rng.integers(1, 4)):
                pairs += [(c, "O") for c in rng.choice(list(FILLER), size=rng.integers(1, 6))]
                kind = rng.choice(sorted(NAMES))
                name = rng.choice(NAMES[kind])
                pairs += [(c, ("B-" if i == 0 else "I-") + kind) for i, c in enumerate(name)]
            if index % 40 == 0:
                pairs *= 6  # longer than --max-length: tagged in several windows
            handle.writelines(f"{c}\t{t}\n" for c, t in pairs)
            handle.write("\n")


def tag_flags(data, logdir, run_name, epochs=4):
    return [
        "--data", str(data), "--logdir", str(logdir), "--run-name", run_name,
        "--epochs", str(epochs), "--layers", "1", "--hidden", "32", "--heads", "2",
        "--intermediate", "64", "--batch-size", "16", "--max-length", "32",
        "--vocabulary-size", "200", "--probe-sentences", "2", "--learning-rate", "5e-3",
    ]


@pytest.fixture(scope="module")
def tag_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tag")
    data = root / "toy.conll"
    write_conll(data)
    # Under XLA, on batches padded to the bucket bounds: the CRF's forward
    # algorithm and the padded labels and weights must compile and score.
    result = train([*tag_flags(data, root / "logs", "ner"), "--jit-compile"])
    return root, result


@pytest.mark.slow
def test_tag_run_finishes_with_entity_scores(tag_run):
    root, result = tag_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test entity F1" in result.stdout
    metrics = json.loads((root / "logs" / "ner" / "metrics.json").read_text())
    assert metrics["task"] == "tag" and metrics["tag_scheme"] == "bio" and metrics["unit"] == "char"
    assert set(metrics["test_per_type"]) == {"PER", "LOC", "ORG"}
    # The toy entities are a fixed list between filler characters: learnable.
    assert metrics["test_entity_f1"] > 0.8, metrics
    assert metrics["test_token_accuracy"] > 0.9


@pytest.mark.slow
def test_tag_config_json_holds_the_preset_fitted_to_the_data(tag_run):
    from keras_encoder.training.presets import PRESETS, fitted_to_data
    from keras_encoder.training.tasks import load_task
    from tests.training.test_train_cli import assert_literal_config

    root, _ = tag_run
    config = json.loads((root / "logs" / "ner" / "config.json").read_text())
    assert_literal_config(config)
    assert (config["preset"], config["task"], config["tag_scheme"]) == ("tag-bio", "tag", "bio")
    assert (config["position"], config["crf"], config["monitor"]) == ("rotary", True, "val_entity_f1")
    assert config["jit_compile"] is True
    # This small corpus caps the preset's window table (1,048,576 rows) at a
    # power of two >= 14 per training unit, and its weight average (0.998)
    # at about an epoch's steps; config.json has the values that ran.
    task = load_task(config["data"], "tag", seed=config["seed"], echo=lambda *_: None)
    fitted = fitted_to_data({**PRESETS["tag-bio"], "batch_size": 16}, **task.data_sizes())
    assert config["window_features"] == fitted["window_features"]
    assert config["ema"] == fitted["ema"]
    rows = config["window_features"]
    assert 4096 <= rows < 1048576 and rows & (rows - 1) == 0, rows
    assert 0.5 <= config["ema"] < 0.998
    assert config["window_scale"] == 10.0


@pytest.mark.slow
def test_tag_run_keeps_the_epoch_best_by_entity_f1(tag_run):
    root, _ = tag_run
    run_dir = root / "logs" / "ner"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["monitor"] == "val_entity_f1"
    with open(run_dir / "history.csv", newline="") as handle:
        scores = [float(row["val_entity_f1"]) for row in csv.DictReader(handle)]
    assert len(scores) == metrics["epochs_run"]
    assert metrics["best_val_entity_f1"] == pytest.approx(max(scores))
    assert metrics["best_epoch"] == scores.index(max(scores)) + 1


@pytest.mark.slow
def test_tag_run_writes_scores_attention_and_tag_confusion(tag_run):
    root, _ = tag_run
    validation = event_tags(str(root / "logs" / "ner" / "validation"))
    tensors = validation.Tags()["tensors"]
    for name in ("epoch_entity_f1", "epoch_entity_f1_PER", "epoch_token_accuracy", "epoch_loss"):
        assert name in tensors, tensors
    assert "attention/sentence_0/block_0" in tensors
    assert "confusion_matrix" in tensors


@pytest.mark.slow
def test_tagger_saved_model_matches_the_keras_model_in_a_fresh_process(tag_run):
    root, _ = tag_run
    check_export_matches_the_keras_model(root / "logs" / "ner")


@pytest.mark.slow
def test_tagger_has_a_trained_crf_and_the_configured_window_table(tag_run):
    import keras

    root, _ = tag_run
    run_dir = root / "logs" / "ner"
    model = keras.models.load_model(run_dir / "model.keras")
    assert model.crf and model.scheme == "bio"
    transitions = keras.ops.convert_to_numpy(model.get_layer("crf").transitions)
    assert np.abs(transitions).max() > 0.01  # learned, not the zeros it started from
    config = json.loads((run_dir / "config.json").read_text())
    window = model.get_layer("window_scores")
    assert (window.buckets, window.scale) == (config["window_features"], config["window_scale"])


@pytest.mark.slow
def test_saved_tagger_reloads_and_trains_on(tag_run):
    import keras
    import tensorflow as tf

    from keras_encoder.data.pipeline import (
        DEFAULT_BUCKET_BOUNDARIES,
        padded_length_bounds,
        tagging_dataset,
        tagging_sequences,
        tokenize_units_all,
    )
    from keras_encoder.data.tagging import load_tagging_data

    root, _ = tag_run
    model = keras.models.load_model(root / "logs" / "ner" / "model.keras")
    assert model.compiled and model.optimizer.iterations.numpy() > 0  # its optimizer state came back
    data = load_tagging_data(str(root / "toy.conll"))
    tokenizer = model.preprocessor.tokenizer
    tag_ids = tf.ragged.constant(
        [[model.tag_names.index(tag) for tag in tags] for tags in data.tags[:64]], dtype=tf.int32
    )
    sequences = tagging_sequences(tokenizer, tokenize_units_all(tokenizer, data.units[:64]), tag_ids)
    # The run trained with --jit-compile, and model.keras comes back compiled
    # with XLA: batches padded to the bucket bounds, as train.py pads them,
    # keep it to a few compiled shapes.
    assert model.jit_compile
    bounds = padded_length_bounds(DEFAULT_BUCKET_BOUNDARIES, tokenizer.sequence_length)
    dataset = tagging_dataset(sequences, batch_size=16, shuffle=True, seed=0, padded_lengths=bounds)
    # The reloaded model compiled with the CRF's negative log-likelihood per labelled unit.
    token_ids, labels, weights = next(iter(dataset))
    scores = model(token_ids, training=False)
    nll = -np.sum(model.get_layer("crf").log_likelihood(scores, labels, weights)) / np.sum(weights > 0)
    loss = model.compute_loss(x=token_ids, y=labels, y_pred=scores, sample_weight=weights, training=False)
    assert float(loss) == pytest.approx(float(nll), rel=1e-5)
    before = [weight.numpy().copy() for weight in model.trainable_weights]
    steps = int(model.optimizer.iterations.numpy())
    history = model.fit(dataset, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == steps + int(dataset.cardinality())
    [loss] = history.history["loss"]
    assert np.isfinite(loss) and loss >= 0.0  # a negative log-likelihood per unit
    moved = [not np.allclose(a, b.numpy()) for a, b in zip(before, model.trainable_weights)]
    assert all(moved), [w.path for w, m in zip(model.trainable_weights, moved) if not m]
    # Still a tagger of raw text: the names it learned come out as entities.
    [result] = model.predict(["今天张三去了北京"])
    assert {(text, kind) for text, kind, *_ in result["entities"]} >= {("张三", "PER"), ("北京", "LOC")}


@pytest.fixture(scope="module")
def no_crf_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("no-crf")
    data = root / "toy.conll"
    write_conll(data)
    flags = tag_flags(data, root / "logs", "ner-plain") + ["--no-crf", "--window-features", "4096"]
    return root, train(flags)


@pytest.mark.slow
def test_tagger_without_crf_with_window_features_trains_and_exports(no_crf_run):
    import keras

    root, result = no_crf_run
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = root / "logs" / "ner-plain"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_entity_f1"] > 0.8, metrics
    # Flags override the preset (and the small-data cap on the window table).
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["preset"], config["crf"], config["window_features"]) == ("tag-bio", False, 4096)
    model = keras.models.load_model(run_dir / "model.keras")
    assert not model.crf and model.get_layer("window_scores").buckets == 4096
    with pytest.raises(ValueError):
        model.get_layer("crf")
    check_export_matches_the_keras_model(run_dir)


def check_export_matches_the_keras_model(run_dir):
    texts = ["今天张三去了北京", "", "李小明说 新华社" * 40, "x"]
    script = (
        "import json, sys, tensorflow as tf, tensorflow_text\n"
        f"serve = tf.saved_model.load({str(run_dir / 'export')!r}).signatures['serving_default']\n"
        f"out = serve(tf.constant({texts!r}))\n"
        "out = {k: v.numpy() for k, v in out.items()}\n"
        "dec = lambda a: [[x.decode() for x in row] for row in a]\n"
        "print(json.dumps({'tags': dec(out['tags']), 'tokens': dec(out['tokens']),"
        " 'num_tokens': out['num_tokens'].tolist(), 'start': out['token_start'].tolist(),"
        " 'entity_text': dec(out['entity_text']), 'entity_type': dec(out['entity_type']),"
        " 'entity_start': out['entity_start'].tolist(), 'entity_end': out['entity_end'].tolist(),"
        " 'num_entities': out['num_entities'].tolist(),"
        " 'modules': sorted(m for m in sys.modules if m.startswith(('keras_encoder', 'keras_hub')))}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["modules"] == []

    import keras

    from keras_encoder.data.tagging import bio_spans

    model = keras.models.load_model(run_dir / "model.keras")
    units = [[c for c in text if not c.isspace()] for text in texts]
    # The export decodes as evaluation does; so must the reference.
    expected = model.tag_units(units)
    assert served["num_tokens"] == [len(u) for u in units]
    for row, (text, row_units, row_tags) in enumerate(zip(texts, units, expected)):
        count = len(row_units)
        assert served["tokens"][row][:count] == row_units
        assert served["tags"][row][:count] == row_tags
        assert [text[s] for s in served["start"][row][:count]] == row_units
        spans = bio_spans(row_tags)
        assert served["num_entities"][row] == len(spans)
        for index, (kind, first, last) in enumerate(spans):
            start = served["entity_start"][row][index]
            end = served["entity_end"][row][index]
            assert served["entity_type"][row][index] == kind
            assert served["entity_text"][row][index] == "".join(row_units[first:last])
            assert text[start:end].replace(" ", "") == served["entity_text"][row][index]
    # The learnable names come out as entities.
    assert "张三" in served["entity_text"][0] and "北京" in served["entity_text"][0]


def load_cli():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_cli", os.path.join(REPO, "train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TAG_CASES = {
    "one field": ("张\tB-PER\n三\n", [], r"toy\.conll line 2: expected 'token<TAB>tag'"),
    "not BIO": ("张\tB-PER\n三\tPER-I\n", ["--tag-scheme", "bio"], r"line 2: tag 'PER-I' is not BIO"),
    "I after O": ("好\tO\n三\tI-PER\n", [], r"line 2: tag 'I-PER' follows 'O'"),
    "empty": ("\n\n-DOCSTART- O\n", [], r"toy\.conll holds no tagged tokens"),
    "one tag": ("好\tO\n的\tO\n", [], r"every token has the tag 'O'"),
    "classify corpus": (None, ["--data", "peoples-daily-ner", "--task", "classify"], "tagging corpus"),
    "classify preset on CoNLL": (
        "张\tB-PER\n三\tI-PER\n",
        ["--preset", "classify"],
        r"--preset classify reads --data \S+toy\.conll as classification data, which it is not "
        r"\(.*toy\.conll has extension '\.conll'.*\)\. Leave --preset out",
    ),
    "window table off with a scale": (
        "张\tB-PER\n三\tI-PER\n", ["--window-scale", "0"], "--window-scale must be a positive finite number"
    ),
}


@pytest.mark.parametrize("name", sorted(TAG_CASES))
def test_bad_tagging_input_is_one_clear_message(capsys, tmp_path, name):
    content, flags, match = TAG_CASES[name]
    path = tmp_path / "toy.conll"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    code = load_cli().main(["--logdir", str(tmp_path / "logs"), "--data", str(path), *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(match, err), err
    assert not (tmp_path / "logs").exists()
