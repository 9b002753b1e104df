"""`train(values)` and `run(config)`: one training run, from data to SavedModel.

Every run owns one directory, `<logdir>/<run-name>/`:

    config.json        every value the run used (the preset, overridden)
    vocab.txt          tokenizer vocabulary (+ tokenizer.json)
    train/ validation/ TensorBoard event files: curves, attention maps,
                       confusion matrices; the run directory itself holds
                       the HParams summary (config and test scores)
    history.csv        one row per finished epoch
    checkpoints/       best.keras (best by the monitored validation score)
    backup/            resume state while training is unfinished
    model.keras        the best task model, after training
    export/            SavedModel taking raw strings (not for pretraining:
                       its masked LM is a start for --init, not a service)
    metrics.json       test-split results; written last, it marks success

Running the same command again resumes an unfinished run of the same
config (from its last finished epoch); a finished run, or an unfinished
run of another config, is left alone and the new run gets a numbered name.
"""

import dataclasses
import os
import shutil
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from keras_encoder.adapters import (
    AdaLoRABudget,
    adalora_kept_ranks,
    enable_adalora,
    enable_lora,
    enable_prefix_tuning,
    restore_adalora,
    save_adalora,
)
from keras_encoder.checkpoints import init_run_config, init_values, load_init
from keras_encoder.compress.distill import (
    attach_teacher,
    block_names,
    load_teacher,
    student_blocks,
    student_from_teacher,
    teacher_run_config,
)
from keras_encoder.compress.quantize import directory_bytes, headline_scores, quantize_and_score
from keras_encoder.data.pretraining import HELD_OUT_TASKS, held_out_conflict
from keras_encoder.distribute import barrier, chief_state_callback, from_chief
from keras_encoder.errors import ConfigError, DataError, KerasEncoderError
from keras_encoder.models import build_encoder
from keras_encoder.text import Tokenizer
from keras_encoder.training.callbacks import (
    AdapterCheckpoints,
    AttentionMapCallback,
    EpochTimer,
    RawWeightsBack,
)
from keras_encoder.training.config import TrainConfig, parse_held_out_seeds
from keras_encoder.training.optimizer import make_optimizer
from keras_encoder.training.presets import (
    PRESETS,
    PRETRAINED,
    adapter_defaults,
    fitted_to_data,
    preset_for,
    pretrained_start,
)
from keras_encoder.training.run_dir import (
    METRICS_FILE,
    best_epoch,
    is_complete_zip,
    open_run_dir,
    read_history,
    read_json,
    write_json,
)
from keras_encoder.training.tasks import load_task, task_of

STATE_FILE = "state.json"
# The best epoch's LoRA (or AdaLoRA) adapters and head, for the base checkpoint.
ADAPTERS_FILE = "adapters.safetensors"
_KIND_NOUNS = {"classify": "classification", "tag": "tagging", "pretrain": "unlabelled"}


