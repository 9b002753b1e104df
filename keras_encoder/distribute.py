"""Data-parallel training on `tf.distribute`: the strategy from the environment.

`strategy_from_environment()` picks what `train.py` trains under:

- `TF_CONFIG` naming a cluster: `tf.distribute.MultiWorkerMirroredStrategy`,
  one replica per worker (`python -m keras_encoder.launch` sets it for
  workers on this machine);
- several local GPUs: `tf.distribute.MirroredStrategy`;
- otherwise the default strategy (one device).

Keras 3 does not train under `MultiWorkerMirroredStrategy` as it is
(keras-team/keras#20585): its trainer reduces every scalar step log with
`strategy.reduce("MEAN", value, axis=0)`, which fails on a 0-d tensor, and
its symbolic build reduces the whole first batch, a tuple, which the
collective reduce cannot take. `EncoderTask` works around both in its own
methods (see `multi_worker_logs` and `zeros_like_spec`), so every task
model trains on several workers with an unpatched Keras. And Keras clips
each replica's share of the gradient before summing the shares;
`keras_encoder.training.optimizer.AdamW` sums first, so that N workers
train as one device does on the same global batches.

Every worker must start the same collective operations in the same
order, and creating a variable inside the strategy's scope is one. So
every worker runs the same callbacks (only the chief's run directory is
real; the others write to a temporary directory that they delete), and
`fit` runs outside the scope, where the chief alone may load a backup.
`chief_state_callback` then copies the chief's restored weights,
optimizer state and epoch to every worker (`from_chief`), so a resume
needs the run directory only on the chief.
"""

import dataclasses
import json
import os
import select
import signal
import socket
import subprocess
import sys

from keras_encoder.errors import ConfigError

# Seconds a worker waits for every other worker of its cluster to start
# before it gives up with the addresses it could not reach.
CONNECT_TIMEOUT_ENV = "KERAS_ENCODER_CONNECT_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT = 120.0
_TASK_TYPES = ("chief", "worker")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's place in a `TF_CONFIG` cluster.

    Attributes:
        addresses: tuple of `host:port`, the chief (if the cluster names
            one) first, then the workers in order.
        index: this process's position in `addresses`.
    """

    addresses: tuple
    index: int

    @property
    def num_workers(self):
        return len(self.addresses)

    @property
    def is_chief(self):
        """Worker 0 (or the `chief` task) writes the run's files."""
        return self.index == 0


