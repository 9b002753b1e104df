import os

# Quiet TensorFlow's start-up chatter in test output; keep errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


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