def train(values, echo=print, strategy=None, cluster=None):
    """Train from flag values: the data picks the preset, `values` override it.

    Args:
        values: dict of `TrainConfig` fields (flags, a `--config` file);
            what is not given comes from the preset.
        echo: function that prints a progress line.
        strategy: the `tf.distribute.Strategy` to train under (default:
            the current one); see `keras_encoder.distribute`.
        cluster: the `keras_encoder.distribute.Cluster` of a multi-worker
            run, or `None`.

    Returns:
        The metrics dict of `run` (`None` on a worker other than the chief).
    """
    values = dict(values)
    data = values.get("data", TrainConfig.data)
    preset = values.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}. Received: {preset!r}")
    given_task = values.get("task")
    if preset is not None and given_task and PRESETS[preset]["task"] != given_task:
        raise ConfigError(
            f"--preset {preset} is for --task {PRESETS[preset]['task']}, not --task {given_task}; "
            "give one of them, or a preset for that task."
        )
    kind = task_of(data, given_task or (PRESETS[preset]["task"] if preset else None))
    # Flag values out of range stop here, before a large corpus is read:
    # any preset of the task checks them (the tagging presets differ only
    # in values that the data, not the user, decides).
    adapters = adapter_defaults(values)
    TrainConfig.from_dict({**PRESETS[preset or preset_for(kind, "bio")], **adapters, **values, "task": kind})
    if cluster is not None and values.get("jit_compile"):
        # Measured: MultiWorkerMirroredStrategy's gradient gathers
        # (CollectiveGatherV2) have no XLA kernel on CPU, so the first step fails.
        raise ConfigError(
            "--jit-compile does not run on a multi-worker cluster: XLA cannot compile the "
            "gradient exchange between workers (TensorFlow's collective ops have no XLA kernel "
            "on CPU). Leave --jit-compile out."
        )
    if cluster is not None and values.get("adalora_rank"):
        # Each worker would score its own batches and mask other triplets.
        raise ConfigError(
            "--adalora-rank does not run on a multi-worker cluster: each worker would prune "
            "different triplets. Train on one machine, or use --lora-rank."
        )
    # The split fractions and seed before the data picks the preset (the
    # tagging presets share them).
    kind_preset = PRESETS[preset or preset_for(kind, "bio")]
    # Read before the data: a start (--init, --teacher, and what they started
    # from) that trained on text this split validates or tests on.
    check_lineage(
        values.get("init"), values.get("teacher"), data,
        values.get("seed", kind_preset["seed"]),
        values.get("validation_fraction", kind_preset["validation_fraction"]),
        values.get("test_fraction", kind_preset["test_fraction"]),
    )
    # A teacher's files are read (JSON only) before the data.
    student = _student_architecture(values) if values.get("teacher") else {}
    try:
        task = load_task(
            data,
            kind,
            text_column=values.get("text_column", TrainConfig.text_column),
            label_column=values.get("label_column", TrainConfig.label_column),
            tag_scheme=values.get("tag_scheme", ""),
            validation_fraction=values.get("validation_fraction", kind_preset["validation_fraction"]),
            test_fraction=values.get("test_fraction", kind_preset["test_fraction"]),
            seed=values.get("seed", kind_preset["seed"]),
            echo=echo,
            held_out_seeds=parse_held_out_seeds(
                values.get("held_out_seeds", ""), values.get("seed", kind_preset["seed"])
            ),
        )
    except DataError as error:
        if kind == task_of(data) or not os.path.exists(data):
            raise
        # The flag, not the data, chose the task: say so next to the reader's complaint.
        chosen_by = f"--task {given_task}" if given_task else f"--preset {preset}"
        raise ConfigError(
            f"{chosen_by} reads --data {data} as {_KIND_NOUNS[kind]} data, which it is not ({error}). "
            f"Leave {chosen_by.split()[0]} out to let the data pick the task."
        ) from None
    preset = preset or preset_for(task.name, task.scheme)
    if PRESETS[preset]["task"] != task.name:
        raise ConfigError(
            f"--preset {preset} is for {PRESETS[preset]['task']} but --data {data} is a "
            f"{task.name} task; choose a preset for {task.name}."
        )
    batch_size = values.get("batch_size", PRESETS[preset]["batch_size"])
    defaults = fitted_to_data({**PRESETS[preset], "batch_size": batch_size}, **task.data_sizes())
    init_task = None
    if values.get("init"):
        architecture, max_positions = _fixed_architecture("--init", values["init"], values)
        if max_positions is not None:
            defaults["max_length"] = min(defaults["max_length"], max_positions)
        init_task = init_run_config(values["init"]).get("task")
        defaults = {**defaults, **pretrained_start(init_task), **architecture}
    if student:
        defaults = {**defaults, **PRETRAINED, **student}
    defaults = {**defaults, **adapter_defaults(values, init_task)}
    config = TrainConfig.from_dict(
        {**defaults, **values, "preset": preset, "task": task.name, "tag_scheme": task.scheme}
    )
    echo(f"Preset {preset}; every value this run uses goes to config.json")
    return run(config, task=task, echo=echo, strategy=strategy, cluster=cluster)