def read_tf_config(text):
    """The `Cluster` a `TF_CONFIG` value describes.

    Args:
        text: str. The JSON of `TF_CONFIG`: `{"cluster": {"worker": [...]},
            "task": {"type": "worker", "index": i}}`, optionally with one
            `"chief"` address besides the workers.

    Returns:
        A `Cluster`.

    Raises:
        ConfigError: naming what in `TF_CONFIG` is wrong.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"TF_CONFIG is not JSON ({error}): {text[:200]!r}") from None
    cluster = value.get("cluster") if isinstance(value, dict) else None
    task = value.get("task") if isinstance(value, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError(
            'TF_CONFIG needs a "cluster" and a "task": {"cluster": {"worker": ["host:port", ...]}, '
            f'"task": {{"type": "worker", "index": 0}}}}. Received: {text[:200]!r}'
        )
    other = sorted(set(cluster) - set(_TASK_TYPES))
    if other:
        raise ConfigError(
            f"TF_CONFIG's cluster has {', '.join(map(repr, other))} jobs; train.py trains "
            "data-parallel on workers (and an optional chief) only, with no parameter servers "
            "or evaluators."
        )
    groups = {}
    for kind in _TASK_TYPES:
        addresses = cluster.get(kind, [])
        if not isinstance(addresses, list) or not all(map(_is_address, addresses)):
            raise ConfigError(
                f'TF_CONFIG\'s cluster "{kind}" must be a list of "host:port" strings. '
                f"Received: {addresses!r}"
            )
        groups[kind] = addresses
    if len(groups["chief"]) > 1:
        raise ConfigError(f'TF_CONFIG names {len(groups["chief"])} chiefs; a cluster has at most one.')
    if not groups["worker"] and not groups["chief"]:
        raise ConfigError('TF_CONFIG\'s cluster names no "worker" addresses.')
    addresses = groups["chief"] + groups["worker"]
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"TF_CONFIG's cluster names an address twice: {addresses}")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in _TASK_TYPES:
        raise ConfigError(f'TF_CONFIG\'s task "type" must be "worker" or "chief". Received: {kind!r}')
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(groups[kind]):
        raise ConfigError(
            f'TF_CONFIG\'s task "index" must be 0..{len(groups[kind]) - 1} for its '
            f'{len(groups[kind])} "{kind}" addresses. Received: {index!r}'
        )
    return Cluster(tuple(addresses), index + (len(groups["chief"]) if kind == "worker" else 0))


def _is_address(value):
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def connect_timeout(environ=None):
    """Seconds to wait for the cluster: `KERAS_ENCODER_CONNECT_TIMEOUT`, or 120."""
    environ = os.environ if environ is None else environ
    text = environ.get(CONNECT_TIMEOUT_ENV)
    if text is None:
        return DEFAULT_CONNECT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{CONNECT_TIMEOUT_ENV} must be a positive number of seconds. Received: {text!r}")
    return seconds


def strategy_from_environment(environ=None, echo=print):
    """`(strategy, cluster)`: the strategy to train under, and the cluster or `None`.

    Call it first, before any other TensorFlow operation runs: a
    multi-worker strategy configures the runtime's collectives at start-up.

    Args:
        environ: mapping. Defaults to `os.environ`.
        echo: function that prints a progress line.

    Raises:
        ConfigError: for a malformed `TF_CONFIG`.

    When the other workers do not join within `connect_timeout()` seconds,
    the process prints which addresses did not answer and is killed
    (exit code 137): the wait cannot be interrupted otherwise.
    """
    import tensorflow as tf

    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG")
    if text:
        cluster = read_tf_config(text)
        timeout = connect_timeout(environ)
        echo(
            f"Worker {cluster.index} of {cluster.num_workers} "
            f"({'the chief' if cluster.is_chief else 'writes to a temporary directory'}); "
            f"waiting up to {timeout:g} s for the others"
        )
        return _multi_worker_strategy(cluster, timeout), cluster
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        echo(f"MirroredStrategy over {strategy.num_replicas_in_sync} GPUs")
        return strategy, None
    return tf.distribute.get_strategy(), None


def _multi_worker_strategy(cluster, timeout):
    """`MultiWorkerMirroredStrategy`, or a message and an exit after `timeout` seconds.

    The strategy's constructor waits in C++, without a limit and deaf to
    signals that Python would handle, until every worker's runtime has
    joined. A watchdog process waits beside it: when the constructor
    returns, the watchdog's stdin closes and it leaves; when `timeout`
    passes first, it names the addresses where nothing answers and kills
    this process (exit code 137).
    """
    import tensorflow as tf

    watchdog = subprocess.Popen(
        [sys.executable, "-c", "from keras_encoder.distribute import _watch; _watch()",
         str(os.getpid()), str(timeout), str(cluster.index), *cluster.addresses],
        stdin=subprocess.PIPE,
    )
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    finally:
        watchdog.stdin.close()
        watchdog.wait()


def _watch():
    """The watchdog of `_multi_worker_strategy` (argv: pid, timeout, index, addresses)."""
    parent, timeout, index, addresses = (
        int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    )
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    if ready:  # end of file: the strategy was built, or the worker has gone
        return
    silent = [address for i, address in enumerate(addresses) if i != index and not _answers(address)]
    where = ", ".join(silent) or "(every address answers, but not every worker joined)"
    print(
        f"error: Worker {index} waited {timeout:g} s for the cluster in TF_CONFIG and gave up: "
        f"nothing answers at {where}. Start every worker with the same TF_CONFIG cluster "
        f"(or raise {CONNECT_TIMEOUT_ENV}).",
        file=sys.stderr, flush=True,
    )
    os.kill(parent, signal.SIGKILL)


def _answers(address):
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            return True
    except OSError:
        return False


def is_multi_worker(strategy):
    """Whether `strategy` spans several workers (several processes)."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        strategy.extended._in_multi_worker_mode()
    )


