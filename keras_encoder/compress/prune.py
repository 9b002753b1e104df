"""Attention-head pruning: score every head, remove the weakest, fine-tune.

Following Michel et al. (2019), a head's importance is the expected
absolute gradient of the loss with respect to a gate on its output, at
gates of one: `I_h = E_x |dL(x)/dxi_h|`, summed here over training
examples (never validation or test) and averaged over them. Scores are
normalized per layer (L2)
and ranked across layers; the lowest-ranked heads go first, and every
layer keeps at least one head.

Removing a head slices it out of the query, key and value kernels
`(D, N, H)` and biases `(N, H)`, and out of the output kernel `(N, H, D)`:
the pruned model is a smaller model of the same classes (its blocks record
their own `num_heads` and the unchanged `key_dim`), which saves, reloads
and exports like any other (though not to BERT's layout, which has no
room for blocks of differing heads), and computes less.

Command line, for a finished classification run:

    python -m keras_encoder.compress.prune logs/wordnet-supersenses --share 0.5 --steps 300

writes `logs/wordnet-supersenses-pruned50/` (`config.json`, `model.keras`,
`export/`, `metrics.json`): the validation scores of the full model, of
the pruned one and of the pruned one after `--steps` fine-tuning steps
(AdamW, the learning rate decaying linearly from the run's peak to zero),
and the test scores of what is kept, scored once. The fine-tuned weights
are kept only if their validation accuracy is higher than the pruned
model's before fine-tuning (`fine_tuned_kept` in `metrics.json`). The
source run is not touched.

References:
    - [Michel et al., 2019](https://arxiv.org/abs/1905.10650)
"""

import argparse
import os
import shutil
import sys
import time

import numpy as np

from keras_encoder.compress.quantize import check_finished_run, directory_bytes, headline_scores, run_task
from keras_encoder.errors import ConfigError, KerasEncoderError

# The validation score that decides whether the fine-tuned weights are kept.
SCORE = "validation_accuracy"


def head_importance(model, batches, normalize=True):
    """Importance of every attention head of `model` on `batches`.

    Args:
        model: a classifier whose call maps token ids to logits (an
            `EncoderClassifier`).
        batches: an iterable of `(token_ids, labels, ...)` batches from the
            training split; every row counts once (sample weights, if
            any, are not applied).
        normalize: bool. Divide each layer's scores by their L2 norm, as
            Michel et al. do before ranking heads across layers.

    Returns:
        `{attention_path: scores}`, scores a NumPy array `(N,)` per
        attention layer (e.g. `"backbone/block_0/attention"`), in block
        order.
    """
    import tensorflow as tf

    from keras_encoder.adapters.lora import _attention_layers, _backbone

    attention = _attention_layers(_backbone(model))
    scores = {path: np.zeros(layer.num_heads, "float64") for path, layer in attention}
    seen = 0
    try:
        for batch in batches:
            token_ids, labels = batch[0], batch[1]
            rows = int(tf.shape(labels)[0])
            gates = [tf.ones((rows, layer.num_heads)) for _, layer in attention]
            with tf.GradientTape() as tape:
                for gate, (_, layer) in zip(gates, attention):
                    tape.watch(gate)
                    object.__setattr__(layer, "head_gates", gate)
                logits = model(token_ids, training=False)
                # Summed, not averaged: each row's gates see only its own loss.
                loss = tf.reduce_sum(
                    tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
                )
            for gradient, (path, _) in zip(tape.gradient(loss, gates), attention):
                scores[path] += np.abs(gradient.numpy()).sum(axis=0)
            seen += rows
    finally:
        for _, layer in attention:
            object.__setattr__(layer, "head_gates", None)
    if not seen:
        raise ConfigError("head_importance needs at least one batch.")
    for path in scores:
        scores[path] /= seen
        if normalize:
            scores[path] /= max(np.linalg.norm(scores[path]), 1e-12)
    return scores


def heads_to_prune(scores, share):
    """The `share` of all heads with the lowest scores, at least one kept per layer.

    Args:
        scores: `{attention_path: scores (N,)}` from `head_importance`.
        share: float in `[0, 1)`. The fraction of all heads to remove
            (rounded to the nearest head, halves up).

    Returns:
        `{attention_path: sorted head indices}`, every layer listed.
    """
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
        raise ConfigError(f"--share must be in [0, 1). Received: {share!r}")
    total = sum(len(value) for value in scores.values())
    wanted = int(share * total + 0.5)
    ranked = sorted((float(value), path, head) for path, values in scores.items() for head, value in enumerate(values))
    removed = {path: [] for path in scores}
    for _, path, head in ranked:
        if sum(len(heads) for heads in removed.values()) == wanted:
            break
        if len(scores[path]) - len(removed[path]) > 1:
            removed[path].append(head)
    return {path: sorted(heads) for path, heads in removed.items()}


