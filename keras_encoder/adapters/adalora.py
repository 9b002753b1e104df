"""AdaLoRA: SVD-form adapters whose rank budget moves to where it matters.

AdaLoRA fine-tunes a pretrained encoder, as LoRA does, by learning an
update of chosen projection kernels while every backbone weight stays
frozen, but writes the update in the form of a singular value
decomposition, `P @ diag(lambda * mask) @ Q * (alpha / r)`, and prunes its
triplets `(P[:, i], lambda[i], Q[i, :])` during training: every few steps
each triplet is scored by how much the loss depends on it, and the
weakest, over all adapted kernels together, are masked until the total
rank left meets a budget that falls from `r` per kernel to `target_rank`
per kernel on a cubic schedule. Kernels that matter keep more rank.

- `enable_adalora` puts the adapters on the same projections LoRA
  supports and freezes the rest of the backbone. While training, a model
  loss `gamma * (||P^T P - I||_F^2 + ||Q Q^T - I||_F^2)` per kernel keeps
  `P` and `Q` near orthogonal, so `lambda` acts as the singular values.
- `AdaLoRABudget`, a Keras callback, scores the triplets and masks them on
  the schedule (`adalora_budget`); `mask_triplets` is its masking step.
- `save_adalora` and `load_adalora` write and read the adapters, the masks
  and the task head, keyed by layer path; `restore_adalora` puts them back
  after `load_weights` (a resumed run); `merge_adalora` folds them into
  the kernels, so the exported model costs nothing extra.

An adapted projection stays the same layer object at the same path: it
computes with the kernel `W + update` (as Keras' own LoRA does), and a
`.keras` or weights file stores that merged kernel and no adapters, so
such a file loads as a plain model. Each adapted kernel is viewed as a
matrix `(d_in, d_out)`: the query, key and value kernels `(D, N, H)` as
`(D, N*H)`, the output kernel `(N, H, D)` as `(N*H, D)`, the feed-forward
kernels `(D, F)` and `(F, D)` as they are; the paper's factorization.

Shape legend: D hidden, N heads, H head size, F feed-forward width, r rank.
`adalora_p` `(d_in, r)` and `adalora_q` `(r, d_out)` start random (normal,
standard deviation 0.02, as in the paper's code), `adalora_lambda` `(r,)`
starts at zero, so a freshly adapted model computes exactly what it did;
`adalora_mask` `(r,)` (1 kept, 0 pruned) does not train.

The adapter file (safetensors) holds `backbone/<layer path>/adalora_p`,
`.../adalora_lambda`, `.../adalora_q` and `.../adalora_mask` for every
adapted projection, and `head/<layer path>/<weight>` for every head
weight. Its metadata holds `format` (`"keras_encoder.adalora"`),
`version`, and the JSON-encoded `rank`, `target_rank`, `alpha`, `gamma`
and `targets`.

References:
    - [Zhang et al., 2023](https://arxiv.org/abs/2303.10512)
"""

import json
import os

import keras
import numpy as np
from keras import ops
from safetensors.numpy import save_file

from keras_encoder.adapters.lora import (
    LORA_TARGETS,
    _adaptable_layers,
    _backbone,
    _check_all_trainable,
    _check_arguments,
    _check_metadata,
    _count,
    _drop_traced_functions,
    _head_variables,
    _projections,
    read_safetensors_adapters,
)
from keras_encoder.errors import ConfigError, DataError

FORMAT = "keras_encoder.adalora"
VERSION = 1
_ADAPTER_WEIGHTS = ("adalora_p", "adalora_lambda", "adalora_q", "adalora_mask")
_SETTINGS = ("adalora_rank", "adalora_target_rank", "adalora_alpha", "adalora_gamma")