def multi_worker_logs(strategy, logs):
    """Step logs that Keras' multi-worker reduction can take.

    Keras reduces each log with `strategy.reduce("MEAN", value, axis=0)`
    across workers: a 0-d log has no axis 0, so each becomes shape `(1,)`,
    and the reduction gives back a scalar.
    """
    import tensorflow as tf

    if not is_multi_worker(strategy):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def zeros_like_spec(element_spec):
    """A batch of zeros with the shapes and dtypes of `element_spec` (unknown sizes: 1)."""
    import tensorflow as tf

    return tf.nest.map_structure(
        lambda spec: tf.zeros([size or 1 for size in spec.shape], spec.dtype), element_spec
    )


def chief_state_callback(strategy, cluster):
    """A callback that gives every worker the chief's state at the start of `fit`.

    It runs after `BackupAndRestore` (and the adapter restorer): on a
    resumed run the chief has just loaded its backup and set the epoch to
    start from, while the other workers, whose run directories are
    temporary, have nothing to load. Each variable of the model and the
    optimizer, and the starting epoch, is summed over the workers with
    every worker but the chief contributing zero: a broadcast built from
    the one collective every strategy has.
    """
    import keras
    import tensorflow as tf

    class ChiefState(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if cluster is None or cluster.num_workers == 1:
                return
            model = self.model
            seen, variables = set(), []
            for variable in [*model.variables, *(model.optimizer.variables if model.optimizer else [])]:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    variables.append(variable)
            epoch = tf.constant(int(model._initial_epoch or 0), tf.int64)

            reduced = from_chief(strategy, cluster, [epoch, *(variable.value for variable in variables)])
            for variable, value in zip(variables, reduced[1:]):
                variable.assign(value)
            model._initial_epoch = int(reduced[0].numpy()) or None

    return ChiefState()


def barrier(strategy):
    """Wait until every worker of `strategy` gets here (a one-number all-reduce).

    The workers other than the chief wait here for the chief to finish
    evaluating and exporting: a worker that leaves early looks, to the
    chief's runtime, like a worker that crashed.
    """
    import tensorflow as tf

    if not is_multi_worker(strategy):
        return

    @tf.function
    def meet():
        return strategy.run(
            lambda: tf.distribute.get_replica_context().all_reduce("SUM", tf.constant(1.0))
        )

    meet()


def from_chief(strategy, cluster, values):
    """The chief's `values` (a list of tensors), on every worker.

    Each value is summed over the workers with every worker but the
    chief contributing zero: a broadcast built from the one collective
    every strategy has. One all-reduce per dtype (a list all-reduce packs
    its tensors together).
    """
    import tensorflow as tf

    if cluster is None or cluster.num_workers == 1:
        return list(values)
    values = [tf.convert_to_tensor(value) for value in values]
    keep = 1 if cluster.is_chief else 0
    groups = {}
    for position, value in enumerate(values):
        groups.setdefault(value.dtype, []).append(position)

    @tf.function
    def broadcast():
        def replica_fn():
            context = tf.distribute.get_replica_context()
            return [
                context.all_reduce("SUM", [values[i] * tf.cast(keep, values[i].dtype) for i in positions])
                for positions in groups.values()
            ]

        return strategy.run(replica_fn)

    reduced = [None] * len(values)
    for positions, group in zip(groups.values(), broadcast()):
        for position, value in zip(positions, group):
            reduced[position] = strategy.experimental_local_results(value)[0]
    return reduced
