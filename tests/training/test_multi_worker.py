"""`train.py` on several workers: real worker processes on localhost, started by the launcher.

Each run is a tiny model on a tiny corpus, in subprocesses with timeouts,
so a hang fails a test instead of the suite.
"""

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from keras_encoder.distribute import Cluster, connect_timeout, read_tf_config
from keras_encoder.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[2]
TRAIN = REPO / "train.py"
LIMIT = 420  # seconds any one launch may take
WORDS = {"pos": ["很好", "不错", "喜欢", "满意"], "neg": ["很差", "失望", "糟糕", "难用"]}
FILLER = "这个手机屏幕电池速度外观价格服务物流包装"


def write_corpus(path, rows=200, seed=0):
    """Texts of 6 to 9 characters: all in the first length bucket (<16 tokens).

    With 160 training rows and a global batch of 16, every batch is full,
    so each of 2 replicas always gets exactly half of each batch.
    """
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for index in range(rows):
            label = ["neg", "pos"][index % 2]
            filler = "".join(rng.choice(list(FILLER), size=rng.integers(3, 6)))
            writer.writerow([f"{filler}{rng.choice(WORDS[label])}{index % 10}", label])


def flags(data, logdir, run_name, epochs=3, batch_size=16):
    return [
        "--data", str(data), "--logdir", str(logdir), "--run-name", run_name,
        "--epochs", str(epochs), "--layers", "1", "--hidden", "16", "--heads", "2",
        "--intermediate", "32", "--batch-size", str(batch_size), "--max-length", "16",
        "--vocabulary-size", "100", "--probe-sentences", "2", "--patience", "0",
        # Dropout and token dropout draw per replica: off, so 1 and 2 workers compare.
        "--dropout", "0", "--token-dropout", "0",
    ]


def environment(tmp_path, **extra):
    env = {name: value for name, value in os.environ.items() if name != "TF_CONFIG"}
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    return dict(env, CI="true", TMPDIR=str(scratch), **extra)


def launch(tmp_path, workers, argv, **extra):
    command = [sys.executable, "-m", "keras_encoder.launch", "--workers", str(workers),
               "--log-dir", str(tmp_path / "worker-logs"), str(TRAIN), *argv]
    return subprocess.run(
        command, cwd=REPO, env=environment(tmp_path, **extra), capture_output=True, text=True,
        timeout=LIMIT,
    )