class _AdaLoRAProjection:
    """What an adapted `EinsumDense` or `Dense` adds to its class.

    `enable_adalora` sets an adapted projection's class to a subclass with
    this mixin first, and `merge_adalora` sets it back: the layer keeps its
    identity, path and variables, so the layers around it, the traced
    functional model and the saving code see the same layer.
    """

    @property
    def kernel(self):
        kernel = super().kernel
        update = ops.reshape(_update(self), kernel.shape)  # (d_in, d_out) -> kernel shape
        return ops.cast(ops.add(kernel, ops.cast(update, kernel.dtype)), self.compute_dtype)

    def call(self, inputs, training=None):
        if training and self.adalora_gamma:
            self.add_loss(self.adalora_gamma * orthogonality_loss(self.adalora_p, self.adalora_q))
        return super().call(inputs, training=training)

    def load_own_variables(self, store):
        # A file holds the merged kernel and the bias, as a plain layer's
        # (`save_own_variables` stores `self.kernel`); the update is in the
        # kernel now, so lambda goes to zero, as Keras' LoRA zeroes its own.
        self._kernel.assign(store["0"])
        if self.bias is not None:
            self.bias.assign(store["1"])
        self.adalora_lambda.assign(ops.zeros_like(self.adalora_lambda))


class _AdaLoRAEinsumDense(_AdaLoRAProjection, keras.layers.EinsumDense):
    pass


class _AdaLoRADense(_AdaLoRAProjection, keras.layers.Dense):
    pass


_ADAPTED_CLASSES = {keras.layers.EinsumDense: _AdaLoRAEinsumDense, keras.layers.Dense: _AdaLoRADense}
_BASE_CLASSES = {adapted: base for base, adapted in _ADAPTED_CLASSES.items()}


def enable_adalora(model, rank, target_rank=None, alpha=None, targets=("query", "value"), gamma=0.1):
    """Put AdaLoRA adapters on the attention projections and freeze the backbone.

    Gives each `targets` projection of every `MultiHeadSelfAttention` and
    `TransformerEncoderBlock` in the backbone the adapter weights
    `adalora_p`, `adalora_lambda`, `adalora_q` and `adalora_mask` (see the
    module docstring), then sets which weights train: `P`, `lambda`, `Q`
    and the task head (every weight of `model` outside `model.backbone`)
    do, every other weight does not. Call it before `compile()`; train with
    an `AdaLoRABudget` callback, which prunes the rank to `target_rank`.

    Args:
        model: a task model (`EncoderClassifier`, `EncoderTagger`, ...) or a
            backbone from `build_encoder`, with every layer `trainable`.
        rank: int. Initial rank `r` of every adapted kernel.
        target_rank: int. Average rank per kernel left at the end of
            training, at most `rank`. Defaults to `rank // 2` (at least 1).
        alpha: float. The update is scaled by `alpha / rank` (the initial
            rank, whatever is pruned later). Defaults to `rank`.
        targets: names of the projections to adapt, from `"query"`,
            `"key"`, `"value"`, `"attention_output"`, `"ffn_inner"` and
            `"ffn_outer"`. Defaults to `("query", "value")`, as LoRA's; the
            paper adapts all six (`targets=LORA_TARGETS`).
        gamma: float. Weight of the orthogonality loss of each kernel.
            Defaults to `0.1`, the paper's.

    Returns:
        The dict of `adalora_summary`.

    Raises:
        ConfigError: a bad argument (the message names it), a model without
            `MultiHeadSelfAttention`, a layer set to `trainable=False`,
            adapters (LoRA or AdaLoRA) or prefixes already on the model, or
            a quantized projection.

    Example:

    ```python
    classifier = EncoderClassifier.from_preset("path/to/bert", num_classes=2)
    enable_adalora(classifier, rank=12, target_rank=8)
    classifier.compile(optimizer=keras.optimizers.AdamW(5e-4))
    budget = AdaLoRABudget(train_data, total_steps=3000, initial_warmup=300, final_warmup=900)
    classifier.fit(train_data, epochs=3, callbacks=[budget])
    save_adalora(classifier, "adalora.safetensors")
    merge_adalora(classifier)
    ```
    """
    targets = _check_arguments(rank, alpha, targets)
    target_rank = max(1, rank // 2) if target_rank is None else target_rank
    if isinstance(target_rank, bool) or not isinstance(target_rank, (int, np.integer)) or not 1 <= target_rank <= rank:
        raise ConfigError(
            f"`target_rank` must be an integer from 1 to rank ({rank}). Received: target_rank={target_rank!r}"
        )
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.number)) or not 0 <= gamma < float("inf"):
        raise ConfigError(f"`gamma` must be a non-negative number. Received: gamma={gamma!r}")
    alpha = rank if alpha is None else alpha
    backbone = _backbone(model)
    attention = _adaptable_layers(backbone)
    for path, layer in _projections(attention, LORA_TARGETS):
        if _is_adapted(layer):
            raise ConfigError(
                f"AdaLoRA is already enabled on {path}; call merge_adalora(model) first or "
                "start from the base model."
            )
        if getattr(layer, "lora_enabled", False):
            raise ConfigError(f"{path} has LoRA adapters; use LoRA or AdaLoRA, not both.")
    prefixed = [path for path, layer in attention if getattr(layer, "prefix_length", 0)]
    if prefixed:
        raise ConfigError(f"{prefixed[0]} has a prefix (prefix tuning); use AdaLoRA or prefix tuning, not both.")
    chosen = _projections(attention, targets)
    for path, layer in chosen:
        if type(layer) not in _ADAPTED_CLASSES or layer.quantization_mode is not None:
            raise ConfigError(f"{path} is not a plain float EinsumDense or Dense; AdaLoRA cannot adapt it.")
    _check_all_trainable(model, "enable_adalora")
    for _, layer in chosen:
        _add_adapters(layer, int(rank), int(target_rank), alpha, float(gamma))

    keep = {id(getattr(layer, name)) for _, layer in chosen for name in _ADAPTER_WEIGHTS[:3]}
    keep.update(id(variable) for variable in _head_variables(model, backbone).values())
    frozen = [v for v in model.weights if v.trainable and id(v) not in keep]
    for variable in frozen:
        variable.trainable = False
    # Plain attributes, not tracked state: what merge_adalora unfreezes.
    object.__setattr__(model, "_adalora_frozen", frozen)
    _drop_traced_functions(model)
    return adalora_summary(model)


