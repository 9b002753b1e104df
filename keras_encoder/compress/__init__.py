"""Making a trained encoder smaller and faster: quantized export.

`quantize_model(model, "int8")` turns a task model's projections and
embeddings to int8 in place; `python -m keras_encoder.compress.quantize
RUN_DIR` does it to a finished run and scores it; `train.py --quantize
int8` does it at export.
"""

import importlib

_LAZY = {name: "keras_encoder.compress.quantize" for name in ("QUANTIZE_MODES", "quantize_model", "quantize_run")}


def __getattr__(name):
    # Loaded on first use, so that `python -m keras_encoder.compress.quantize`
    # runs the module once, as `__main__`.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_encoder.compress' has no attribute {name!r}")


__all__ = sorted(_LAZY)
