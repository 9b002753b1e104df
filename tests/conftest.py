import json
import os
import subprocess
import sys
import textwrap

# Quiet TensorFlow's start-up chatter in test output; keep errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

from keras_encoder.text.tokenizer import RESERVED_TOKENS  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def assert_survives_saving(tmp_path):
    """Check a model predicts the same after a `.keras` save and load; return the loaded model."""
    import numpy as np

    def check(model, inputs, atol=1e-6):
        path = tmp_path / "saved.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(loaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=atol)
        return loaded

    return check


# A fixed vocabulary: no learning step, the same ids on every run.
VOCABULARY = RESERVED_TOKENS + list("这个手机很好用质量太差了还不错推荐和中文江泽民在北京书国人") + [
    "mixed", "english", "new", "york", "read", "##ing", "i", "saw", "today", ".",
]


@pytest.fixture(scope="session")
def tokenizer():
    from keras_encoder.text import Tokenizer

    return Tokenizer(VOCABULARY, sequence_length=16)


@pytest.fixture
def make_backbone(tokenizer):
    """`make_backbone(**overrides)`: a one-block encoder over the fixed vocabulary."""
    from keras_encoder.models import EncoderConfig, build_encoder

    def make(**overrides):
        values = dict(
            vocabulary_size=tokenizer.vocabulary_size, max_length=16, hidden_dim=8, num_heads=2,
            num_layers=1, intermediate_dim=16, dropout=0.0,
        )
        values.update(overrides)
        return build_encoder(EncoderConfig(**values))

    return make


# A fresh Python that serves an exported SavedModel with TensorFlow alone.
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
        import numpy as np

        with np.load(out, allow_pickle=False) as arrays:
            outputs = [{} for _ in batches]
            for name in arrays.files:
                index, key = name.split("/")
                outputs[int(index)][key] = arrays[name]
        return outputs

    return serve