def check_lineage(init, teacher, data, seed, validation_fraction, test_fraction):
    """Raise `ConfigError` if the weights a run starts from saw text its split scores.

    Follows `--init` and `--teacher` back through every run they started
    from (`held_out_conflict` judges each). An ancestor recorded in a
    `config.json` but no longer there cannot be checked, and is refused
    when `data` is a built-in Chinese task.
    """
    pending = [(flag, path, path) for flag, path in (("--init", init), ("--teacher", teacher)) if path]
    seen = set()
    while pending:
        flag, first, path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        named = f"{flag} {first}" + ("" if path == first else f" starts from {path}, which")
        if path != first and not os.path.isdir(path) and data in HELD_OUT_TASKS:
            raise ConfigError(
                f"{named} is not there any more, so whether it trained on text that --data {data} "
                f"--seed {seed} scores cannot be checked; run from the directory its path is relative to."
            )
        config = init_run_config(path)
        reason = held_out_conflict(path, config, data, seed, validation_fraction, test_fraction)
        if reason is not None:
            if path != first:
                reason = reason.replace(f"{path} was", f"{named} was", 1)
            else:
                reason = f"{flag} {reason}"
            raise ConfigError(reason)
        pending += [(flag, first, config[key]) for key in ("init", "teacher") if config.get(key)]


def _fixed_architecture(flag, path, values, free=()):
    """`(architecture, max_positions)` that a start from `path` fixes; a flag may not contradict it.

    `flag` is `--init` or `--teacher`; fields in `free` may differ.
    """
    architecture = init_values(path)
    max_positions = architecture.pop("max_positions", None)
    if max_positions is not None and values.get("max_length", 0) > max_positions:
        raise ConfigError(
            f"--max-length {values['max_length']} is longer than {flag} {path} "
            f"holds positions for ({max_positions})."
        )
    for field, value in architecture.items():
        if field not in free and field in values and values[field] != value:
            raise ConfigError(
                f"--{field.replace('_', '-')} {values[field]} contradicts {flag} {path}, "
                f"whose model has {field.replace('_', '-')} {value}; leave the flag out."
            )
    return architecture, max_positions