def adalora_summary(model):
    """What `enable_adalora` returns, for a model with AdaLoRA adapters.

    Args:
        model: a model on which `enable_adalora` (or `load_adalora`) ran.

    Returns:
        A dict: `initial_rank`, `target_rank`, `alpha`, `gamma`, `targets`,
        `adapted` (the adapted layers' paths, e.g.
        `"backbone/block_0/attention/query"`), `kept_ranks` (`{path: the
        triplets its mask keeps}`), `parameters` and `trainable_parameters`
        (scalar counts over the model's weights, adapters included).

    Raises:
        ConfigError: the model has no AdaLoRA adapters.
    """
    attention = _adaptable_layers(_backbone(model))
    rank, target_rank, alpha, gamma, targets = _settings(model, attention)
    adapted = _adapted(attention)
    return {
        "initial_rank": rank,
        "target_rank": target_rank,
        "alpha": alpha,
        "gamma": gamma,
        "targets": list(targets),
        "adapted": [path for path, _ in adapted],
        "kept_ranks": {path: int(np.sum(ops.convert_to_numpy(layer.adalora_mask))) for path, layer in adapted},
        "parameters": _count(model.weights),
        "trainable_parameters": _count(model.trainable_weights),
    }


def orthogonality_loss(p, q):
    """`||P^T P - I||_F^2 + ||Q Q^T - I||_F^2`: zero when `P` has orthonormal columns and `Q` orthonormal rows.

    Args:
        p: float tensor `(d_in, r)`.
        q: float tensor `(r, d_out)`.

    Returns:
        A float32 scalar.
    """
    p, q = ops.cast(p, "float32"), ops.cast(q, "float32")
    identity = ops.eye(p.shape[-1], dtype="float32")  # (r, r)
    return ops.sum(ops.square(ops.matmul(ops.transpose(p), p) - identity)) + ops.sum(
        ops.square(ops.matmul(q, ops.transpose(q)) - identity)
    )


