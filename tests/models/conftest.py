"""Fixtures of the task-model tests: a fresh Python that serves an exported
SavedModel with TensorFlow alone (the tiny tokenizer and backbone are in
tests/conftest.py)."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SERVE = textwrap.dedent(
    """
    import json, sys
    # The export must not need this package: make it unimportable.
    sys.modules["keras_encoder"] = None
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the tokenizer's ops)

    path, batches, out = sys.argv[1], json.load(open(sys.argv[2], encoding="utf-8")), sys.argv[3]
    serve = tf.saved_model.load(path).signatures["serving_default"]
    arrays = {}
    for index, batch in enumerate(batches):
        for key, value in serve(tf.constant(batch, tf.string, shape=[len(batch)])).items():
            value = value.numpy()
            if value.dtype == object:  # bytes: saved as text, without pickling
                value = np.char.decode(value.astype(bytes), "utf-8")
            arrays[f"{index}/{key}"] = value
    np.savez(out, **arrays)
    """
)


@pytest.fixture
def serve_in_fresh_python(tmp_path):
    """`serve(path, batches)`: each batch's `serving_default` outputs, computed
    in a new Python process that imports only TensorFlow and tensorflow-text."""

    def serve(path, batches):
        out = tmp_path / "served.npz"
        texts = tmp_path / "batches.json"  # long texts do not fit on a command line
        texts.write_text(json.dumps(batches), encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-c", SERVE, str(path), str(texts), str(out)],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        with np.load(out, allow_pickle=False) as arrays:
            outputs = [{} for _ in batches]
            for name in arrays.files:
                index, key = name.split("/")
                outputs[int(index)][key] = arrays[name]
        return outputs

    return serve