def _student_architecture(values):
    """The teacher's architecture, with a third of its blocks unless --layers says otherwise."""
    teacher = values["teacher"]
    teacher_config = teacher_run_config(teacher)
    architecture, _ = _fixed_architecture("--teacher", teacher, values, free=("layers",))
    layers = values.get("layers", max(1, architecture["layers"] // 3))
    student_blocks(architecture["layers"], layers)  # the range, before any data is read
    return {**architecture, "layers": layers, "max_length": values.get("max_length", teacher_config["max_length"])}


def run(config: TrainConfig, task=None, echo=print, strategy=None, cluster=None):
    """Train, evaluate on the test split and export; return the metrics dict.

    Under a multi-worker `strategy`, every worker trains; only the chief
    (worker 0) writes the run directory, evaluates and exports. The other
    workers write to a temporary directory, delete it and return `None`.

    Args:
        config: a `TrainConfig`; every value is used as it is.
        task: the loaded data (`keras_encoder.training.tasks.load_task`),
            if already read; otherwise read from `config`.
        echo: function that prints a progress line.
        strategy: the `tf.distribute.Strategy` to train under (default:
            the current one).
        cluster: the `keras_encoder.distribute.Cluster`, or `None`.
    """
    config.validate()
    check_lineage(
        config.init, config.teacher, config.data, config.seed, config.validation_fraction, config.test_fraction
    )
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ConfigError(
            f"--batch-size {config.batch_size} is the global batch, split evenly over "
            f"{replicas} replicas; give a multiple of {replicas}."
        )
    scratch = None
    if cluster is not None and not cluster.is_chief:
        # The same work as the chief, into a directory nobody keeps.
        scratch = tempfile.mkdtemp(prefix=f"keras_encoder_worker{cluster.index}_")
        config = dataclasses.replace(config, logdir=scratch)
    try:
        return _run(config, task, echo, strategy, cluster)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _run(config, task, echo, strategy, cluster):
    keras.utils.set_random_seed(config.seed)

    # === Data (errors surface before anything is written) ===
    if task is None:
        task = load_task(
            config.data, config.task, config.text_column, config.label_column, config.tag_scheme,
            config.validation_fraction, config.test_fraction, config.seed, echo,
            held_out_seeds=config.held_out_seed_list(),
        )
    monitor = task.monitor(config.monitor, crf=config.crf)  # (name, "min" or "max")
    sizes = task.sizes()
    echo(
        f"Split (seed {config.seed}): {sizes['train']} train, "
        f"{sizes['validation']} validation, {sizes['test']} test"
    )

    run_dir, resumed = open_run_dir(config, echo)

    # === Tokenizer: the checkpoint's, or learned on the training split only ===
    backbone = teacher = None
    if config.teacher:
        with strategy.scope():
            teacher, tokenizer = load_teacher(config.teacher, config.max_length)
        tokenizer.save(run_dir)
        echo(f"Teacher {config.teacher}: {teacher.count_params():,} parameters, "
             f"{len(block_names(teacher))} blocks")
    elif config.init:
        with strategy.scope():
            backbone, tokenizer = load_init(config.init, config.max_length)
        tokenizer.save(run_dir)
        echo(f"Starting from {config.init}: {backbone.count_params():,} pretrained parameters")
    elif resumed and os.path.exists(os.path.join(run_dir, "vocab.txt")):
        tokenizer = Tokenizer.load(run_dir)
    else:
        tokenizer = Tokenizer.learn(
            task.texts("train"),
            vocabulary_size=config.vocabulary_size,
            sequence_length=config.max_length,
        )
        tokenizer.save(run_dir)
    echo(
        f"Vocabulary: {tokenizer.vocabulary_size} tokens "
        + ("(the checkpoint's)" if config.init or config.teacher else "(learned on the train split)")
    )
    task.prepare(tokenizer, config)

    # === Training ===
    state_path = os.path.join(run_dir, STATE_FILE)
    state = read_json(state_path) or {}
    trained = bool(state.get("trained"))
    if cluster is not None:
        # A chief that finished training before a relaunch goes straight on.
        trained = bool(from_chief(strategy, cluster, [tf.constant(int(trained))])[0])
        if trained and not cluster.is_chief:
            barrier(strategy)
            return None
    if not trained:
        with strategy.scope():
            if teacher is not None:
                model = _student(config, task, teacher, tokenizer, echo)
            else:
                if backbone is None:
                    backbone = build_encoder(config.encoder_config(tokenizer.vocabulary_size))
                model = task.build_model(config, backbone, task.preprocessor(tokenizer))
            trainable = _trainable_parameters(model)
            if config.lora_rank:
                lora = enable_lora(
                    model, config.lora_rank, config.lora_alpha or None, config.lora_target_names()
                )
                trainable = lora["trainable_parameters"]
                echo(
                    f"LoRA rank {config.lora_rank} on {', '.join(lora['targets'])} of "
                    f"{len(lora['adapted']) // len(lora['targets'])} blocks: {trainable:,} of "
                    f"{lora['parameters']:,} parameters train (the adapters and the head)"
                )
            if config.adalora_rank:
                adalora = enable_adalora(
                    model, config.adalora_rank, config.adalora_target_rank, config.lora_alpha or None,
                    config.lora_target_names(),
                )
                trainable = adalora["trainable_parameters"]
                echo(
                    f"AdaLoRA rank {config.adalora_rank}, pruned to {config.adalora_target_rank} on average, "
                    f"on {', '.join(adalora['targets'])} of "
                    f"{len(adalora['adapted']) // len(adalora['targets'])} blocks: {trainable:,} of "
                    f"{adalora['parameters']:,} parameters train (the adapters and the head)"
                )
            if config.prefix_length:
                prefix = enable_prefix_tuning(model, config.prefix_length)
                trainable = prefix["trainable_parameters"]
                echo(
                    f"Prefix of {config.prefix_length} key/value vectors per head in "
                    f"{len(prefix['blocks'])} blocks: {trainable:,} of {prefix['parameters']:,} "
                    "parameters train (the prefixes and the head)"
                )
        resumed_after = _fit(config, task, model, run_dir, tokenizer, monitor, echo, strategy, cluster)
        if cluster is not None and not cluster.is_chief:
            echo(f"Worker {cluster.index} has trained; waiting for the chief to evaluate and export.")
            barrier(strategy)
            return None
        state["trained"] = True
        state["resumed_after_epoch"] = resumed_after
        state["trainable_parameters"] = trainable
        if config.adalora_rank:
            state["adalora_schedule"] = adalora_schedule(config, int(task.datasets["train"].cardinality()))
        write_json(state_path, state)
    history = read_history(run_dir)
    monitor_best = best_epoch(history, monitor)

    # === Evaluation on the held-out test split, with the best weights ===
    with warnings.catch_warnings():
        # A LoRA checkpoint's optimizer state covers the adapters only.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model = keras.models.load_model(os.path.join(run_dir, "checkpoints", "best.keras"))
    adalora = {}
    if config.lora_rank or config.adalora_rank:
        # The .keras file holds each adapted kernel with the best epoch's
        # update merged in, and no adapters (our attention layer rebuilds
        # its projections from its own config): the model, its export and
        # model.keras cost nothing extra. The adapters alone go to
        # adapters.safetensors, for the base checkpoint.
        best_adapters = AdapterCheckpoints(os.path.join(run_dir, "checkpoints"), None).path(
            int(monitor_best["epoch"]) + 1
        )
        shutil.copyfile(best_adapters, os.path.join(run_dir, ADAPTERS_FILE))
        if config.adalora_rank:
            kept = adalora_kept_ranks(best_adapters)
            adalora = {"adalora_kept_ranks": kept, "adalora_kept_rank": sum(kept.values()),
                       "adalora_schedule": state.get("adalora_schedule")}
    task_metrics, summary = task.evaluate(model)

    # === Artifacts ===
    model.save(os.path.join(run_dir, "model.keras"))
    quantized = {}
    if config.quantize:
        # model.keras stays float32; the export and the test scores are the
        # quantized model's, with the float32 scores beside them.
        float_scores = headline_scores(task_metrics, "test")
        task_metrics, summary, quantized = quantize_and_score(model, task, config.quantize, echo)
        quantized["float32_test"] = float_scores
    export_dir = os.path.join(run_dir, "export")
    shutil.rmtree(export_dir, ignore_errors=True)
    if task.name != "pretrain":  # a masked LM serves nothing: --init fine-tunes it
        model.export(export_dir)

    best = monitor_best
    metrics = {
        "task": task.name,
        "preset": config.preset,
        "init": config.init,
        **task_metrics,
        "num_train": sizes["train"],
        "num_validation": sizes["validation"],
        "num_test": sizes["test"],
        "epochs_run": len(history),
        "best_epoch": int(best.get("epoch", -1)) + 1,
        "best_val_loss": min((row["val_loss"] for row in history), default=None),
        "monitor": monitor[0],
        f"best_{monitor[0]}": best.get(monitor[0]),
        "train_seconds": round(sum(row.get("seconds", 0.0) for row in history), 1),
        "vocabulary_size": tokenizer.vocabulary_size,
        "parameters": int(model.count_params()),
        "trainable_parameters": state.get("trainable_parameters"),
        "lora_rank": config.lora_rank,
        "adalora_rank": config.adalora_rank,
        "adalora_target_rank": config.adalora_target_rank,
        **adalora,
        "prefix_length": config.prefix_length,
        "teacher": config.teacher,
        "resumed_after_epoch": state.get("resumed_after_epoch"),
        "export_bytes": directory_bytes(export_dir) if os.path.isdir(export_dir) else None,
        "workers": cluster.num_workers if cluster is not None else 1,
        "replicas": strategy.num_replicas_in_sync,
        "data": task.data.stats,
        **quantized,
    }
    _write_hparams(run_dir, config, metrics)
    write_json(os.path.join(run_dir, METRICS_FILE), metrics)
    barrier(strategy)  # the other workers may leave now

    echo("")
    echo(
        f"{summary} on {sizes['test']} held-out {task.example_noun} "
        f"({len(history)} epochs, best {metrics['best_epoch']}, "
        f"{metrics['train_seconds'] / 60:.1f} min of training)"
    )
    if task.name == "pretrain":
        echo(f"Run directory: {run_dir}  (model.keras, metrics.json); fine-tune it with --init {run_dir}")
    else:
        echo(f"Run directory: {run_dir}  (model.keras, export/ SavedModel, metrics.json)")
    echo(f"See it in TensorBoard:  tensorboard --logdir {config.logdir}")
    return metrics


def _student(config, task, teacher, tokenizer, echo):
    """The student of `--teacher`: its blocks copied from the teacher's, the teacher attached."""
    if list(teacher.label_names) != list(task.label_names):
        raise ConfigError(
            f"--teacher {config.teacher} was trained on the labels {', '.join(teacher.label_names)}, "
            f"but --data {config.data} has {', '.join(task.label_names)}; a teacher must know the same classes."
        )
    blocks = student_blocks(len(block_names(teacher)), config.layers)
    student = student_from_teacher(teacher, config.layers, blocks)
    student.preprocessor = task.preprocessor(tokenizer)
    attach_teacher(
        student, teacher, config.distill_temperature, config.distill_weight, config.distill_hidden_weight
    )
    echo(
        f"Student of {config.layers} blocks, from the teacher's blocks {', '.join(map(str, blocks))}: "
        f"{student.count_params():,} parameters; loss {1 - config.distill_weight:g} x labels + "
        f"{config.distill_weight:g} x teacher at temperature {config.distill_temperature:g}"
        + (f" + {config.distill_hidden_weight:g} x hidden states" if config.distill_hidden_weight else "")
    )
    return student


def _trainable_parameters(model):
    return int(sum(np.prod(variable.shape) for variable in model.trainable_weights))


def _write_hparams(run_dir, config, metrics):
    """The config and the final scores, for TensorBoard's HParams dashboard."""
    scores = {
        key: value
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        and (key.startswith(("test_", "best_")) or key in ("epochs_run", "train_seconds", "parameters", "trainable_parameters"))
    }
    with tf.summary.create_file_writer(run_dir).as_default():
        hparams_api.hparams(config.to_dict(), trial_id=os.path.basename(run_dir))
        for key, value in scores.items():
            tf.summary.scalar(f"hparams/{key}", value, step=0)


def _fit(config, task, model, run_dir, tokenizer, monitor, echo, strategy, cluster):
    """Train the task model; keep the checkpoint best by `monitor`.

    Returns:
        The number of epochs finished before this start (a resume), or `None`.
    """
    steps_per_epoch = int(task.datasets["train"].cardinality())
    # XLA only with --jit-compile, whose batches are padded to the bucket
    # bounds: otherwise batches come in many lengths, each of which XLA would
    # compile anew (Keras' "auto" turns it on wherever a GPU is seen). On the
    # bucket shapes XLA's effect depends on the machine and its load: 0.82x
    # to 1.61x on one AVX2 host, 0.82x on an AVX-512 one (RESULTS.md, Speed).
    with strategy.scope():
        model.compile(optimizer=make_optimizer(config, steps_per_epoch), jit_compile=config.jit_compile)
        # Built now, on every worker: on a cluster, creating a variable in
        # the strategy's scope is a collective, and only the chief's
        # BackupAndRestore would build it. `fit` itself runs outside the
        # scope, so the chief alone may load a backup (whose loader makes
        # variables of its own).
        model.optimizer.build(model.trainable_variables)

    history = read_history(run_dir)
    checkpoint_dir = os.path.join(run_dir, "checkpoints")
    best_path = os.path.join(checkpoint_dir, "best.keras")
    monitor_name, mode = monitor
    best_so_far = best_epoch(history, monitor).get(monitor_name)
    if os.path.exists(best_path) and not is_complete_zip(best_path):
        # Killed while the checkpoint was being written: start the best anew.
        os.remove(best_path)
        best_so_far = None
    os.makedirs(checkpoint_dir, exist_ok=True)
    probe_ids, probe_tokens = _probe_sentences(
        tokenizer, task.ids["validation"], config.probe_sentences
    )
    # With a weight average, validation sees the averaged weights
    # (SwapEMAWeights swaps them in around every evaluation) and so, from
    # each epoch's end until the backup, do the callbacks in between:
    # pictures, scores and the best checkpoint. Picture callbacks come
    # before the recording ones: they add validation scores (macro-F1,
    # entity F1) to the epoch logs that the recording callbacks then write.
    ema_swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True) if config.ema else None
    backup_dir = os.path.join(run_dir, "backup")
    adapter_files = budget = None
    if config.lora_rank:
        adapter_files = AdapterCheckpoints(checkpoint_dir, backup_dir)
    if config.adalora_rank:
        adapter_files = AdapterCheckpoints(checkpoint_dir, backup_dir, save=save_adalora, restore=restore_adalora)
        budget = AdaLoRABudget(task.datasets["train"], **adalora_schedule(config, steps_per_epoch))
    callbacks = [
        *([ema_swap] if ema_swap is not None else []),
        *([budget] if budget is not None else []),
        *task.callbacks(run_dir),
        AttentionMapCallback(os.path.join(run_dir, "validation"), probe_ids, probe_tokens),
        keras.callbacks.ModelCheckpoint(
            best_path,
            monitor=monitor_name,
            mode=mode,
            save_best_only=True,
            initial_value_threshold=best_so_far,
        ),
        EpochTimer(),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=True),
        keras.callbacks.TensorBoard(log_dir=run_dir, write_graph=False),
        *([RawWeightsBack(ema_swap)] if ema_swap is not None else []),
        *([adapter_files] if adapter_files is not None else []),
        # Two generations, so a kill while writing one leaves the other.
        keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True),
        *([adapter_files.restorer()] if adapter_files is not None else []),
        # On a cluster, every worker starts from the chief's restored state.
        chief_state_callback(strategy, cluster),
        keras.callbacks.TerminateOnNaN(),
    ]
    if config.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor_name, mode=mode, patience=config.patience)
        )
    echo(
        f"Training {_trainable_parameters(model):,} of {model.count_params():,} parameters "
        f"for up to {config.epochs} epochs "
        f"of {steps_per_epoch} batches, keeping the best by {monitor_name}"
        + (f", resuming after epoch {len(history)}" if history else "")
    )
    model.fit(
        task.datasets["train"],
        epochs=config.epochs,
        validation_data=task.datasets["validation"],
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself
        verbose=2 if os.environ.get("CI") else 1,  # a live bar for people, a line per epoch in CI
    )
    if not os.path.exists(best_path):
        if cluster is not None and not cluster.is_chief:
            return None  # its scratch ModelCheckpoint did not know the chief's best so far
        raise KerasEncoderError(
            f"Training produced no checkpoint: {monitor_name} was never finite. "
            "Try a lower --learning-rate."
        )
    return len(history) or None


def adalora_schedule(config, steps_per_epoch):
    """`AdaLoRABudget`'s schedule for a run: the keyword arguments after `data`.

    Full rank for the first tenth of the steps, then the cubic fall, then
    the last three tenths at the target rank, as the paper's runs also end
    on a long phase at the final budget (these shares are not yet tuned
    here). Scores are taken every 10 steps, or more often in a short run,
    so at least 20 scorings happen; each costs one extra forward and
    backward pass.
    """
    total = config.epochs * steps_per_epoch
    return {
        "total_steps": total,
        "initial_warmup": total // 10,
        "final_warmup": 3 * total // 10,
        "interval": max(1, min(10, total // 20)),
    }


def _probe_sentences(tokenizer, validation_ids, count):
    """The first `count` validation sentences of a readable length."""
    lengths = validation_ids.row_lengths().numpy()
    chosen = [index for index, length in enumerate(lengths) if 8 <= length <= 40][:count]
    if len(chosen) < count:
        chosen = list(range(min(count, len(lengths))))
    token_ids = [validation_ids[index].numpy() for index in chosen]
    return token_ids, [tokenizer.id_to_token(ids) for ids in token_ids]