def adalora_budget(step, initial_budget, target_budget, total_steps, initial_warmup, final_warmup):
    """The total rank allowed after `step` training steps (the paper's Eq. 8).

    `initial_budget` for the first `initial_warmup` steps, then falling on
    a cubic, `b(T) + (b(0) - b(T)) * (1 - (t - t_i) / (T - t_i - t_f))^3`
    rounded down, until `total_steps - final_warmup`, then `target_budget`.

    Args:
        step: int. Training steps done, `t`.
        initial_budget: int. `b(0)`, the initial rank times the adapted kernels.
        target_budget: int. `b(T)`, the target rank times the adapted kernels.
        total_steps: int. `T`.
        initial_warmup: int. `t_i`.
        final_warmup: int. `t_f`.

    Returns:
        An int.
    """
    if step < initial_warmup:
        return int(initial_budget)
    if step >= total_steps - final_warmup:
        return int(target_budget)
    remaining = 1.0 - (step - initial_warmup) / (total_steps - initial_warmup - final_warmup)
    return int(target_budget + (initial_budget - target_budget) * remaining**3)


def mask_triplets(model, scores, budget):
    """Mask the weakest kept triplets, over all adapted kernels, down to `budget`.

    A masked triplet's `lambda` and mask are set to zero, and it stays
    masked: the update multiplies `lambda` by the mask, so the triplet adds
    nothing, gets no gradient, and is not counted again, whatever the
    optimizer's momentum or weight decay later does to its `lambda`. A
    model keeping `budget` triplets or fewer is left alone.

    Args:
        model: a model with AdaLoRA adapters.
        scores: `{layer path: float array (r,)}`, one score per triplet of
            every adapted kernel (see `adalora_summary()["adapted"]`).
        budget: int. Triplets to keep in all.

    Returns:
        `{layer path: triplets kept}`.

    Raises:
        ConfigError: the model has no AdaLoRA adapters, or `scores` misses a
            layer or has the wrong shape for one.
    """
    attention = _adaptable_layers(_backbone(model))
    _settings(model, attention)  # raises without adapters
    adapted = _adapted(attention)
    masks = {path: np.array(ops.convert_to_numpy(layer.adalora_mask)) for path, layer in adapted}
    candidates = []  # (score, order, path, index) of each kept triplet
    for path, layer in adapted:
        score = np.asarray(scores.get(path, ()), "float64")
        if score.shape != masks[path].shape:
            raise ConfigError(
                f"`scores` must hold an array of shape {masks[path].shape} for {path}. "
                f"Received: {score.shape if path in scores else 'none'}"
            )
        candidates += [(score[i], len(candidates), path, i) for i in np.flatnonzero(masks[path])]
    for _, _, path, index in sorted(candidates)[: max(0, len(candidates) - int(budget))]:
        masks[path][index] = 0.0
    for path, layer in adapted:
        layer.adalora_mask.assign(masks[path])
        layer.adalora_lambda.assign(ops.convert_to_numpy(layer.adalora_lambda) * masks[path])
    return {path: int(np.sum(masks[path])) for path, _ in adapted}


