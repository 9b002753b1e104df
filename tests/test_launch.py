"""`python -m keras_encoder.launch`: TF_CONFIG, output, failures, signals, timeout, errors.

The workers are tiny plain-Python scripts written to `tmp_path`, not
TensorFlow. Every process is started with a timeout, so that a launcher bug
fails a test instead of hanging the suite.
"""

import json
import os
import pathlib
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from keras_encoder.errors import ConfigError
from keras_encoder.launch import launch, tf_config

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Seconds any launcher, or any wait on one, may take before the test fails.
LIMIT = 30
# Opens every worker script: its TF_CONFIG, index, and the folder it writes to.
PREAMBLE = """\
import json, os, pathlib, signal, sys, time
CONFIG = json.loads(os.environ["TF_CONFIG"])
INDEX = CONFIG["task"]["index"]
OUT = pathlib.Path(__file__).parent


def wait_for(name):
    deadline = time.monotonic() + 20
    while not (OUT / name).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
"""


def _script(tmp_path, body):
    path = tmp_path / "worker.py"
    path.write_text(PREAMBLE + textwrap.dedent(body))
    return path


def _env(tmp_path):
    """This environment without TF_CONFIG; default log directories go under `tmp_path`."""
    env = {name: value for name, value in os.environ.items() if name != "TF_CONFIG"}
    return dict(env, TMPDIR=str(tmp_path))


def _command(*argv):
    return [sys.executable, "-m", "keras_encoder.launch", *map(str, argv)]


def _run(tmp_path, *argv):
    return subprocess.run(
        _command(*argv), cwd=REPO_ROOT, env=_env(tmp_path), capture_output=True, text=True,
        timeout=LIMIT,
    )


def _wait_for_files(paths):
    deadline = time.monotonic() + LIMIT
    while not all(path.exists() for path in paths):
        assert time.monotonic() < deadline, f"workers never wrote {paths}"
        time.sleep(0.02)


def test_tf_config_names_the_cluster_and_the_task():
    assert json.loads(tf_config([2222, 2223], 1)) == {
        "cluster": {"worker": ["localhost:2222", "localhost:2223"]},
        "task": {"type": "worker", "index": 1},
    }


def test_tf_config_rejects_an_index_outside_the_cluster():
    with pytest.raises(ConfigError, match="index=2"):
        tf_config([2222, 2223], 2)


@pytest.mark.parametrize("workers, port_base", [(1, None), (3, None), (2, 23456)])
def test_each_worker_gets_its_own_tf_config(tmp_path, workers, port_base):
    script = _script(
        tmp_path,
        """
        (OUT / f"seen-{INDEX}.json").write_text(json.dumps({
            "tf_config": os.environ["TF_CONFIG"],
            "argv": sys.argv[1:],
            "unbuffered": os.environ.get("PYTHONUNBUFFERED"),
        }))
        """,
    )
    port_flags = [] if port_base is None else ["--port-base", port_base]
    # The script's own flags, `--workers` included, reach the script untouched.
    result = _run(tmp_path, "--workers", workers, *port_flags, script, "--epochs", "3", "--workers", "9")
    assert result.returncode == 0, result.stderr

    seen = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("seen-*.json"))]
    assert len(seen) == workers
    configs = [json.loads(entry["tf_config"]) for entry in seen]
    assert [config["task"] for config in configs] == [
        {"type": "worker", "index": index} for index in range(workers)
    ]
    cluster = configs[0]["cluster"]
    assert all(config["cluster"] == cluster for config in configs)
    assert list(cluster) == ["worker"] and len(cluster["worker"]) == workers
    hosts, ports = zip(*(address.split(":") for address in cluster["worker"]))
    assert set(hosts) == {"localhost"}
    assert len(set(ports)) == workers and all(0 < int(port) < 65536 for port in ports)
    if port_base is not None:
        assert [int(port) for port in ports] == list(range(port_base, port_base + workers))
    assert all(entry["argv"] == ["--epochs", "3", "--workers", "9"] for entry in seen)
    assert all(entry["unbuffered"] == "1" for entry in seen)


def test_chief_output_reaches_stdout_and_the_others_go_to_logs(tmp_path):
    script = _script(
        tmp_path,
        """
        print(f"stdout of worker {INDEX}")
        print(f"stderr of worker {INDEX}", file=sys.stderr)
        """,
    )
    logs = tmp_path / "logs"
    result = _run(tmp_path, "--workers", 3, "--log-dir", logs, script)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "stdout of worker 0\n"
    assert "stderr of worker 0" in result.stderr
    assert "worker 1" not in result.stdout + result.stderr.replace(str(logs), "")
    for index in (1, 2):
        log = (logs / f"worker-{index}.log").read_text()
        assert f"stdout of worker {index}" in log and f"stderr of worker {index}" in log
    assert not (logs / "worker-0.log").exists()


