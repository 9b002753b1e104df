"""Run directories: find or create `<logdir>/<run-name>/`, and read what a run left.

A run directory is finished once it holds `metrics.json`; a finished run
is never touched again. An unfinished one with the same `config.json` is
resumed; one with another config is left alone and the new run gets a
numbered name (`reviews-2`).
"""

import csv
import json
import os
import zipfile

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"


def open_run_dir(config, echo=print):
    """Return `(run_dir, resumed)`, creating the directory of a new run."""
    base = os.path.join(config.logdir, config.run_name)
    wanted = config.to_dict()
    for number in range(1, 10_000):
        run_dir = base if number == 1 else f"{base}-{number}"
        if not os.path.exists(run_dir):
            break
        if os.path.exists(os.path.join(run_dir, METRICS_FILE)):
            continue  # finished: never touched again
        if _same_run(read_json(os.path.join(run_dir, CONFIG_FILE)), wanted):
            echo(f"Resuming the unfinished run in {run_dir}")
            return run_dir, True
    if number > 1:
        echo(f"{base} holds another run; this one goes to {run_dir}")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, CONFIG_FILE), "w", encoding="utf-8") as handle:
        handle.write(config.to_json())
    return run_dir, False


def _same_run(stored, wanted):
    """Whether a stored config is `wanted`; a field the stored one predates
    counts as its default (which that run used)."""
    if stored is None:
        return False
    import dataclasses

    from keras_encoder.training.config import TrainConfig

    defaults = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    for name, value in wanted.items():
        if name not in stored and name in defaults and value == defaults[name]:
            stored = {**stored, name: value}
    return stored == wanted


def read_history(run_dir):
    """The rows of `history.csv`, one per finished epoch, as floats."""
    path = os.path.join(run_dir, "history.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    # An epoch redone after an interruption appears twice: keep the last.
    by_epoch = {}
    for row in rows:
        try:
            values = {key: float(value) for key, value in row.items() if value not in ("", "NA", None)}
            if "val_loss" in values:
                by_epoch[int(values["epoch"])] = values
        except (KeyError, TypeError, ValueError):
            continue  # a row cut short by a kill
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def best_epoch(history, monitor):
    """The history row best by `monitor` (`(name, mode)`), or `{}`."""
    name, mode = monitor
    rows = [row for row in history if name in row]
    if not rows:
        return {}
    pick = min if mode == "min" else max
    return pick(rows, key=lambda row: row[name])


def is_complete_zip(path):
    """Whether `path` is a whole zip archive (a `.keras` file not cut short)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def read_json(path):
    """The JSON value in `path`, or `None` if it is missing or cut short."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json(path, values):
    """Write atomically: a crash leaves the old file or none, never half."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(values, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    os.replace(temporary, path)
