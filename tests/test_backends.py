"""The layers, the backbone and the task models (on token ids) run unchanged
on the JAX backend."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import numpy as np, keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from keras_encoder.models import (
        EncoderClassifier, EncoderConfig, EncoderTagger, attention_probe, build_encoder,
    )
    ids = np.array([[2, 7, 8, 9, 3], [2, 11, 3, 0, 0]], "int32")
    longer = np.concatenate([ids, np.zeros((2, 4), "int32")], axis=1)
    for position in ("sinusoidal", "learned", "rotary"):
        config = EncoderConfig(vocabulary_size=30, max_length=16, hidden_dim=16,
                               num_heads=2, num_layers=2, intermediate_dim=32,
                               position=position, dropout=0.1)
        model = EncoderClassifier(build_encoder(config), 2)
        model.compile()
        model.fit(ids, np.array([0, 1]), epochs=2, verbose=0)
        a, b = model.predict(ids, verbose=0), model.predict(longer, verbose=0)
        assert np.allclose(a, b, atol=1e-5), (position, a, b)
        scores = attention_probe(model).predict(ids, verbose=0)["block_1"]
        assert scores.shape == (2, 2, 5, 5) and np.all(scores[1, :, :, 3:] == 0)
        model.save("/tmp/keras_encoder_jax.keras")
        again = keras.models.load_model("/tmp/keras_encoder_jax.keras")
        assert np.allclose(again.predict(ids, verbose=0), a, atol=1e-6)
    # The tagger's CRF loss (compute_loss, keras.ops only) trains on JAX too,
    # and a reloaded tagger trains on.
    tags = np.array([[0, 1, 2, 0, 0], [0, 1, 0, 0, 0]])
    weights = np.array([[0, 1, 1, 1, 0], [0, 1, 0, 0, 0]], "float32")
    tagger = EncoderTagger(build_encoder(config), ["O", "B-X", "I-X"], scheme="bio", window_features=64)
    tagger.compile(optimizer=keras.optimizers.Adam(1e-2))
    losses = tagger.fit(ids, tags, sample_weight=weights, epochs=5, verbose=0).history["loss"]
    assert losses[-1] < losses[0], losses
    tagger.save("/tmp/keras_encoder_jax.keras")
    again = keras.models.load_model("/tmp/keras_encoder_jax.keras")
    assert np.allclose(again.predict(longer, verbose=0)[:, :5], tagger.predict(ids, verbose=0), atol=1e-5)
    loss = again.fit(ids, tags, sample_weight=weights, epochs=1, verbose=0).history["loss"][0]
    assert np.isfinite(loss) and loss < losses[0], (loss, losses)
    print("jax ok")
    """
)


@pytest.mark.slow
def test_models_run_on_jax(tmp_path):
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    script = SCRIPT.replace("/tmp/keras_encoder_jax.keras", str(tmp_path / "m.keras"))
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "jax ok" in result.stdout
