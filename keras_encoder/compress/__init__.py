"""Making a trained encoder smaller and faster: int8 export, head pruning.

`quantize_model(model, "int8")` turns a task model's projections and
embeddings to int8 in place; `python -m keras_encoder.compress.quantize
RUN_DIR` does it to a finished run and scores it; `train.py --quantize
int8` does it at export.

`head_importance`, `heads_to_prune` and `prune_heads` score attention
heads and remove the weakest; `python -m keras_encoder.compress.prune
RUN_DIR --share 0.5` does it to a finished run, fine-tunes briefly and
scores it.
"""

import importlib

_LAZY = {
    **{name: "keras_encoder.compress.quantize" for name in ("QUANTIZE_MODES", "quantize_model", "quantize_run")},
    **{name: "keras_encoder.compress.prune" for name in ("head_importance", "heads_to_prune", "prune_heads", "prune_run")},
}


def __getattr__(name):
    # Loaded on first use, so that `python -m keras_encoder.compress.quantize`
    # (or `.prune`) runs the module once, as `__main__`.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_encoder.compress' has no attribute {name!r}")


__all__ = sorted(_LAZY)