def test_chief_output_streams_while_it_runs(tmp_path):
    script = _script(
        tmp_path,
        """
        print("first line")
        wait_for("go")
        print("second line")
        """,
    )
    launcher = subprocess.Popen(_command("--workers", 2, script), cwd=REPO_ROOT, env=_env(tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        readable, _, _ = select.select([launcher.stdout], [], [], LIMIT)
        assert readable, "the chief's first line never arrived"
        assert launcher.stdout.readline() == b"first line\n"
        assert launcher.poll() is None
        (tmp_path / "go").touch()
        rest, _ = launcher.communicate(timeout=LIMIT)
        assert rest == b"second line\n"
        assert launcher.returncode == 0
    finally:
        launcher.kill()
        launcher.stdout.close()


@pytest.mark.parametrize("failing", [1, 0], ids=["worker", "chief"])
def test_a_failing_worker_stops_the_others(tmp_path, failing):
    script = _script(
        tmp_path,
        f"""
        if INDEX == {failing}:
            for number in range(30):
                print(f"line {{number}}")
            sys.exit(3)
        (OUT / f"pid-{{INDEX}}").write_text(str(os.getpid()))
        time.sleep(60)
        """,
    )
    started = time.monotonic()
    result = _run(tmp_path, "--workers", 3, "--log-dir", tmp_path / "logs", script)

    assert result.returncode == 3
    assert time.monotonic() - started < 20
    for path in tmp_path.glob("pid-*"):
        with pytest.raises(ProcessLookupError):
            os.kill(int(path.read_text()), 0)
    if failing == 0:
        assert "worker 0 (the chief) exited with code 3" in result.stderr
        assert result.stdout.splitlines()[-1] == "line 29"
    else:
        header = next(line for line in result.stderr.splitlines() if "exited with code" in line)
        assert "worker 1 exited with code 3" in header
        tail = [line for line in result.stderr.splitlines() if line.startswith("[worker 1] ")]
        assert tail == [f"[worker 1] line {number}" for number in range(10, 30)]


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace(tmp_path, capsys):
    script = _script(
        tmp_path,
        """
        if INDEX == 1:
            wait_for("ready-0")
            sys.exit(4)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        (OUT / "ready-0").touch()
        time.sleep(60)
        """,
    )
    handler = signal.getsignal(signal.SIGINT)
    started = time.monotonic()

    assert launch(str(script), [], 2, log_dir=str(tmp_path / "logs"), grace=0.5) == 4
    assert time.monotonic() - started < 15
    assert signal.getsignal(signal.SIGINT) is handler
    assert "worker 1 exited with code 4" in capsys.readouterr().err


def test_sigint_is_forwarded_to_every_worker(tmp_path):
    script = _script(
        tmp_path,
        """
        def stop(number, frame):
            (OUT / f"sigint-{INDEX}").write_text(str(number))
            sys.exit(0)

        signal.signal(signal.SIGINT, stop)
        (OUT / f"ready-{INDEX}").touch()
        time.sleep(60)
        """,
    )
    launcher = subprocess.Popen(_command("--workers", 3, script), cwd=REPO_ROOT, env=_env(tmp_path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_files([tmp_path / f"ready-{index}" for index in range(3)])
        launcher.send_signal(signal.SIGINT)
        _, stderr = launcher.communicate(timeout=LIMIT)
    finally:
        launcher.kill()
    # Every worker exited 0 on its own; the code says the run was interrupted.
    assert launcher.returncode == 130, stderr
    for index in range(3):
        assert (tmp_path / f"sigint-{index}").read_text() == str(int(signal.SIGINT))
    assert "SIGINT" in stderr


def test_timeout_stops_the_run_with_124(tmp_path):
    script = _script(tmp_path, "time.sleep(60)\n")
    started = time.monotonic()
    result = _run(tmp_path, "--workers", 2, "--timeout", 1, script)
    assert result.returncode == 124
    assert time.monotonic() - started < 15
    assert "timed out after 1 s" in result.stderr


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--workers", "0"], ["--workers", "'0'"]),
        (["--workers", "two"], ["--workers", "'two'"]),
        (["--workers", "2", "--timeout", "-1"], ["--timeout", "'-1'"]),
    ],
)
def test_a_bad_flag_is_one_sentence_and_exit_code_2(tmp_path, flags, named):
    result = _run(tmp_path, *flags, _script(tmp_path, ""))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert all(word in result.stderr for word in named), result.stderr


def test_a_missing_script_is_one_sentence_and_exit_code_2(tmp_path):
    missing = tmp_path / "missing.py"
    result = _run(tmp_path, "--workers", 2, missing)
    assert result.returncode == 2
    assert result.stderr == f"python -m keras_encoder.launch: error: script {str(missing)!r} is not a file.\n"


@pytest.mark.parametrize(
    "workers, script, match",
    [(0, "worker.py", "workers=0"), (2, "missing.py", "missing.py' is not a file")],
)
def test_launch_rejects_bad_arguments_before_starting_anything(tmp_path, workers, script, match):
    _script(tmp_path, "")
    with pytest.raises(ConfigError, match=match):
        launch(str(tmp_path / script), [], workers)


def test_help_does_not_import_tensorflow(tmp_path):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "keras_encoder.launch", "--help"],
        cwd=REPO_ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=LIMIT,
    )
    assert result.returncode == 0 and "--workers" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "keras_encoder" in imported  # the package; the module itself runs as __main__
    assert not {name for name in imported if name.split(".")[0] in ("tensorflow", "keras")}
