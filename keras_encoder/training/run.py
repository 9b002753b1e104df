"""`run(config)`: one training run from data to SavedModel.

Every run owns one directory, `<logdir>/<run-name>/`:

    config.json        the resolved TrainConfig
    vocab.txt          tokenizer vocabulary (+ tokenizer.json)
    train/ validation/ TensorBoard event files: curves, attention maps,
                       confusion matrices
    history.csv        one row per finished epoch
    checkpoints/       best.keras (best by --monitor)
    backup/            resume state while training is unfinished
    model.keras        the best model, after training
    export/            SavedModel taking raw strings
    metrics.json       test-split results; written last, it marks success

Running the same command again resumes an unfinished run of the same
config (from its last finished epoch); a finished run, or an unfinished
run of another config, is left alone and the new run gets a numbered name.
"""

import csv
import json
import os
import shutil
import time
import zipfile

import keras

from keras_encoder.data.pipeline import masked_lm_dataset
from keras_encoder.errors import KerasEncoderError
from keras_encoder.models import build_encoder, build_masked_lm
from keras_encoder.optimizers import SparseAdamW
from keras_encoder.text import Tokenizer
from keras_encoder.training.callbacks import AttentionMapCallback
from keras_encoder.training.config import TrainConfig
from keras_encoder.training.tasks import make_task

METRICS_FILE = "metrics.json"
STATE_FILE = "state.json"


def run(config: TrainConfig, echo=print):
    """Train, evaluate on the test split and export; return the metrics dict."""
    config.validate()
    keras.utils.set_random_seed(config.seed)

    # === Data (errors surface before anything is written) ===
    task = make_task(config, echo)
    monitor = task.monitor(config.monitor)  # (name, "min" or "max")
    sizes = task.sizes()
    echo(
        f"Split (seed {config.seed}): {sizes['train']} train, "
        f"{sizes['validation']} validation, {sizes['test']} test"
    )

    run_dir, resumed = _open_run_dir(config, echo)

    # === Tokenizer: learned on the training split only ===
    if resumed and os.path.exists(os.path.join(run_dir, "vocab.txt")):
        tokenizer = Tokenizer.load(run_dir)
    else:
        tokenizer = Tokenizer.learn(
            task.texts("train"),
            vocabulary_size=config.vocabulary_size,
            sequence_length=config.max_length,
        )
        tokenizer.save(run_dir)
    echo(f"Vocabulary: {tokenizer.vocabulary_size} tokens (learned on the train split)")
    task.prepare(tokenizer)

    # === Training: optional masked-LM pretraining, then fine-tuning ===
    state_path = os.path.join(run_dir, STATE_FILE)
    state = _read_json(state_path) or {}
    encoder_config = config.encoder_config(tokenizer.vocabulary_size, task.name)
    pretrained_path = os.path.join(run_dir, "pretrain", "encoder.weights.h5")
    if config.pretrain_epochs and not state.get("pretrained"):
        _pretrain(config, encoder_config, run_dir, tokenizer, task.ids, pretrained_path, echo)
        state["pretrained"] = True
        _write_json(state_path, state)
    if not state.get("trained"):
        encoder = build_encoder(encoder_config)
        if config.pretrain_epochs:
            encoder.load_weights(pretrained_path)
        _fit(config, task, task.build_model(encoder_config, encoder), run_dir, tokenizer, monitor, echo)
        state["trained"] = True
        _write_json(state_path, state)
    history = _read_history(run_dir)
    pretrain_history = _read_history(os.path.join(run_dir, "pretrain"))

    # === Evaluation on the held-out test split, with the best weights ===
    model = keras.models.load_model(os.path.join(run_dir, "checkpoints", "best.keras"))
    task_metrics, summary = task.evaluate(model)

    # === Artifacts ===
    model.save(os.path.join(run_dir, "model.keras"))
    export_dir = os.path.join(run_dir, "export")
    shutil.rmtree(export_dir, ignore_errors=True)
    task.export(model, export_dir)

    best = _best_epoch(history, monitor)
    metrics = {
        "task": task.name,
        **task_metrics,
        "num_train": sizes["train"],
        "num_validation": sizes["validation"],
        "num_test": sizes["test"],
        "epochs_run": len(history),
        "best_epoch": int(best.get("epoch", -1)) + 1,
        "best_val_loss": min((row["val_loss"] for row in history), default=None),
        "monitor": monitor[0],
        f"best_{monitor[0]}": best.get(monitor[0]),
        "pretrain_epochs_run": len(pretrain_history),
        "train_seconds": round(
            sum(row.get("seconds", 0.0) for row in history + pretrain_history), 1
        ),
        "vocabulary_size": tokenizer.vocabulary_size,
        "position": encoder_config.position,
        "parameters": int(model.count_params()),
        # What the auto (-1) settings resolved to in this run.
        "ema_momentum": config.resolved_ema(int(task.datasets["train"].cardinality())),
        **_window_metrics(model),
        "data": task.data.stats,
    }
    _write_json(os.path.join(run_dir, METRICS_FILE), metrics)

    echo("")
    echo(
        f"{summary} on {sizes['test']} held-out {task.example_noun} "
        f"({len(history)} epochs, best {metrics['best_epoch']}, "
        f"{metrics['train_seconds'] / 60:.1f} min of training)"
    )
    echo(f"Run directory: {run_dir}  (model.keras, export/ SavedModel, metrics.json)")
    echo(f"See it in TensorBoard:  tensorboard --logdir {config.logdir}")
    return metrics