class AdaLoRABudget(keras.callbacks.Callback):
    """Scores AdaLoRA's triplets and masks the weakest on the cubic budget schedule.

    Every `interval` training steps (counted by the optimizer, so a resumed
    run keeps its place) this computes the gradient of the model's loss
    on the next batch of `data`, and for every adapter weight `w` the
    sensitivity `I = |w * dL/dw|`, its moving average
    `I' = beta1 * I' + (1 - beta1) * I`, the moving average of its
    uncertainty `U' = beta2 * U' + (1 - beta2) * |I - I'|`, and the score
    `s = I' * U'`. A triplet `i` scores `s(lambda_i) + mean_j s(P_ji) +
    mean_j s(Q_ij)`. From `initial_warmup` steps on, `mask_triplets` keeps
    the best `adalora_budget(step, ...)` triplets of all kernels together;
    from `total_steps - final_warmup` on, that is `target_rank` per kernel
    and the masks stay as they are for the rest of training.

    The scores are not saved: a resumed run starts them anew, with the
    masks its adapter file restored.

    Args:
        data: a `tf.data.Dataset` of `(x, y)` or `(x, y, sample_weight)`
            batches, usually the training data given to `fit`. It is read
            again, one batch at each scoring.
        total_steps: int. Training steps in all, `T`.
        initial_warmup: int. Steps at the full rank before any pruning, `t_i`.
        final_warmup: int. Steps at the target rank at the end, `t_f`.
        interval: int. Steps between scorings (and maskings). Defaults to
            `10`.
        beta1: float. Moving-average factor of the sensitivity. Defaults to
            `0.85`, the paper's.
        beta2: float. Moving-average factor of the uncertainty. Defaults to
            `0.85`, the paper's.

    Example:

    ```python
    enable_adalora(classifier, rank=12, target_rank=8)
    classifier.compile()
    steps = 3 * int(train_data.cardinality())
    budget = AdaLoRABudget(train_data, steps, initial_warmup=steps // 10, final_warmup=3 * steps // 10)
    classifier.fit(train_data, epochs=3, callbacks=[budget])
    ```
    """

    def __init__(self, data, total_steps, initial_warmup, final_warmup, interval=10, beta1=0.85, beta2=0.85):
        for name, value, low in (("total_steps", total_steps, 1), ("initial_warmup", initial_warmup, 0),
                                 ("final_warmup", final_warmup, 0), ("interval", interval, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                kind = "a positive" if low else "a non-negative"
                raise ConfigError(f"`{name}` must be {kind} integer. Received: {name}={value!r}")
        if initial_warmup + final_warmup >= total_steps:
            raise ConfigError(
                "`initial_warmup + final_warmup` must be less than `total_steps`, leaving steps for "
                f"the rank to fall. Received: initial_warmup={initial_warmup}, "
                f"final_warmup={final_warmup}, total_steps={total_steps}"
            )
        for name, value in (("beta1", beta1), ("beta2", beta2)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= value < 1:
                raise ConfigError(f"`{name}` must be in [0, 1). Received: {name}={value!r}")
        super().__init__()
        self.data = data
        self.total_steps = int(total_steps)
        self.initial_warmup = int(initial_warmup)
        self.final_warmup = int(final_warmup)
        self.interval = int(interval)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self._batches = None
        self._gradients = None
        self._sensitivity = {}  # variable path -> moving average I'
        self._uncertainty = {}  # variable path -> moving average U'

    def budget(self, step):
        """The total rank allowed after `step` steps, for the model's adapters."""
        summary = adalora_summary(self.model)
        kernels = len(summary["adapted"])
        return adalora_budget(
            step, summary["initial_rank"] * kernels, summary["target_rank"] * kernels,
            self.total_steps, self.initial_warmup, self.final_warmup,
        )

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        attention = _adaptable_layers(_backbone(self.model))
        _settings(self.model, attention)  # raises without adapters
        self._layers = _adapted(attention)
        variables = [getattr(layer, name) for _, layer in self._layers for name in _ADAPTER_WEIGHTS[:3]]
        model = self.model

        def gradients(x, y, sample_weight):
            with tf.GradientTape() as tape:
                y_pred = model(x, training=True)
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            return tape.gradient(loss, variables)

        self._variables = variables
        self._gradients = tf.function(gradients, reduce_retracing=True)
        self._batches = iter(self.data.repeat())

    def on_train_batch_end(self, batch, logs=None):
        step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        if step % self.interval or step >= self.total_steps - self.final_warmup + self.interval:
            return
        self.update_scores(next(self._batches))
        if step >= self.initial_warmup:
            mask_triplets(self.model, self.scores(), self.budget(step))

    def update_scores(self, batch):
        """Update the moving averages with the gradient of the loss on `batch`."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        gradients = self._gradients(x, y, sample_weight)
        for variable, gradient in zip(self._variables, gradients):
            weight = ops.convert_to_numpy(variable)
            gradient = np.zeros_like(weight) if gradient is None else ops.convert_to_numpy(gradient)
            sensitivity = np.abs(weight * gradient)
            average = self._sensitivity.get(variable.path, np.zeros_like(sensitivity))
            average = self.beta1 * average + (1 - self.beta1) * sensitivity
            uncertainty = self._uncertainty.get(variable.path, np.zeros_like(sensitivity))
            self._uncertainty[variable.path] = self.beta2 * uncertainty + (1 - self.beta2) * np.abs(sensitivity - average)
            self._sensitivity[variable.path] = average

    def scores(self):
        """`{layer path: (r,) array}`: each triplet's score, zeros before any scoring."""
        found = {}
        for path, layer in self._layers:
            score = {}
            for name in _ADAPTER_WEIGHTS[:3]:
                key = getattr(layer, name).path
                if key in self._sensitivity:
                    score[name] = self._sensitivity[key] * self._uncertainty[key]
                else:
                    score[name] = np.zeros(tuple(getattr(layer, name).shape), "float32")
            # P (d_in, r): mean over rows; Q (r, d_out): mean over columns.
            found[path] = score["adalora_lambda"] + score["adalora_p"].mean(axis=0) + score["adalora_q"].mean(axis=1)
        return found


def save_adalora(model, path):
    """Write the AdaLoRA adapters, their masks and the head of `model` to a safetensors file.

    See the module docstring for the keys and metadata; the file loads onto
    any copy of the base model with `load_adalora`.

    Args:
        model: a model on which `enable_adalora` ran.
        path: string or path-like. The file to write, conventionally
            `*.safetensors`.

    Raises:
        ConfigError: the model has no AdaLoRA adapters.
    """
    backbone = _backbone(model)
    attention = _adaptable_layers(backbone)
    rank, target_rank, alpha, gamma, targets = _settings(model, attention)
    variables = {**_adapter_variables(attention), **_head_variables(model, backbone)}
    tensors = {key: np.ascontiguousarray(ops.convert_to_numpy(v)) for key, v in variables.items()}
    metadata = {
        "format": FORMAT,
        "version": json.dumps(VERSION),
        "rank": json.dumps(rank),
        "target_rank": json.dumps(target_rank),
        "alpha": json.dumps(alpha),
        "gamma": json.dumps(gamma),
        "targets": json.dumps(list(targets)),
    }
    save_file(tensors, os.fspath(path), metadata=metadata)


def load_adalora(model, path):
    """Load an adapter file from `save_adalora` onto a base model.

    Enables AdaLoRA with the file's settings (as `enable_adalora` does,
    freezing the backbone) unless the model already has exactly those
    adapters, then assigns the adapters, masks and head. Every key and
    shape is checked first, so a file that does not fit leaves the model
    unchanged. The base model must be the one the adapters were trained on.

    Args:
        model: a task model or backbone of the same architecture as the
            one saved.
        path: string or path-like. A file written by `save_adalora`.

    Returns:
        The dict of `adalora_summary`.

    Raises:
        DataError: the file is missing or not an AdaLoRA file, a tensor the
            model needs is missing, the file holds a tensor the model has
            no weight for, a shape differs, or the model has other
            adapters already.
    """
    path = os.fspath(path)
    settings, tensors = _read_file(path)
    rank, target_rank, alpha, gamma, targets = settings
    backbone = _backbone(model)
    attention = _adaptable_layers(backbone)
    current = _settings(model, attention, required=False)
    if current is not None and current != settings:
        raise DataError(
            f"{path}: the model already has AdaLoRA adapters (rank={current[0]}, "
            f"target_rank={current[1]}, alpha={current[2]}, gamma={current[3]}, targets={list(current[4])}) "
            f"unlike the file's (rank={rank}, target_rank={target_rank}, alpha={alpha}, gamma={gamma}, "
            f"targets={list(targets)}); load onto a base model."
        )
    lora = [p for p, layer in _projections(attention, LORA_TARGETS) if getattr(layer, "lora_enabled", False)]
    if lora:
        raise DataError(f"{path}: {lora[0]} has LoRA adapters; load onto a base model.")
    expected = {}
    for layer_path, layer in _projections(attention, targets):
        d_in, d_out = _matrix_shape(layer)
        expected.update({
            f"{layer_path}/adalora_p": (d_in, rank),
            f"{layer_path}/adalora_lambda": (rank,),
            f"{layer_path}/adalora_q": (rank, d_out),
            f"{layer_path}/adalora_mask": (rank,),
        })
    expected.update({key: tuple(v.shape) for key, v in _head_variables(model, backbone).items()})
    for key, shape in expected.items():
        if key not in tensors:
            raise DataError(
                f"{path}: no tensor {key!r}, which this model needs; the file was saved from "
                "a model of another architecture."
            )
        if tuple(tensors[key].shape) != shape:
            raise DataError(
                f"{path}: {key!r} has shape {tuple(tensors[key].shape)}, but the model's weight "
                f"has shape {shape}."
            )
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise DataError(
            f"{path}: the model has no weight for {unexpected[0]!r}; the file was saved from "
            "a model of another architecture."
        )
    if current is None:
        enable_adalora(model, rank, target_rank, alpha, targets, gamma)
    variables = {**_adapter_variables(attention), **_head_variables(model, backbone)}
    for key, variable in variables.items():
        variable.assign(tensors[key].astype(variable.dtype))
    return adalora_summary(model)


def restore_adalora(model, path):
    """Put AdaLoRA adapters back onto a model whose kernels hold them merged.

    A weights file saved with the adapters on (`model.save_weights`, and so
    `keras.callbacks.BackupAndRestore`) stores each adapted kernel with its
    update merged in and no adapters; loading it zeroes every `lambda`.
    This assigns the adapters, masks and head from `path` (saved at the
    same step as the weights) and subtracts each update from its kernel
    again, so training goes on where it stopped.

    Args:
        model: a model with the file's adapters enabled, after `load_weights`.
        path: string or path-like. A file written by `save_adalora` at the
            same step as the weights.

    Returns:
        The dict of `adalora_summary`.

    Raises:
        ConfigError: the model has no AdaLoRA adapters.
        DataError: as `load_adalora`.
    """
    attention = _adaptable_layers(_backbone(model))
    _settings(model, attention)  # raises without adapters
    summary = load_adalora(model, path)
    for _, layer in _adapted(attention):
        kernel = layer._kernel
        update = ops.reshape(_update(layer), kernel.shape)
        kernel.assign(ops.cast(kernel - ops.cast(update, kernel.dtype), kernel.dtype))
    return summary


def merge_adalora(model):
    """Fold every AdaLoRA update into its kernel and remove the adapters.

    Each adapted kernel becomes `W + P @ diag(lambda * mask) @ Q * (alpha /
    r)`, the adapter weights are removed, each projection is a plain
    `EinsumDense` or `Dense` again, and the weights `enable_adalora` froze
    become trainable again: the model predicts as before (to float
    rounding) and saves, exports and quantizes at no extra cost.

    Args:
        model: a model on which `enable_adalora` or `load_adalora` ran.

    Returns:
        The list of merged layer paths.

    Raises:
        ConfigError: the model has no AdaLoRA adapters, or an adapted layer
            is quantized (merge before quantizing).
    """
    attention = _adaptable_layers(_backbone(model))
    adapted = _adapted(attention)
    if not adapted:
        raise ConfigError(f"model {model.name!r} has no AdaLoRA adapters to merge; call enable_adalora first.")
    quantized = [path for path, layer in adapted if layer.quantization_mode is not None]
    if quantized:
        raise ConfigError(f"{quantized[0]} is quantized; merge the adapters before quantizing.")
    for _, layer in adapted:
        kernel = layer._kernel
        update = ops.reshape(_update(layer), kernel.shape)
        kernel.assign(ops.cast(kernel + ops.cast(update, kernel.dtype), kernel.dtype))
        for name in _ADAPTER_WEIGHTS + _SETTINGS:
            # Deleting a weight's attribute untracks it (`Layer.__delattr__`).
            delattr(layer, name)
        layer.__class__ = _BASE_CLASSES[type(layer)]
        kernel.trainable = True
    for variable in getattr(model, "_adalora_frozen", []):
        variable.trainable = True
    object.__setattr__(model, "_adalora_frozen", [])
    _drop_traced_functions(model)
    return [path for path, _ in adapted]


def adalora_kept_ranks(path):
    """`{layer path: triplets kept}` of an adapter file from `save_adalora`.

    Raises:
        DataError: the file is missing or not an AdaLoRA file.
    """
    _, tensors = _read_file(os.fspath(path))
    suffix = "/adalora_mask"
    return {key[: -len(suffix)]: int(np.sum(value)) for key, value in tensors.items() if key.endswith(suffix)}


def _is_adapted(layer):
    return isinstance(layer, _AdaLoRAProjection)


def _adapted(attention):
    """`(path, layer)` of every projection with AdaLoRA adapters."""
    return [(path, layer) for path, layer in _projections(attention, LORA_TARGETS) if _is_adapted(layer)]


def _matrix_shape(layer):
    """`(d_in, d_out)`: the kernel as a matrix from the input's axes to the output's."""
    shape = tuple(layer._kernel.shape)
    if isinstance(layer, keras.layers.EinsumDense):
        inputs, kernel = layer.equation.split("->")[0].split(",")
        contracted = 0
        while contracted < len(kernel) and kernel[contracted] in inputs:
            contracted += 1  # the kernel's leading axes are the input's ("dnh" of "btd", "nhd" of "btnh")
    else:
        contracted = 1
    d_in = int(np.prod(shape[:contracted]))
    return d_in, int(np.prod(shape)) // d_in


def _add_adapters(layer, rank, target_rank, alpha, gamma):
    d_in, d_out = _matrix_shape(layer)
    small = keras.initializers.RandomNormal(stddev=0.02)
    # New state after build is allowed, as Keras' `enable_lora` does.
    layer._tracker.unlock()
    try:
        layer.adalora_p = layer.add_weight(name="adalora_p", shape=(d_in, rank), initializer=small)
        layer.adalora_lambda = layer.add_weight(name="adalora_lambda", shape=(rank,), initializer="zeros")
        layer.adalora_q = layer.add_weight(name="adalora_q", shape=(rank, d_out), initializer=small)
        layer.adalora_mask = layer.add_weight(
            name="adalora_mask", shape=(rank,), initializer="ones", trainable=False
        )
    finally:
        layer._tracker.lock()
    layer.adalora_rank = rank
    layer.adalora_target_rank = target_rank
    layer.adalora_alpha = alpha
    layer.adalora_gamma = gamma
    layer.__class__ = _ADAPTED_CLASSES[type(layer)]


def _update(layer):
    """`P @ diag(lambda * mask) @ Q * (alpha / r)`, `(d_in, d_out)`, in float32."""
    scale = layer.adalora_alpha / layer.adalora_rank
    values = ops.cast(layer.adalora_lambda * layer.adalora_mask, "float32") * scale  # (r,)
    return ops.matmul(ops.cast(layer.adalora_p, "float32") * values[None, :], ops.cast(layer.adalora_q, "float32"))


def _settings(model, attention, required=True):
    """`(rank, target_rank, alpha, gamma, targets)` of the model's adapters, or `None` without any."""
    adapted = _adapted(attention)
    if not adapted:
        if required:
            raise ConfigError(f"model {model.name!r} has no AdaLoRA adapters; call enable_adalora first.")
        return None
    enabled = {name: [_is_adapted(layer) for _, layer in _projections(attention, (name,))] for name in LORA_TARGETS}
    targets = tuple(name for name in LORA_TARGETS if any(enabled[name]))
    settings = {tuple(getattr(layer, name) for name in _SETTINGS) for _, layer in adapted}
    if len(settings) > 1 or not all(all(enabled[name]) for name in targets):
        raise ConfigError(
            f"model {model.name!r} has AdaLoRA adapters of differing settings or on differing "
            "projections; only adapters put on by enable_adalora can be saved or loaded."
        )
    (rank, target_rank, alpha, gamma), = settings
    return rank, target_rank, alpha, gamma, targets


def _adapter_variables(attention):
    """`{key: variable}` of every adapter weight."""
    return {f"{path}/{name}": getattr(layer, name) for path, layer in _adapted(attention) for name in _ADAPTER_WEIGHTS}


def _read_file(path):
    """`((rank, target_rank, alpha, gamma, targets), tensors)` of an AdaLoRA file."""
    values, tensors = read_safetensors_adapters(
        path, FORMAT, VERSION, ("rank", "target_rank", "alpha", "gamma", "targets"),
        "AdaLoRA adapter file", "save_adalora",
    )
    rank, target_rank, alpha, gamma, targets = values
    targets = _check_metadata(path, lambda: _check_arguments(rank, alpha, targets))
    return (rank, target_rank, alpha, gamma, targets), tensors
