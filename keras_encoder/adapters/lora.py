"""LoRA adapters on the attention projections and feed-forward kernels: enable, save, load, merge.

Low-rank adaptation (LoRA) fine-tunes a pretrained encoder by learning a
small update `scale * A @ B` of chosen projection kernels while the
kernels themselves, and every other backbone weight, stay frozen. This
module puts Keras' own `enable_lora` on the projections of every
`MultiHeadSelfAttention` (`EinsumDense`) and, when asked, on the two
feed-forward kernels of every `TransformerEncoderBlock` (`Dense`), freezes
the rest of the backbone, and adds what Keras lacks:

- `save_adapters` writes only the adapters and the task head, keyed by
  layer path, to a small safetensors file. A `.keras` file stores the
  merged kernels and drops the adapters (keras#23244), and keras-hub's
  `save_lora_weights` matches adapters by their index (keras-hub#2701).
- `load_adapters` puts such a file onto a base model, checking every key
  and shape before it assigns anything.
- `merge_adapters` folds each adapter into its kernel, so the exported
  model costs nothing extra.

Shape legend: D hidden, N heads, H head size, r rank. Keras factors a
kernel along its last axis: the query, key and value kernels `(D, N, H)`
get `A` `(D, N, r)` and `B` `(r, H)`, so each head has its own `A` and the
heads share `B` (`D*N*r + r*H` parameters; the paper's `A` `(D, r)` and `B`
`(r, N*H)` would have `D*r + r*N*H`); the output kernel `(N, H, D)` gets
`A` `(N, H, r)` and `B` `(r, D)`, the paper's factorization, as do the
feed-forward kernels `(D, F)` and `(F, D)`. `B` starts at zero, so a freshly enabled model computes exactly what it did before.

The adapter file (safetensors) holds one tensor per adapter matrix,
`backbone/<layer path>/lora_kernel_a` and `.../lora_kernel_b` (for example
`backbone/block_0/attention/query/lora_kernel_a`), and one per head
weight, `head/<layer path>/<weight>` (for example `head/logits/kernel`).
Its metadata holds `format` (`"keras_encoder.lora"`), `version`, and the
JSON-encoded `rank`, `alpha` and `targets`.

References:
    - [Hu et al., 2021](https://arxiv.org/abs/2106.09685)
"""

import json
import os

import keras
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from keras_encoder.errors import ConfigError, DataError
from keras_encoder.layers.attention import MultiHeadSelfAttention
from keras_encoder.layers.encoder_block import TransformerEncoderBlock

LORA_TARGETS = ("query", "key", "value", "attention_output", "ffn_inner", "ffn_outer")
FORMAT = "keras_encoder.lora"
VERSION = 1
# Target name -> (the layer class, its attribute holding that projection).
_PROJECTION_ATTRIBUTES = {
    "query": (MultiHeadSelfAttention, "query_dense"),
    "key": (MultiHeadSelfAttention, "key_dense"),
    "value": (MultiHeadSelfAttention, "value_dense"),
    "attention_output": (MultiHeadSelfAttention, "output_dense"),
    "ffn_inner": (TransformerEncoderBlock, "ffn_inner"),
    "ffn_outer": (TransformerEncoderBlock, "ffn_outer"),
}
_ADAPTER_WEIGHTS = ("lora_kernel_a", "lora_kernel_b")


