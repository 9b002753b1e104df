"""Prefix tuning: learned key/value prefixes in every block, the rest frozen.

Prefix tuning fine-tunes a pretrained encoder by learning `P` extra key
and value vectors per head in every attention layer, which every token may
attend to, while every pretrained weight stays frozen. Only the prefixes
and the task head train: `2 * P * D` numbers per block (D hidden), about
74 thousand for MiniLM (6 blocks, D 384) at `P = 16`.

The prefixes are ordinary weights of `MultiHeadSelfAttention`
(`prefix_key`, `prefix_value`, `(P, N, H)` each), and every block's config
records `prefix_length`, so a model with prefixes saves, reloads, resumes
and exports like any other (though not to BERT's layout: `save_pretrained`
refuses it); unlike LoRA they cannot be merged away, and serving attends
over `P` more keys. With rotary positions the queries are rotated and the
prefix keys are not, so a prefix's score depends on the query's position.

The prefixes are learned directly, without the MLP reparameterization of
Li and Liang, as P-tuning v2 does for encoders.

References:
    - [Li and Liang, 2021](https://arxiv.org/abs/2101.00190)
    - [Liu et al., 2022](https://arxiv.org/abs/2110.07602) (P-tuning v2)
"""

import numpy as np

from keras_encoder.adapters.lora import (
    _backbone,
    _check_all_trainable,
    _count,
    _drop_traced_functions,
    _head_variables,
    _sublayers,
)
from keras_encoder.errors import ConfigError
from keras_encoder.layers.encoder_block import TransformerEncoderBlock


def enable_prefix_tuning(model, prefix_length):
    """Give every encoder block a learned prefix and freeze the backbone.

    Adds `prefix_length` learned key and value vectors per head to the
    attention of every `TransformerEncoderBlock` in the backbone, then sets
    which weights train: the prefixes and the task head (every weight of
    `model` outside `model.backbone`). Call it before `compile()`.

    Args:
        model: a task model (`EncoderClassifier`, `EncoderTagger`, ...) or a
            backbone from `build_encoder`, with every layer `trainable`.
        prefix_length: int. Prefix vectors `P` per head and block.

    Returns:
        A dict: `prefix_length`, `blocks` (the prefixed blocks' paths),
        `parameters` and `trainable_parameters`.

    Raises:
        ConfigError: a bad `prefix_length`, a model without encoder blocks,
            blocks that have a prefix already, LoRA adapters on the model,
            or a layer set to `trainable=False`.

    Example:

    ```python
    classifier = EncoderClassifier.from_preset("path/to/bert", num_classes=2)
    enable_prefix_tuning(classifier, prefix_length=16)
    classifier.compile(optimizer=keras.optimizers.AdamW(5e-3))
    classifier.fit(texts, labels)
    ```
    """
    if isinstance(prefix_length, bool) or not isinstance(prefix_length, (int, np.integer)) or prefix_length < 1:
        raise ConfigError(f"`prefix_length` must be a positive integer. Received: prefix_length={prefix_length!r}")
    backbone = _backbone(model)
    blocks = [
        (f"backbone/{path}", layer)
        for path, layer in _sublayers(backbone)
        if isinstance(layer, TransformerEncoderBlock)
    ]
    if not blocks:
        raise ConfigError(f"model {backbone.name!r} has no TransformerEncoderBlock to put a prefix on.")
    prefixed = [path for path, block in blocks if block.prefix_length]
    if prefixed:
        raise ConfigError(f"{prefixed[0]} has a prefix already; start from the base model.")
    adapted = [path for path, layer in _sublayers(backbone) if getattr(layer, "lora_enabled", False)]
    if adapted:
        raise ConfigError(f"{adapted[0]} has LoRA adapters; use prefix tuning or LoRA, not both.")
    _check_all_trainable(model, "enable_prefix_tuning")
    for _, block in blocks:
        block.enable_prefix(int(prefix_length))
    keep = {id(block.attention.prefix_key) for _, block in blocks}
    keep.update(id(block.attention.prefix_value) for _, block in blocks)
    keep.update(id(variable) for variable in _head_variables(model, backbone).values())
    for variable in model.weights:
        if variable.trainable and id(variable) not in keep:
            variable.trainable = False
    _drop_traced_functions(model)
    return {
        "prefix_length": int(prefix_length),
        "blocks": [path for path, _ in blocks],
        "parameters": _count(model.weights),
        "trainable_parameters": _count(model.trainable_weights),
    }
