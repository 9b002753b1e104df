import numpy as np
import pytest

from keras_encoder.training.keras_metrics import WeightedTokenAccuracy


def test_weighted_token_accuracy_counts_every_weighted_token_once():
    metric = WeightedTokenAccuracy()
    rng = np.random.default_rng(0)
    correct = total = 0.0
    # Batches padded to different lengths: each weighted token counts once.
    for width in (3, 11, 6):
        labels = rng.integers(0, 4, size=(5, width))
        logits = rng.normal(size=(5, width, 4)).astype("float32")
        weights = (rng.random((5, width)) < 0.6).astype("float32")
        metric.update_state(labels, logits, sample_weight=weights)
        correct += float(((logits.argmax(-1) == labels) * weights).sum())
        total += float(weights.sum())
    assert float(metric.result()) == pytest.approx(correct / total, abs=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_weighted_token_accuracy_round_trips_its_config():
    metric = WeightedTokenAccuracy(name="token_accuracy")
    again = WeightedTokenAccuracy.from_config(metric.get_config())
    assert again.name == "token_accuracy"