def enable_lora(model, rank, alpha=None, targets=("query", "value")):
    """Put LoRA adapters on the attention projections and freeze the backbone.

    Enables Keras' LoRA (`EinsumDense.enable_lora`, `Dense.enable_lora`) on
    the `targets` projections of every `MultiHeadSelfAttention` and
    `TransformerEncoderBlock` in the backbone, then
    sets which weights train: the adapter matrices and the task head do,
    every other backbone weight (embeddings, kernels, biases, norms)
    does not. The head is every weight of `model` that is
    not a weight of `model.backbone` (a classifier's or tagger's `logits`,
    a tagger's CRF, the masked LM's head but not the embedding it shares
    with the backbone). A model without a `backbone` attribute is taken
    as the backbone itself: only the adapters train.

    Call it before `compile()`, since the optimizer is built for the
    trainable weights it sees first. Setting `trainable` on a layer
    afterwards resets its weights' flags (Keras sets every variable's),
    undoing the freeze.

    Args:
        model: a task model (`EncoderClassifier`, `EncoderTagger`, ...) or a
            backbone from `build_encoder`, with every layer `trainable`.
        rank: int. Rank `r` of each adapter.
        alpha: float. The update is scaled by `alpha / rank`. Defaults to
            `rank` (scale 1), as Keras' `enable_lora` and keras-hub do,
            so numbers and files compare with theirs. With Adam the scale
            acts like the adapters' learning rate; the paper fixes `alpha`
            to the first rank it tries and keeps it when changing the rank,
            so pass a fixed `alpha` when sweeping ranks.
        targets: names of the projections to adapt, from `"query"`,
            `"key"`, `"value"`, `"attention_output"` and the feed-forward
            kernels `"ffn_inner"` and `"ffn_outer"`. Defaults to
            `("query", "value")`, the paper's choice.

    Returns:
        A dict: `rank`, `alpha`, `targets` (in the order above), `adapted`
        (the adapted layers' paths, e.g.
        `"backbone/block_0/attention/query"`), `parameters` and
        `trainable_parameters` (scalar counts over the model's weights,
        adapters included).

    Raises:
        ConfigError: a bad `rank`, `alpha` or target name, a model without
            `MultiHeadSelfAttention`, a layer set to `trainable=False`, or
            LoRA already enabled.

    Example:

    ```python
    classifier = EncoderClassifier.from_preset("path/to/bert", num_classes=2)
    summary = enable_lora(classifier, rank=8)
    classifier.compile()
    classifier.fit(texts, labels)
    save_adapters(classifier, "adapters.safetensors")
    ```
    """
    targets = _check_arguments(rank, alpha, targets)
    alpha = rank if alpha is None else alpha
    backbone = _backbone(model)
    attention = _adaptable_layers(backbone)
    enabled = [path for path, layer in _projections(attention, LORA_TARGETS) if layer.lora_enabled]
    if enabled:
        raise ConfigError(
            f"LoRA is already enabled on {enabled[0]}; call merge_adapters(model) first or "
            "start from the base model."
        )
    prefixed = [path for path, layer in attention if getattr(layer, "prefix_length", 0)]
    if prefixed:
        raise ConfigError(f"{prefixed[0]} has a prefix (prefix tuning); use LoRA or prefix tuning, not both.")
    adalora = [path for path, layer in _projections(attention, LORA_TARGETS) if hasattr(layer, "adalora_rank")]
    if adalora:
        raise ConfigError(f"{adalora[0]} has AdaLoRA adapters; use LoRA or AdaLoRA, not both.")
    _check_all_trainable(model, "enable_lora")
    for _, layer in _projections(attention, targets):
        layer.enable_lora(rank, lora_alpha=alpha)

    keep = {id(variable) for variable in _adapter_variables(attention).values()}
    keep.update(id(variable) for variable in _head_variables(model, backbone).values())
    frozen = [v for v in model.weights if v.trainable and id(v) not in keep]
    for variable in frozen:
        variable.trainable = False
    # Plain attributes, not tracked state: what merge_adapters unfreezes.
    object.__setattr__(model, "_lora_frozen", frozen)
    _drop_traced_functions(model)
    return lora_summary(model)


def lora_summary(model):
    """What `enable_lora` returns, for a model with adapters.

    Args:
        model: a model on which `enable_lora` (or `load_adapters`) ran.

    Returns:
        A dict: `rank`, `alpha`, `targets`, `adapted` (layer paths),
        `parameters` and `trainable_parameters`.
    """
    attention = _adaptable_layers(_backbone(model))
    rank, alpha, targets = _lora_settings(model, attention)
    return {
        "rank": rank,
        "alpha": alpha,
        "targets": list(targets),
        "adapted": [path for path, _ in _projections(attention, targets)],
        "parameters": _count(model.weights),
        "trainable_parameters": _count(model.trainable_weights),
    }


def save_adapters(model, path):
    """Write the adapters and the head of `model` to a safetensors file.

    Only the LoRA matrices and the head's weights are written (see the
    module docstring for the keys and metadata), so the file is a small
    fraction of the model and loads onto any copy of the base model with
    `load_adapters`.

    Args:
        model: a model on which `enable_lora` ran.
        path: string or path-like. The file to write, conventionally
            `*.safetensors`.

    Raises:
        ConfigError: the model has no LoRA adapters.
    """
    backbone = _backbone(model)
    attention = _adaptable_layers(backbone)
    rank, alpha, targets = _lora_settings(model, attention)
    variables = {**_adapter_variables(attention), **_head_variables(model, backbone)}
    tensors = {key: np.ascontiguousarray(keras.ops.convert_to_numpy(v)) for key, v in variables.items()}
    metadata = {
        "format": FORMAT,
        "version": json.dumps(VERSION),
        "rank": json.dumps(rank),
        "alpha": json.dumps(alpha),
        "targets": json.dumps(list(targets)),
    }
    save_file(tensors, os.fspath(path), metadata=metadata)


