import os

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