def _window_metrics(model):
    """Rows and scale of the model's window-feature table, if it has one."""
    try:
        layer = model.get_layer("window_scores")
    except ValueError:
        return {}
    return {"window_features": layer.buckets, "window_scale": layer.scale}


def _optimizer(config, steps_per_epoch, epochs, ema=False):
    """AdamW (or `SparseAdamW`) with linear warm-up and cosine decay over the stage.

    With `ema` (and a positive `config.resolved_ema()`) the optimizer also keeps an
    exponential moving average of the weights (`use_ema`).
    """
    total_steps = steps_per_epoch * epochs
    warmup_steps = int(config.warmup_fraction * total_steps)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(total_steps - warmup_steps, 1),
        warmup_target=config.learning_rate,
        warmup_steps=warmup_steps,
    )
    optimizer_class = SparseAdamW if config.optimizer == "sparse_adamw" else keras.optimizers.AdamW
    momentum = config.resolved_ema(steps_per_epoch)
    use_ema = bool(ema and momentum)
    optimizer = optimizer_class(
        learning_rate=schedule,
        weight_decay=config.weight_decay,
        clipnorm=1.0,
        use_ema=use_ema,
        ema_momentum=momentum if use_ema else 0.99,
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def _stage_callbacks(stage_dir, ema_swap=None):
    """What every training stage records: time, history, curves, resume state.

    `ema_swap`: the fit's `SwapEMAWeights(swap_on_epoch=True)`, which puts
    the averaged weights in the model at each epoch's end for the callbacks
    before these; they go back before the backup, so that resuming
    continues from the raw weights and the average, as an uninterrupted run
    would.
    """
    return [
        _EpochTimer(),
        keras.callbacks.CSVLogger(os.path.join(stage_dir, "history.csv"), append=True),
        keras.callbacks.TensorBoard(log_dir=stage_dir, write_graph=False),
        *([_RawWeightsBack(ema_swap)] if ema_swap is not None else []),
        # Two generations, so a kill while writing one leaves the other.
        keras.callbacks.BackupAndRestore(os.path.join(stage_dir, "backup"), double_checkpoint=True),
        keras.callbacks.TerminateOnNaN(),
    ]


def _pretrain(config, encoder_config, run_dir, tokenizer, ids, weights_path, echo):
    """Masked-LM pretraining of the encoder on the training texts only."""
    stage_dir = os.path.dirname(weights_path)
    os.makedirs(stage_dir, exist_ok=True)
    encoder = build_encoder(encoder_config)
    model = build_masked_lm(encoder_config, encoder=encoder)
    train = masked_lm_dataset(ids["train"], tokenizer, config.batch_size, shuffle=True, seed=config.seed)
    validation = masked_lm_dataset(ids["validation"], tokenizer, config.batch_size, seed=config.seed)
    model.compile(
        optimizer=_optimizer(config, int(train.cardinality()), config.pretrain_epochs),
        jit_compile=False,  # see _fit
        # Average over masked tokens only, not over the padded prediction slots.
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    done = len(_read_history(stage_dir))
    echo(
        f"Pretraining (masked LM) for {config.pretrain_epochs} epochs of "
        f"{int(train.cardinality())} batches"
        + (f", resuming after epoch {done}" if done else "")
    )
    model.fit(
        train,
        epochs=config.pretrain_epochs,
        validation_data=validation,
        callbacks=_stage_callbacks(stage_dir),
        shuffle=False,  # the dataset shuffles itself
        verbose=_verbosity(),
    )
    encoder.save_weights(weights_path)


def _fit(config, task, model, run_dir, tokenizer, monitor, echo):
    """Fine-tune the task model; keep the checkpoint best by `monitor`."""
    steps_per_epoch = int(task.datasets["train"].cardinality())
    # No XLA: length-bucketed batches come in many shapes, each of which XLA
    # would compile anew (Keras' "auto" turns it on wherever a GPU is seen),
    # and on CPU even a fixed set of bucket shapes trained slower under XLA
    # (BENCHMARKS.md).
    model.compile(
        optimizer=_optimizer(config, steps_per_epoch, config.epochs, ema=True),
        jit_compile=False,
        **task.compile_args(model),
    )

    history = _read_history(run_dir)
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    best_path = os.path.join(checkpoint_dir, "best.keras")
    monitor_name, mode = monitor
    best_so_far = _best_epoch(history, monitor).get(monitor_name)
    if os.path.exists(best_path) and not _is_complete_zip(best_path):
        # Killed while the checkpoint was being written: start the best anew.
        os.remove(best_path)
        best_so_far = None
    os.makedirs(checkpoint_dir, exist_ok=True)
    probe_ids, probe_tokens = _probe_sentences(
        tokenizer, task.ids["validation"], config.probe_sentences
    )
    # With --ema, validation sees the averaged weights (SwapEMAWeights swaps
    # them in around every evaluation) and so, from each epoch's end until
    # the backup, do the callbacks in between: pictures, scores and the
    # best checkpoint. Picture callbacks come before the recording ones:
    # they add validation scores (macro-F1, entity F1) to the epoch logs
    # that the recording callbacks then write.
    ema_swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True) if config.resolved_ema() else None
    callbacks = [
        *([ema_swap] if ema_swap is not None else []),
        *task.callbacks(run_dir),
        AttentionMapCallback(os.path.join(run_dir, "validation"), probe_ids, probe_tokens),
        keras.callbacks.ModelCheckpoint(
            best_path,
            monitor=monitor_name,
            mode=mode,
            save_best_only=True,
            initial_value_threshold=best_so_far,
        ),
        *_stage_callbacks(run_dir, ema_swap),
    ]
    if config.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor_name, mode=mode, patience=config.patience)
        )
    echo(
        f"Training {model.count_params():,} parameters for up to {config.epochs} epochs "
        f"of {steps_per_epoch} batches, keeping the best by {monitor_name}"
        + (f", resuming after epoch {len(history)}" if history else "")
    )
    model.fit(
        task.datasets["train"],
        epochs=config.epochs,
        validation_data=task.datasets["validation"],
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself
        verbose=_verbosity(),
    )
    if not os.path.exists(best_path):
        raise KerasEncoderError(
            f"Training produced no checkpoint: {monitor_name} was never finite. "
            "Try a lower --learning-rate."
        )