def load_adapters(model, path):
    """Load an adapter file from `save_adapters` onto a base model.

    Enables LoRA with the file's `rank`, `alpha` and `targets` (as
    `enable_lora` does, freezing the backbone) unless the model already has
    exactly those adapters, then assigns the adapters and the head. Every
    key and shape is checked first, so a file that does not fit leaves the
    model unchanged. The base model must be the one the adapters were
    trained on (same backbone weights), or the predictions will differ.

    Args:
        model: a task model or backbone of the same architecture as the
            one saved.
        path: string or path-like. A file written by `save_adapters`.

    Returns:
        The dict of `lora_summary`.

    Raises:
        DataError: the file is missing or not an adapter file, a tensor the
            model needs is missing, the file holds a tensor the model has
            no weight for, a shape differs, or the model has other
            adapters already.
    """
    path = os.fspath(path)
    rank, alpha, targets, tensors = _read_adapter_file(path)
    backbone = _backbone(model)
    attention = _adaptable_layers(backbone)
    current = _lora_settings(model, attention, required=False)
    if current is not None and current != (rank, alpha, targets):
        raise DataError(
            f"{path}: the model already has LoRA adapters (rank={current[0]}, alpha={current[1]}, "
            f"targets={list(current[2])}) unlike the file's (rank={rank}, alpha={alpha}, "
            f"targets={list(targets)}); load onto a base model."
        )
    expected = _expected_shapes(model, backbone, attention, rank, targets)
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
        enable_lora(model, rank, alpha, targets)
    variables = {**_adapter_variables(attention), **_head_variables(model, backbone)}
    for key, variable in variables.items():
        variable.assign(tensors[key].astype(variable.dtype))
    return lora_summary(model)


def restore_adapters(model, path):
    """Put adapters back onto a model whose kernels hold them merged.

    A weights file saved with LoRA enabled (`model.save_weights`, and so
    `keras.callbacks.BackupAndRestore`) stores each adapted kernel with its
    update merged in and no adapter matrices; loading it leaves the
    adapters at zero, and a LoRA layer whose `A` and `B` are both zero
    gets no gradient. This assigns the adapters and the head from `path`
    (saved at the same step as the weights) and subtracts each update from
    its kernel again, so training goes on exactly where it stopped.

    Args:
        model: a model with the file's adapters enabled, after
            `load_weights`.
        path: string or path-like. A file written by `save_adapters` at the
            same step as the weights.

    Returns:
        The dict of `lora_summary`.

    Raises:
        ConfigError: the model has no adapters.
        DataError: as `load_adapters`.
    """
    attention = _adaptable_layers(_backbone(model))
    _lora_settings(model, attention)  # raises without adapters
    summary = load_adapters(model, path)
    for _, layer in _projections(attention, LORA_TARGETS):
        if layer.lora_enabled:
            scale = layer.lora_alpha / layer.lora_rank
            update = keras.ops.matmul(layer.lora_kernel_a, layer.lora_kernel_b)  # kernel shape
            kernel = layer._kernel
            kernel.assign(keras.ops.cast(kernel - scale * keras.ops.cast(update, kernel.dtype), kernel.dtype))
    # Only values changed, not variables: traced functions stay valid (this
    # runs inside `fit`, after its train function is made).
    return summary


def merge_adapters(model):
    """Fold every adapter into its kernel and disable LoRA.

    Each adapted kernel becomes `kernel + (alpha / rank) * A @ B` (the
    update the layer was adding at every call), the adapter matrices are
    removed, and the weights `enable_lora` froze become trainable again:
    the model is a plain model, predicting as before (to float rounding),
    and saves, exports and quantizes at no extra cost.

    Args:
        model: a model on which `enable_lora` or `load_adapters` ran.

    Returns:
        The list of merged layer paths.

    Raises:
        ConfigError: the model has no LoRA adapters, or an adapted layer is
            quantized (merge before quantizing).
    """
    attention = _adaptable_layers(_backbone(model))
    adapted = [(path, layer) for path, layer in _projections(attention, LORA_TARGETS) if layer.lora_enabled]
    if not adapted:
        raise ConfigError(f"model {model.name!r} has no LoRA adapters to merge; call enable_lora first.")
    quantized = [path for path, layer in adapted if layer.quantization_mode is not None]
    if quantized:
        raise ConfigError(
            f"{quantized[0]} is quantized; merge the adapters before quantizing."
        )
    for _, layer in adapted:
        scale = layer.lora_alpha / layer.lora_rank
        # The very arithmetic of `EinsumDense.kernel`, in the variable's dtype.
        update = keras.ops.matmul(layer.lora_kernel_a, layer.lora_kernel_b)  # kernel shape
        kernel = layer._kernel
        kernel.assign(keras.ops.cast(kernel + scale * keras.ops.cast(update, kernel.dtype), kernel.dtype))
        # Deleting the attributes untracks the variables (`Layer.__delattr__`).
        del layer.lora_kernel_a
        del layer.lora_kernel_b
        layer.lora_enabled = False
        layer.lora_rank = None
        layer.lora_alpha = None
        layer._kernel.trainable = True
    for variable in getattr(model, "_lora_frozen", []):
        variable.trainable = True
    object.__setattr__(model, "_lora_frozen", [])
    _drop_traced_functions(model)
    return [path for path, _ in adapted]