def prune_heads(model, heads):
    """A copy of `model` without the given attention heads.

    Rebuilds `model` from its config with fewer heads in each block named
    (the head size stays) and copies every weight, slicing the removed
    heads out of the attention projections.

    Args:
        model: a task model (`EncoderClassifier`, `EncoderTagger`) whose
            backbone is a functional model of `TransformerEncoderBlock`s,
            without LoRA adapters or prefixes.
        heads: `{attention_path: head indices to remove}`, paths as
            `head_importance` gives them.

    Returns:
        The pruned model, a new instance of the same class.

    Raises:
        ConfigError: an unknown path, a head index out of range, every
            head of a layer removed, or a model with adapters or prefixes.
    """
    attention = prunable_attention(model)
    for path, removed in heads.items():
        if path not in attention:
            raise ConfigError(f"No attention layer {path!r}; the model has {', '.join(attention)}.")
        layer = attention[path]
        if any(not 0 <= head < layer.num_heads for head in removed):
            raise ConfigError(f"{path} has heads 0 to {layer.num_heads - 1}. Received: {sorted(removed)}")
        if len(set(removed)) >= layer.num_heads:
            raise ConfigError(f"{path}: pruning every head of a layer is not supported; keep at least one.")
    kept = {
        path: [head for head in range(layer.num_heads) if head not in set(heads.get(path, ()))]
        for path, layer in attention.items()
    }

    config = model.get_config()
    blocks = {
        path.split("/")[1]: (path, layer) for path, layer in attention.items()
    }  # "backbone/block_0/attention" -> block name "block_0"
    for entry in config["backbone"]["config"]["layers"]:
        if entry["class_name"] == "TransformerEncoderBlock" and entry["config"]["name"] in blocks:
            path, layer = blocks[entry["config"]["name"]]
            entry["config"]["num_heads"] = len(kept[path])
            entry["config"]["key_dim"] = layer._head_dim
    pruned = model.__class__.from_config(config)

    old_weights, new_weights = model.weights, pruned.weights
    if [v.path for v in old_weights] != [v.path for v in new_weights]:
        raise ConfigError("The rebuilt model's weights differ from the original's; cannot prune it.")
    sliced = {}
    for path, layer in attention.items():
        index = np.asarray(kept[path])
        for projection in (layer.query_dense, layer.key_dense, layer.value_dense):
            sliced[id(projection.kernel)] = lambda value, index=index: value[:, index]  # (D, N, H)
            if projection.bias is not None:
                sliced[id(projection.bias)] = lambda value, index=index: value[index]  # (N, H)
        sliced[id(layer.output_dense.kernel)] = lambda value, index=index: value[index]  # (N, H, D)
    for old, new in zip(old_weights, new_weights):
        value = np.asarray(old.numpy() if hasattr(old, "numpy") else old)
        value = sliced.get(id(old), lambda v: v)(value)
        new.assign(value)
    return pruned


def prunable_attention(model):
    """`{attention_path: layer}` of a model `prune_heads` can prune.

    Raises:
        ConfigError: a layer has a prefix (prefix tuning) or LoRA adapters
            (merge them first: `keras_encoder.adapters.merge_adapters`).
    """
    from keras_encoder.adapters.lora import _attention_layers, _backbone

    attention = dict(_attention_layers(_backbone(model)))
    for path, layer in attention.items():
        if layer.prefix_length:
            raise ConfigError(f"{path} has a prefix (prefix tuning); pruning such a model is not supported.")
        projections = (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense)
        if any(getattr(projection, "lora_enabled", False) for projection in projections):
            raise ConfigError(f"{path} has LoRA adapters; merge them (merge_adapters) before pruning.")
    return attention


def count_heads(model):
    """The number of attention heads of a model, over all its layers."""
    from keras_encoder.adapters.lora import _attention_layers, _backbone

    return sum(layer.num_heads for _, layer in _attention_layers(_backbone(model)))