def _verbosity():
    # A live progress bar for people; one line per epoch in CI logs.
    return 2 if os.environ.get("CI") else 1


class _RawWeightsBack(keras.callbacks.Callback):
    """Undoes `SwapEMAWeights(swap_on_epoch=True)`'s epoch-end swap early.

    SwapEMAWeights would swap back at the next epoch's start; doing it here
    means the callbacks after this one (the backup) see the raw weights.
    """

    def __init__(self, swap):
        super().__init__()
        self.swap = swap

    def on_epoch_end(self, epoch, logs=None):
        if self.swap._ema_weights_in_model:
            self.swap._swap_variables()
            self.swap._ema_weights_in_model = False


class _EpochTimer(keras.callbacks.Callback):
    """Adds `seconds` to the epoch logs (TensorBoard: `epoch_seconds`; summed into train_seconds)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._start


def _probe_sentences(tokenizer, validation_ids, count):
    """The first `count` validation sentences of a readable length."""
    lengths = validation_ids.row_lengths().numpy()
    chosen = [index for index, length in enumerate(lengths) if 8 <= length <= 40][:count]
    if len(chosen) < count:
        chosen = list(range(min(count, len(lengths))))
    token_ids = [validation_ids[index].numpy() for index in chosen]
    return token_ids, [tokenizer.id_to_token(ids) for ids in token_ids]


def _open_run_dir(config, echo):
    """Return `(run_dir, resumed)`, creating the directory for a new run."""
    base = os.path.join(config.logdir, config.resolved_run_name)
    wanted = config.to_dict()
    for number in range(1, 10_000):
        run_dir = base if number == 1 else f"{base}-{number}"
        if not os.path.exists(run_dir):
            break
        if os.path.exists(os.path.join(run_dir, METRICS_FILE)):
            continue  # finished: never touched again
        previous = _read_json(os.path.join(run_dir, "config.json"))
        if previous == wanted:
            echo(f"Resuming the unfinished run in {run_dir}")
            return run_dir, True
    if number > 1:
        echo(f"{base} holds another run; this one goes to {run_dir}")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.json"), "w", encoding="utf-8") as handle:
        handle.write(config.to_json())
    return run_dir, False


def _read_history(run_dir):
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


def _best_epoch(history, monitor):
    """The history row best by `monitor` (`(name, mode)`), or `{}`."""
    name, mode = monitor
    rows = [row for row in history if name in row]
    if not rows:
        return {}
    pick = min if mode == "min" else max
    return pick(rows, key=lambda row: row[name])


def _is_complete_zip(path):
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json(path, values):
    """Write atomically: a crash leaves the old file or none, never half."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(values, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    os.replace(temporary, path)