def _check_arguments(rank, alpha, targets):
    """The validated targets, in `LORA_TARGETS` order."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ConfigError(f"`rank` must be a positive integer. Received: rank={rank!r}")
    if alpha is not None and (
        isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not alpha > 0
    ):
        raise ConfigError(f"`alpha` must be a positive number or None. Received: alpha={alpha!r}")
    if isinstance(targets, str):
        targets = (targets,)
    targets = tuple(targets)
    for name in targets:
        if name not in LORA_TARGETS:
            raise ConfigError(
                f"Unknown LoRA target {name!r}; `targets` may name {', '.join(LORA_TARGETS)}. "
                f"Received: targets={targets!r}"
            )
    if not targets:
        raise ConfigError(
            f"`targets` must name at least one of {', '.join(LORA_TARGETS)}. Received: targets=()"
        )
    return tuple(name for name in LORA_TARGETS if name in targets)


def _check_all_trainable(model, caller):
    """Raise `ConfigError` if any layer of `model` with weights is set `trainable=False`."""
    frozen_layers = [
        path for path, layer in _sublayers(model, include_self=True) if layer.weights and not layer.trainable
    ]
    if frozen_layers:
        raise ConfigError(
            f"{caller} decides which weights train, but layer {frozen_layers[0] or model.name!r} "
            "has trainable=False; set model.trainable = True first."
        )


def _backbone(model):
    backbone = getattr(model, "backbone", None)
    return model if backbone is None else backbone


def _sublayers(root, include_self=False, skip=None):
    """`(path, layer)` for each layer under `root`, each once, parents first.

    Paths are the layer names from `root` down, joined by `/` (`root`
    itself is `""`); `skip` is a layer whose subtree is left out.
    """
    seen = {id(root)}
    found = [("", root)] if include_self else []

    def visit(layer, prefix):
        # `_flatten_layers` is how Keras itself lists a layer's direct sublayers.
        for child in layer._flatten_layers(include_self=False, recursive=False):
            if id(child) in seen or child is skip:
                continue
            seen.add(id(child))
            found.append((prefix + child.name, child))
            visit(child, prefix + child.name + "/")

    visit(root, "")
    return found


def _attention_layers(backbone):
    """`(path, layer)` of each `MultiHeadSelfAttention` (pruning reads these too)."""
    attention = [
        (f"backbone/{path}", layer)
        for path, layer in _sublayers(backbone)
        if isinstance(layer, MultiHeadSelfAttention)
    ]
    if not attention:
        raise ConfigError(
            f"model {backbone.name!r} has no MultiHeadSelfAttention layer to put LoRA adapters on."
        )
    return attention


def _adaptable_layers(backbone):
    """`(path, layer)` of each layer holding projections LoRA may adapt:
    the attention layers and the encoder blocks around them."""
    _attention_layers(backbone)  # raises without attention
    return [
        (f"backbone/{path}", layer)
        for path, layer in _sublayers(backbone)
        if isinstance(layer, (MultiHeadSelfAttention, TransformerEncoderBlock))
    ]


def _projections(attention, targets):
    """`(path, EinsumDense or Dense)` of each target projection of each layer."""
    found = []
    for path, layer in attention:
        for name in targets:
            kind, attribute = _PROJECTION_ATTRIBUTES[name]
            if isinstance(layer, kind):
                projection = getattr(layer, attribute)
                found.append((f"{path}/{projection.name}", projection))
    return found


def _lora_settings(model, attention, required=True):
    """`(rank, alpha, targets)` of the model's adapters, or `None` without any."""
    adapted = [(path, layer) for path, layer in _projections(attention, LORA_TARGETS) if layer.lora_enabled]
    if not adapted:
        if required:
            raise ConfigError(f"model {model.name!r} has no LoRA adapters; call enable_lora first.")
        return None
    enabled = {
        name: [layer.lora_enabled for _, layer in _projections(attention, (name,))] for name in LORA_TARGETS
    }
    targets = tuple(name for name in LORA_TARGETS if any(enabled[name]))
    settings = {(layer.lora_rank, layer.lora_alpha) for _, layer in adapted}
    if len(settings) > 1 or not all(all(enabled[name]) for name in targets):
        raise ConfigError(
            f"model {model.name!r} has LoRA adapters of differing ranks or on differing "
            "projections; only adapters put on by enable_lora can be saved or loaded."
        )
    (rank, alpha), = settings
    return rank, alpha, targets


