"""Start a multi-worker run on this machine: `python -m keras_encoder.launch`.

Examples:

    python -m keras_encoder.launch --workers 2 train.py --data my.csv
    python -m keras_encoder.launch --workers 4 --timeout 3600 --log-dir logs/launch train.py --epochs 3
    python -m keras_encoder.launch --workers 2 --port-base 23456 my_script.py --flag value

SCRIPT is a training script that builds its model under
`tf.distribute.MultiWorkerMirroredStrategy`, such as `train.py`.
Each of the N workers runs
`python SCRIPT ARGS...` with its own `TF_CONFIG`
environment variable, which `tf.distribute.MultiWorkerMirroredStrategy`
reads to find its peers: the same cluster of N `localhost` ports for every
worker (free ports, or PORT_BASE, PORT_BASE+1, ... with --port-base) and
the worker's own index. Worker 0 is the chief: its output appears here, live.
Workers 1..N-1 write theirs to `worker-<i>.log` in --log-dir (default: a
new temporary directory, named at start and kept afterwards); when one of
them fails, the end of its log is printed.

The launcher exits 0 when every worker exits 0. When a worker fails, the
others are stopped (SIGTERM, then SIGKILL after a few seconds) and the
launcher exits with the failing worker's code (128 + N for a worker killed
by signal N). Ctrl-C (SIGINT) and SIGTERM are forwarded to every worker,
which then has the same few seconds to exit (130 for SIGINT, 143 for
SIGTERM; a second Ctrl-C kills at once). --timeout bounds the whole run:
on expiry the workers are stopped and the launcher exits 124. Each worker
runs in its own process group, so whatever it starts is stopped with it
(POSIX only).

On a real cluster there is no launcher: start the same command on every
machine, each with a `TF_CONFIG` that lists all workers in the same order
and gives that machine's own index. On host-a:

    export TF_CONFIG='{"cluster": {"worker": ["host-a:12345", "host-b:12345"]},
                       "task": {"type": "worker", "index": 0}}'
    python train.py --data my.csv

and on host-b the same command with `"index": 1`. Worker 0 is the chief.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from keras_encoder.errors import ConfigError, KerasEncoderError

PROG = "python -m keras_encoder.launch"
# Seconds a worker has to exit after SIGTERM or a forwarded signal before it
# is killed: enough to finish a write, short enough that nothing hangs.
GRACE_SECONDS = 5.0
# Lines of a failed worker's log printed with its exit code.
TAIL_LINES = 20
# The exit code of timeout(1), which scripts already test for.
TIMEOUT_EXIT_CODE = 124
_POLL_SECONDS = 0.05
_TAIL_BYTES = 64 * 1024
_FORWARDED = (signal.SIGINT, signal.SIGTERM)


def tf_config(ports, index):
    """The `TF_CONFIG` JSON of one worker in a cluster of workers on localhost.

    Args:
        ports: sequence of int. One port per worker, in worker order.
        index: int. This worker's position in `ports`; worker 0 is the chief.

    Returns:
        str. JSON with the cluster (the same for every worker) and this
        worker's task.

    Raises:
        ConfigError: if `index` is not a position in `ports`.

    Example:

    >>> tf_config([2222, 2223], 1)
    '{"cluster": {"worker": ["localhost:2222", "localhost:2223"]}, "task": {"type": "worker", "index": 1}}'
    """
    ports = list(ports)
    if not 0 <= index < len(ports):
        raise ConfigError(
            f"index must be a worker's position among the {len(ports)} ports. Received: index={index}"
        )
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def launch(
    script,
    args,
    workers,
    *,
    port_base=None,
    timeout=None,
    log_dir=None,
    grace=GRACE_SECONDS,
):
    """Run `python script *args` as `workers` workers on this machine; wait for them.

    Worker 0 (the chief) streams its stdout and stderr to this process's
    `sys.stdout` and `sys.stderr`, line by line; the other workers write
    `worker-<i>.log` in `log_dir`. When a worker fails, the others get
    SIGTERM and, `grace` seconds later, SIGKILL. Called from the main
    thread, SIGINT and SIGTERM sent to this process are forwarded to every
    worker for the duration of the call.

    Args:
        script: str. Path of the Python script each worker runs.
        args: sequence of str. Command-line arguments of the script.
        workers: int. Number of worker processes, at least 1.
        port_base: int or `None`. Worker i listens on `port_base + i`.
            Defaults to `None`: ports the OS reports free.
        timeout: float or `None`. Seconds after which the run is stopped.
            Defaults to `None`: no limit.
        log_dir: str or `None`. Directory of the non-chief workers' logs,
            created if needed. Defaults to `None`: a new temporary directory.
        grace: float. Seconds a worker has to exit after it is asked to stop.
            Defaults to `GRACE_SECONDS`.

    Returns:
        int. 0 when every worker exited 0; otherwise the first failing
        worker's exit code (128 + N for signal N), 124 on timeout, or
        128 + N when this process received signal N.

    Raises:
        ConfigError: if an argument is out of range or `script` is not a file.

    Example:

    >>> exit_code = launch("my_training.py", ["--epochs", "3"], 2)
    """
    _check_arguments(script, workers, port_base, timeout, grace)
    ports = _free_ports(workers) if port_base is None else list(range(port_base, port_base + workers))
    if workers > 1:
        log_dir = log_dir or tempfile.mkdtemp(prefix="keras_encoder_launch_")
        os.makedirs(log_dir, exist_ok=True)
        _say(
            f"{workers} workers on localhost ports {', '.join(map(str, ports))}; worker 0 "
            f"(the chief) prints here, the others write {os.path.join(log_dir, 'worker-<i>.log')}."
        )
    received = []
    previous_handlers = _catch_signals(received)
    running = []
    try:
        for index in range(workers):
            running.append(_Worker(index, script, args, ports, log_dir))
        return _supervise(running, received, timeout, grace)
    finally:
        for worker in running:
            worker.kill()
        for worker in running:
            worker.finish()
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)


def _check_arguments(script, workers, port_base, timeout, grace):
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer. Received: workers={workers!r}")
    if not os.path.isfile(script):
        raise ConfigError(f"script {script!r} is not a file.")
    if port_base is not None and not 1 <= port_base <= 65536 - workers:
        raise ConfigError(
            f"port_base must leave room for {workers} ports below 65536. Received: port_base={port_base}"
        )
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"timeout must be a positive number of seconds. Received: timeout={timeout}")
    if not grace >= 0:
        raise ConfigError(f"grace must be a number of seconds, at least 0. Received: grace={grace}")


def _free_ports(count):
    """`count` distinct ports that the OS reports free now (bound to port 0 together)."""
    sockets = []
    try:
        for _ in range(count):
            sockets.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sockets[-1].bind(("", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _catch_signals(received):
    """Record SIGINT and SIGTERM in `received`; return the handlers they replace."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may set handlers; the caller's stay
    previous = {}
    for signum in _FORWARDED:
        handler = signal.signal(signum, lambda number, frame: received.append(number))
        # `None` marks a handler set outside Python; the default is the nearest.
        previous[signum] = signal.SIG_DFL if handler is None else handler
    return previous