def history(run_dir):
    with open(run_dir / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# === TF_CONFIG, read without TensorFlow ===


def _tf_config(workers, index, kind="worker", **extra):
    return json.dumps({"cluster": {"worker": workers, **extra}, "task": {"type": kind, "index": index}})


def test_tf_config_gives_the_workers_in_order_and_the_chief_first():
    assert read_tf_config(_tf_config(["a:1", "b:2"], 1)) == Cluster(("a:1", "b:2"), 1)
    assert read_tf_config(_tf_config(["a:1", "b:2"], 0)).is_chief
    with_chief = read_tf_config(_tf_config(["b:2"], 0, chief=["a:1"]))
    assert with_chief == Cluster(("a:1", "b:2"), 1) and not with_chief.is_chief
    assert read_tf_config(_tf_config(["b:2"], 0, kind="chief", chief=["a:1"])).is_chief


@pytest.mark.parametrize(
    "text, named",
    [
        ("{not json", "TF_CONFIG is not JSON"),
        (json.dumps({"cluster": {"worker": ["a:1"]}}), 'needs a "cluster" and a "task"'),
        (_tf_config(["a:1", "b:2"], 2), 'task "index" must be 0..1'),
        (_tf_config(["a:1", "b:2"], "0"), 'task "index" must be 0..1'),
        (_tf_config(["a:1", "b"], 0), '"host:port" strings'),
        (_tf_config(["a:1", "a:1"], 0), "names an address twice"),
        (_tf_config(["a:1"], 0, ps=["p:3"]), "'ps' jobs"),
        (_tf_config(["a:1"], 0, kind="evaluator"), '"worker" or "chief"'),
        (_tf_config(["b:2"], 0, chief=["a:1", "c:3"]), "at most one"),
    ],
)
def test_a_bad_tf_config_is_one_clear_error(text, named):
    with pytest.raises(ConfigError, match="TF_CONFIG") as error:
        read_tf_config(text)
    assert named in str(error.value)


def test_connect_timeout_comes_from_the_environment():
    assert connect_timeout({}) == 120.0
    assert connect_timeout({"KERAS_ENCODER_CONNECT_TIMEOUT": "7.5"}) == 7.5
    for bad in ("0", "-3", "soon"):
        with pytest.raises(ConfigError, match="KERAS_ENCODER_CONNECT_TIMEOUT"):
            connect_timeout({"KERAS_ENCODER_CONNECT_TIMEOUT": bad})


def test_train_py_names_a_bad_tf_config_and_exits_2(tmp_path):
    env = dict(environment(tmp_path), TF_CONFIG="{not json")
    result = subprocess.run(
        [sys.executable, str(TRAIN), "--logdir", str(tmp_path / "logs")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: TF_CONFIG is not JSON")
    assert "Traceback" not in result.stderr and not (tmp_path / "logs").exists()


@pytest.mark.slow
def test_a_worker_alone_gives_up_naming_the_silent_address(tmp_path):
    """Worker 0 of 2, with nobody at worker 1's port: a message, not a hang."""
    env = dict(
        environment(tmp_path), KERAS_ENCODER_CONNECT_TIMEOUT="5",
        TF_CONFIG=_tf_config(["localhost:%d" % _free_port(), "localhost:%d" % _free_port()], 0),
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(TRAIN), "--logdir", str(tmp_path / "logs")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    # The wait cannot be interrupted: a watchdog prints the reason and kills it.
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    worker_1 = json.loads(env["TF_CONFIG"])["cluster"]["worker"][1]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Worker 0 waited 5 s") and f"nothing answers at {worker_1}." in last
    assert time.monotonic() - started < 90 and not (tmp_path / "logs").exists()


def _free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_one_process_leaves_logs_alone_and_builds_from_zeros_of_the_spec():
    import tensorflow as tf

    from keras_encoder.distribute import is_multi_worker, multi_worker_logs, zeros_like_spec

    strategy = tf.distribute.get_strategy()
    assert not is_multi_worker(strategy)
    logs = {"loss": tf.constant(0.5)}
    assert multi_worker_logs(strategy, logs) is logs
    spec = (tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None,), tf.int64))
    ids, labels = zeros_like_spec(spec)
    assert (ids.shape, ids.dtype, labels.shape, labels.dtype) == ((1, 1), tf.int32, (1,), tf.int64)


# === Real runs ===


@pytest.fixture(scope="module")
def one_and_two_workers(tmp_path_factory):
    """The same config trained in one process and on 2 workers."""
    root = tmp_path_factory.mktemp("multi")
    data = root / "corpus.csv"
    write_corpus(data)
    logdir = root / "logs"
    single = subprocess.run(
        [sys.executable, str(TRAIN), *flags(data, logdir, "one")], cwd=REPO,
        env=environment(root), capture_output=True, text=True, timeout=LIMIT,
    )
    double = launch(root, 2, flags(data, logdir, "two"))
    return root, single, double


@pytest.mark.slow
def test_two_workers_reach_the_validation_loss_of_one(one_and_two_workers):
    root, single, double = one_and_two_workers
    assert single.returncode == 0, single.stderr[-3000:]
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = history(root / "logs" / "one"), history(root / "logs" / "two")
    assert len(one) == len(two) == 3
    for row_one, row_two in zip(one, two):
        # Same data, same global batches, same initial weights: only the
        # order of float sums differs.
        np.testing.assert_allclose(float(row_two["val_loss"]), float(row_one["val_loss"]), rtol=1e-4)
        np.testing.assert_allclose(float(row_two["loss"]), float(row_one["loss"]), rtol=1e-4)
    metrics = json.loads((root / "logs" / "two" / "metrics.json").read_text())
    assert metrics["workers"] == 2 and metrics["replicas"] == 2
    assert metrics["resumed_after_epoch"] is None


@pytest.mark.slow
def test_only_the_chief_writes_and_the_others_clean_up(one_and_two_workers):
    root, single, double = one_and_two_workers
    assert double.returncode == 0, double.stderr[-3000:]
    logs = root / "logs"
    assert sorted(path.name for path in logs.iterdir()) == ["one", "two"]
    names = lambda run: sorted(  # noqa: E731
        str(path.relative_to(logs / run)) for path in (logs / run).rglob("*")
        if "events.out" not in path.name
    )
    assert names("two") == names("one")
    assert list((root / "tmp").glob("keras_encoder_worker*")) == []  # the scratch run dirs
    assert "Worker 1 has trained" in (root / "worker-logs" / "worker-1.log").read_text()
    assert "The tasks have crashed" not in double.stderr


@pytest.mark.slow
def test_a_batch_not_divisible_by_the_replicas_stops_with_one_sentence(tmp_path):
    data = tmp_path / "corpus.csv"
    write_corpus(data, rows=60)
    result = launch(tmp_path, 2, flags(data, tmp_path / "logs", "odd", epochs=1, batch_size=15))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: --batch-size 15 is the global batch, split evenly over 2 replicas" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_killed_worker_and_a_relaunch_resume_from_the_last_finished_epoch(tmp_path):
    """Run with LoRA adapters, the harder case: the chief's restored adapters
    (kept apart from the backup) must reach every worker as well as the
    backed-up weights and optimizer state. A full fine-tune resumes through
    the same backup (tests/training/test_train_cli.py kills one)."""
    extra = ["--lora-rank", "4"]
    data = tmp_path / "corpus.csv"
    write_corpus(data, rows=240)
    argv = [*flags(data, tmp_path / "logs", "resume", epochs=3), *extra]
    mark = uuid.uuid4().hex
    command = [sys.executable, "-m", "keras_encoder.launch", "--workers", "2",
               "--log-dir", str(tmp_path / "worker-logs"), str(TRAIN), *argv]
    launcher = subprocess.Popen(
        command, cwd=REPO, env=environment(tmp_path, RESUME_TEST_MARK=mark),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    run_dir = tmp_path / "logs" / "resume"
    try:
        deadline = time.monotonic() + LIMIT
        while not _backed_up_epochs(run_dir):
            assert launcher.poll() is None, launcher.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no epoch finished"
            time.sleep(0.2)
        os.kill(_worker_pid(mark, 1), signal.SIGKILL)
        output, _ = launcher.communicate(timeout=LIMIT)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    assert "worker 1 was killed by SIGKILL (exit code 137)" in output, output[-3000:]
    finished = len(history(run_dir))
    assert 1 <= finished < 3 and not (run_dir / "metrics.json").exists()

    result = launch(tmp_path, 2, argv)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming after epoch {finished}" in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_after_epoch"] == finished
    assert [int(row["epoch"]) for row in history(run_dir)] == [0, 1, 2]  # none lost, none twice


def _worker_pid(mark, index):
    """The pid of worker `index` of the launch whose environment holds `mark`."""
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            variables = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RESUME_TEST_MARK={mark}".encode() not in variables:
            continue
        for variable in variables:
            if variable.startswith(b"TF_CONFIG="):
                if json.loads(variable[len("TF_CONFIG="):])["task"]["index"] == index:
                    return int(entry.name)
    raise AssertionError(f"no worker {index} found")


@pytest.mark.slow
def test_the_crf_tagger_trains_on_two_workers(tmp_path):
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from test_tag_cli import tag_flags, write_conll

    data = tmp_path / "toy.conll"
    write_conll(data, sentences=120)
    result = launch(tmp_path, 2, [*tag_flags(data, tmp_path / "logs", "ner", epochs=2), "--crf"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "logs" / "ner" / "metrics.json").read_text())
    assert metrics["workers"] == 2 and "test_entity_f1" in metrics
    assert list((tmp_path / "tmp").glob("keras_encoder_worker*")) == []


def test_jit_compile_is_refused_on_a_cluster_before_the_data_is_read(tmp_path):
    # Measured: XLA on CPU has no kernel for the workers' gradient gathers,
    # so the first step would fail after the run directory was written.
    from keras_encoder.training import train

    cluster = Cluster(addresses=("localhost:1", "localhost:2"), index=0)
    with pytest.raises(ConfigError, match="--jit-compile does not run on a multi-worker cluster"):
        train({"data": str(tmp_path / "absent.csv"), "logdir": str(tmp_path / "logs"), "jit_compile": True},
              cluster=cluster)
    assert not (tmp_path / "logs").exists()


def _backed_up_epochs(run_dir):
    """Epochs in the chief's backup (0 before the first is saved)."""
    try:
        return json.loads((run_dir / "backup" / "training_metadata.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0