def _adapter_variables(attention):
    """`{key: variable}` of every adapter matrix."""
    return {
        f"{path}/{name}": getattr(layer, name)
        for path, layer in _projections(attention, LORA_TARGETS)
        if layer.lora_enabled
        for name in _ADAPTER_WEIGHTS
    }


def _head_variables(model, backbone):
    """`{key: variable}` of every weight of `model` that is not the backbone's."""
    if model is backbone:
        return {}
    backbone_ids = {id(v) for v in backbone.weights}
    found = {}
    for path, layer in _sublayers(model, include_self=True, skip=backbone):
        children = layer._flatten_layers(include_self=False, recursive=False)
        inner = {id(v) for child in children for v in child.weights}
        for variable in layer.weights:
            if id(variable) in inner or id(variable) in backbone_ids:
                continue  # a sublayer's own weight, or one the head shares with the backbone
            key = "/".join(part for part in ("head", path, variable.name) if part)
            found.setdefault(key, variable)
    return found


def _expected_shapes(model, backbone, attention, rank, targets):
    """`{key: shape}` of every tensor an adapter file for this model holds."""
    shapes = {}
    for path, layer in _projections(attention, targets):
        kernel_shape = tuple(layer.kernel.shape)
        shapes[f"{path}/lora_kernel_a"] = kernel_shape[:-1] + (rank,)  # e.g. (D, N, r)
        shapes[f"{path}/lora_kernel_b"] = (rank, kernel_shape[-1])  # e.g. (r, H)
    for key, variable in _head_variables(model, backbone).items():
        shapes[key] = tuple(variable.shape)
    return shapes


def _read_adapter_file(path):
    """`(rank, alpha, targets, tensors)` of an adapter file."""
    values, tensors = read_safetensors_adapters(
        path, FORMAT, VERSION, ("rank", "alpha", "targets"), "adapter file", "save_adapters"
    )
    rank, alpha, targets = values
    return rank, alpha, _check_metadata(path, lambda: _check_arguments(rank, alpha, targets)), tensors


def read_safetensors_adapters(path, file_format, version, keys, noun, writer):
    """`(values of keys, tensors)` of a safetensors adapter file of `file_format`.

    The metadata values are JSON-decoded. Raises `DataError` naming `path`
    for a missing file, another format (`noun` and `writer` name what was
    expected), damaged metadata or another version.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such adapter file.")
    not_adapters = f"{path}: not an {noun} (a safetensors file written by {writer})."
    try:
        with safe_open(path, framework="np") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise DataError(not_adapters) from error
    if metadata.get("format") != file_format:
        raise DataError(not_adapters)
    found = _check_metadata(path, lambda: json.loads(metadata["version"]))
    values = _check_metadata(path, lambda: tuple(json.loads(metadata[key]) for key in keys))
    if found != version:
        raise DataError(f"{path}: {noun} version {found}; this keras_encoder reads version {version}.")
    return values, tensors


def _check_metadata(path, read):
    """`read()`, its failures turned into one `DataError` naming `path`."""
    try:
        return read()
    except (KeyError, ValueError, TypeError) as error:
        raise DataError(f"{path}: the adapter file's metadata is damaged ({error}).") from error


def _count(variables):
    return int(sum(np.prod(v.shape, dtype=np.int64) for v in variables))


def _drop_traced_functions(model):
    # Traced fit/evaluate/predict functions hold the variables they were
    # traced with (the removed adapters, the old trainable set): retrace.
    for _, layer in _sublayers(model, include_self=True):
        if isinstance(layer, keras.Model):
            layer.train_function = layer.test_function = layer.predict_function = None
    if getattr(model, "_serve", None) is not None:  # EncoderClassifier's traced serving function
        object.__setattr__(model, "_serve", None)