class _Worker:
    """One worker process, in its own process group, and where its output goes."""

    def __init__(self, index, script, args, ports, log_dir):
        self.index = index
        env = dict(os.environ, TF_CONFIG=tf_config(ports, index), PYTHONUNBUFFERED="1")
        command = [sys.executable, script, *args]
        # Own session: a terminal's Ctrl-C reaches the launcher only, which
        # forwards it once, and a signal to the group reaches what the worker started.
        options = dict(env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        self.pumps = []
        if index == 0:
            self.log_path = None
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options
            )
            for pipe, sink in ((self.process.stdout, sys.stdout), (self.process.stderr, sys.stderr)):
                self.pumps.append(threading.Thread(target=_pump, args=(pipe, sink), daemon=True))
                self.pumps[-1].start()
        else:
            self.log_path = os.path.join(log_dir, f"worker-{index}.log")
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **options)

    def poll(self):
        return self.process.poll()

    def signal(self, signum):
        """Send `signum` to the worker's process group, unless the worker has been reaped."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass  # exited between the poll and the signal

    def kill(self):
        self.signal(signal.SIGKILL)

    def finish(self):
        """Reap the process and let the chief's last lines through."""
        self.process.wait()
        for pump in self.pumps:
            pump.join(timeout=2.0)  # a grandchild outside the group may hold the pipe open


def _pump(pipe, sink):
    """Copy a worker's pipe to `sink` line by line until the worker closes it."""
    with pipe:
        for line in iter(pipe.readline, b""):
            try:
                sink.write(line.decode("utf-8", "replace"))
                sink.flush()
            except (OSError, ValueError):
                pass  # our own stream is closed; keep draining so the chief never blocks