def prune_run(run_dir, share=0.5, steps=300, score_batches=32, out=None, echo=print):
    """Score, prune and briefly fine-tune a finished classification run.

    Writes `out` (default `<run_dir>-pruned<percent>`) whole or not at all
    and returns its metrics. See the module docstring.
    """
    import keras

    import keras_encoder.models  # noqa: F401  (registers the layers for loading)
    from keras_encoder.training.run_dir import read_json, write_json

    run_dir = os.path.normpath(run_dir)
    check_finished_run(run_dir)
    heads_to_prune({"check": np.zeros(2)}, share)  # the share's range, before any work
    for name, value in (("--steps", steps), ("--score-batches", score_batches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "--steps" else 1):
            raise ConfigError(f"{name} must be a {'non-negative' if name == '--steps' else 'positive'} integer. "
                              f"Received: {value!r}")
    out = os.path.normpath(out or f"{run_dir}-pruned{int(round(share * 100))}")
    if os.path.exists(out):
        raise ConfigError(f"{out} already exists; pass another --out or remove it.")
    config, task = run_task(run_dir, echo)
    if task.name != "classify":
        raise ConfigError(f"{run_dir} is a {task.name} run; head pruning scores classifiers only.")

    model = keras.models.load_model(os.path.join(run_dir, "model.keras"))
    prunable_attention(model)  # before any scoring
    task.prepare(model.preprocessor.tokenizer, config)
    start = time.perf_counter()
    full, full_line = task.evaluate(model, "validation")
    total = count_heads(model)
    scores = head_importance(model, task.datasets["train"].take(score_batches))
    removed = heads_to_prune(scores, share)
    pruned = prune_heads(model, removed)
    kept = count_heads(pruned)
    echo(f"Pruned {total - kept} of {total} heads: " + ", ".join(
        f"{path.split('/')[1]} {heads}" for path, heads in removed.items() if heads
    ))
    before, before_line = task.evaluate(pruned, "validation")
    echo(f"Pruned, before fine-tuning: {before_line} (full model: {full_line})")
    # The source run ended at a learning rate decayed to zero; restarting
    # at a constant peak moves the weights out of that minimum, so the
    # brief fine-tune decays linearly from the run's peak to zero.
    schedule = keras.optimizers.schedules.PolynomialDecay(config.learning_rate, max(steps, 1), 0.0)
    pruned.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay, clipnorm=1.0),
        jit_compile=False,  # batches of many lengths, as in train.py
    )
    pruned_weights = pruned.get_weights()
    if steps:
        pruned.fit(task.datasets["train"].repeat(), steps_per_epoch=steps, epochs=1, verbose="auto")
    after, after_line = task.evaluate(pruned, "validation")
    echo(f"Pruned, after {steps} fine-tuning steps: {after_line}")
    # Chosen on validation: the fine-tuned weights only where they score higher.
    fine_tuned_kept = bool(steps) and after[SCORE] > before[SCORE]
    if not fine_tuned_kept:
        pruned.set_weights(pruned_weights)
        if steps:
            echo(f"Kept the weights before fine-tuning: its {SCORE} {after[SCORE]:.4f} is not above "
                 f"{before[SCORE]:.4f}")
    test_metrics, test_line = task.evaluate(pruned, "test")

    staging = out + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    pruned.save(os.path.join(staging, "model.keras"))
    pruned.export(os.path.join(staging, "export"))
    with open(os.path.join(staging, "config.json"), "w", encoding="utf-8") as handle:
        handle.write(config.to_json())
    source = read_json(os.path.join(run_dir, "metrics.json")) or {}
    metrics = {
        "task": task.name,
        "source": run_dir,
        "pruned_share": (total - kept) / total,
        "heads": kept,
        "heads_before": total,
        "pruned_heads": removed,
        "head_scores": {path: [round(float(v), 6) for v in values] for path, values in scores.items()},
        "fine_tune_steps": steps,
        "score_batches": score_batches,
        "validation_full": headline_scores(full, "validation"),
        "validation_pruned": headline_scores(before, "validation"),
        "validation_fine_tuned": headline_scores(after, "validation"),
        "fine_tuned_kept": fine_tuned_kept,
        **test_metrics,
        "full_test": headline_scores(source, "test"),
        "export_bytes": directory_bytes(os.path.join(staging, "export")),
        "parameters": int(pruned.count_params()),
        "trainable_parameters": int(pruned.count_params()),
        "prune_seconds": round(time.perf_counter() - start, 1),
    }
    write_json(os.path.join(staging, "metrics.json"), metrics)
    os.replace(staging, out)  # whole or not at all
    echo(f"{test_line} (pruned {metrics['pruned_share']:.0%} of heads; full model: "
         + ", ".join(f"{k} {v:.4f}" for k, v in metrics["full_test"].items()) + ")")
    echo(f"Export: {metrics['export_bytes'] / 1e6:.1f} MB in {out}")
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_encoder.compress.prune",
        description="Remove the least important attention heads of a finished classification run, "
        "fine-tune briefly, score it on the validation and test splits, and export it.",
    )
    parser.add_argument("run_dir", help="a finished run directory (with model.keras and metrics.json)")
    parser.add_argument("--share", type=float, default=0.5, help="fraction of all heads to remove (default: 0.5)")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps after pruning (default: 300)")
    parser.add_argument("--score-batches", type=int, default=32,
                        help="training batches that score the heads (default: 32)")
    parser.add_argument("--out", help="output directory (default: RUN_DIR-prunedPERCENT); must not exist")
    args = parser.parse_args(argv)
    try:
        prune_run(args.run_dir, args.share, args.steps, args.score_batches, args.out)
    except KerasEncoderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