def _supervise(workers, received, timeout, grace):
    """Wait for every worker; stop them all on a failure, a signal or the timeout."""
    exit_code = 0
    started = time.monotonic()
    kill_at = None  # set when the workers have been asked to stop
    handled = 0  # signals in `received` already acted on
    exited = set()
    while len(exited) < len(workers):
        now = time.monotonic()
        for signum in received[handled:]:
            name = signal.Signals(signum).name
            if handled == 0:
                _say(f"{name} received; forwarding it to the workers (send it again to kill them).")
                for worker in workers:
                    worker.signal(signum)
                exit_code, kill_at = 128 + signum, now + grace
            else:
                _say(f"{name} received again; killing the workers.")
                kill_at = now
            handled += 1
        for worker in workers:
            code = worker.poll()
            if code is None or worker.index in exited:
                continue
            exited.add(worker.index)
            if code != 0 and kill_at is None:
                _report_failure(worker, code)
                for other in workers:
                    other.signal(signal.SIGTERM)
                exit_code, kill_at = _exit_code(code), now + grace
        if kill_at is None and timeout is not None and now - started >= timeout:
            _say(f"the run timed out after {timeout:g} s; stopping the workers.")
            for worker in workers:
                worker.signal(signal.SIGTERM)
            exit_code, kill_at = TIMEOUT_EXIT_CODE, now + grace
        if kill_at is not None and now >= kill_at:
            for worker in workers:
                worker.kill()
        time.sleep(_POLL_SECONDS)
    return exit_code


def _exit_code(returncode):
    """A shell's exit code for a `Popen.returncode`: 128 + N for a death by signal N."""
    return returncode if returncode > 0 else 128 - returncode


def _describe(returncode):
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name} (exit code {_exit_code(returncode)})"
    return f"exited with code {returncode}"


def _report_failure(worker, returncode):
    if worker.log_path is None:
        _say(f"worker 0 (the chief) {_describe(returncode)}; stopping the other workers.")
        return
    lines = _tail(worker.log_path)
    _say(
        f"worker {worker.index} {_describe(returncode)}; stopping the other workers. "
        f"The last {len(lines)} lines of {worker.log_path}:"
    )
    for line in lines:
        print(f"[worker {worker.index}] {line}", file=sys.stderr)
    sys.stderr.flush()


def _tail(path, count=TAIL_LINES):
    """The last `count` lines of a file, read from its end."""
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        file.seek(max(0, file.tell() - _TAIL_BYTES))
        return file.read().decode("utf-8", "replace").splitlines()[-count:]


def _say(sentence):
    print(f"launch: {sentence}", file=sys.stderr, flush=True)


class _ArgumentParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line, without the usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _checked(convert, expected):
    """An argparse `type` that converts a flag's text and keeps values above 0."""

    def check(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise argparse.ArgumentTypeError(f"expected {expected}, received {text!r}")
        return value

    return check


def _parser():
    description, epilog = __doc__.split("\n\n", 1)
    parser = _ArgumentParser(
        prog=PROG,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--workers", required=True, metavar="N", type=_checked(int, "a positive integer"),
        help="worker processes to start; worker 0 is the chief",
    )
    parser.add_argument(
        "--port-base", metavar="PORT", type=_checked(int, "a port number"),
        help="worker i listens on PORT+i (default: free ports)",
    )
    parser.add_argument(
        "--timeout", metavar="SECONDS", type=_checked(float, "a positive number of seconds"),
        help="stop the workers and exit 124 after this long (default: no limit)",
    )
    parser.add_argument(
        "--log-dir", metavar="DIR",
        help="directory of worker-<i>.log for workers 1..N-1 (default: a new temporary directory)",
    )
    parser.add_argument("script", metavar="SCRIPT.py", help="the Python script every worker runs")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="arguments of the script")
    return parser


def main(argv=None):
    """Run the command line `python -m keras_encoder.launch`; return its exit code.

    Args:
        argv: list of str or `None`. The arguments after the program name.
            Defaults to `None`: `sys.argv[1:]`.

    Returns:
        int. The exit code of `launch`, or 2 for a bad argument.
    """
    flags = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return launch(
            flags.script,
            flags.args,
            flags.workers,
            port_base=flags.port_base,
            timeout=flags.timeout,
            log_dir=flags.log_dir,
        )
    except KerasEncoderError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
