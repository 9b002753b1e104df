"""What every task model shares: config round trip, shapes, weights, a fit
step (table-driven), the inputs `fit`/`evaluate` take, `from_preset`."""

import numpy as np
import pytest
import tensorflow as tf

from keras_encoder.errors import ConfigError
from keras_encoder.models import (
    EncoderClassifier,
    EncoderMaskedLM,
    EncoderPreprocessor,
    EncoderTagger,
)

TEXTS = ["这个手机很好用", "质量太差了", "还不错 推荐", "mixed English 和中文", "很好", "太差"]
LABELS = np.array([1, 0, 1, 1, 1, 0])
IDS = np.array([[2, 7, 8, 9, 3, 0], [2, 11, 3, 0, 0, 0]], "int32")
TAGS = ["O", "B-X", "I-X"]

# masked_lm.py silences this warning when it is imported; pytest restores
# the warning filters after collecting, so it is silenced here again.
pytestmark = pytest.mark.filterwarnings("ignore:Layer 'mlm_head'")

# (task factory, inputs, targets, output shape, weights beyond the backbone's)
CASES = {
    "classifier": (
        lambda backbone, preprocessor: EncoderClassifier(backbone, 3, preprocessor, label_names=["a", "b", "c"]),
        IDS,
        np.array([0, 2]),
        (2, 3),
        2,  # logits kernel and bias
    ),
    "tagger": (
        lambda backbone, preprocessor: EncoderTagger(
            backbone, TAGS, EncoderPreprocessor(preprocessor.tokenizer, unit="char"), scheme="bio",
        ),
        IDS,
        np.array([[0, 1, 2, 0, 0, 0], [0, 1, 0, 0, 0, 0]]),
        (2, 6, 3),
        5,  # logits kernel and bias; transitions, start and end scores
    ),
    "tagger_window_no_crf": (
        lambda backbone, preprocessor: EncoderTagger(
            backbone, TAGS, EncoderPreprocessor(preprocessor.tokenizer, unit="word"), crf=False,
            window_features=64, window_scale=4.0,
        ),
        IDS,
        np.array([[0, 1, 2, 0, 0, 0], [0, 1, 0, 0, 0, 0]]),
        (2, 6, 3),
        3,  # logits kernel and bias; the window table
    ),
    "masked_lm": (
        lambda backbone, preprocessor: EncoderMaskedLM(backbone, preprocessor, mask_rate=0.2),
        {"token_ids": IDS, "mask_positions": np.array([[1, 2], [1, 1]], "int32")},
        np.array([[7, 8], [11, 11]]),
        (2, 2, None),  # the vocabulary size
        6,  # MaskedLMHead: intermediate dense, layer norm and output, two each
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_round_trip_shapes_weights_and_a_fit_step(name, make_backbone, tokenizer):
    make_task, inputs, targets, shape, head_weights = CASES[name]
    backbone = make_backbone()
    model = make_task(backbone, EncoderPreprocessor(tokenizer))
    outputs = model.predict(inputs, verbose=0)
    assert outputs.shape == tuple(tokenizer.vocabulary_size if size is None else size for size in shape)
    assert len(model.weights) == len(backbone.weights) + head_weights

    again = type(model).from_config(model.get_config())
    assert again.get_config() == model.get_config()
    assert [w.shape for w in again.weights] == [w.shape for w in model.weights]
    again.set_weights(model.get_weights())
    np.testing.assert_allclose(again.predict(inputs, verbose=0), outputs, atol=1e-6)

    model.compile()
    before = [np.array(w) for w in model.trainable_weights]
    history = model.fit(inputs, targets, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    moved = [not np.allclose(a, np.asarray(b)) for a, b in zip(before, model.trainable_weights)]
    assert all(moved), [w.path for w, m in zip(model.trainable_weights, moved) if not m]


def test_token_id_inputs_keep_their_sample_weights(make_backbone):
    model = EncoderClassifier(make_backbone(), 2, dropout=0.0)
    model.compile()
    labels = np.array([0, 1])
    first_only, _ = model.evaluate(IDS[:1], labels[:1], verbose=0)
    # The cross-entropy sums weighted losses over the batch size.
    weighted = first_only / 2
    loss, _ = model.evaluate(IDS, labels, sample_weight=np.array([1.0, 0.0]), verbose=0)
    assert loss == pytest.approx(weighted, rel=1e-5)
    # The loss of fit's one step is the weighted loss before it.
    history = model.fit(IDS, labels, sample_weight=np.array([1.0, 0.0]), batch_size=2, epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(weighted, rel=1e-5)


@pytest.mark.slow
def test_raw_text_in_every_form(make_backbone, tokenizer):
    model = EncoderClassifier(make_backbone(), 2, EncoderPreprocessor(tokenizer))
    model.compile()
    expected = model.evaluate(TEXTS, LABELS, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((TEXTS, LABELS)).batch(4)
    for texts in (np.array(TEXTS), np.array(TEXTS, dtype=object), tf.constant(TEXTS)):
        np.testing.assert_allclose(model.evaluate(texts, LABELS, verbose=0), expected, rtol=1e-5)
    np.testing.assert_allclose(model.evaluate(dataset, verbose=0), expected, rtol=1e-5)
    np.testing.assert_allclose(model.evaluate(TEXTS, LABELS, batch_size=2, verbose=0), expected, rtol=1e-5)
    history = model.fit(
        TEXTS, LABELS, batch_size=3, epochs=1, validation_data=(TEXTS[:2], LABELS[:2]), verbose=0
    )
    assert {"loss", "val_loss", "val_accuracy"} <= set(history.history)
    assert int(model.optimizer.iterations) == 2
    model.fit(dataset, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 4


def test_from_preset_loads_a_run_directory_or_a_keras_file(make_backbone, tokenizer, tmp_path):
    model = EncoderClassifier(make_backbone(), 2, EncoderPreprocessor(tokenizer), label_names=["neg", "pos"])
    (tmp_path / "run").mkdir()
    model.save(tmp_path / "run" / "model.keras")
    for preset in (tmp_path / "run", tmp_path / "run" / "model.keras"):
        loaded = EncoderClassifier.from_preset(str(preset))
        assert isinstance(loaded, EncoderClassifier) and loaded.label_names == ["neg", "pos"]
        assert loaded.preprocessor.tokenizer.vocabulary == tokenizer.vocabulary
        np.testing.assert_array_equal(loaded.predict(IDS, verbose=0), model.predict(IDS, verbose=0))
    with pytest.raises(ConfigError, match="no model.keras or model.safetensors here"):
        EncoderClassifier.from_preset(str(tmp_path))
    with pytest.raises(ConfigError, match="takes no other arguments.*Received: num_classes"):
        EncoderClassifier.from_preset(str(tmp_path / "run"), num_classes=3)
    with pytest.raises(ConfigError, match="holds a EncoderClassifier, not a EncoderTagger"):
        EncoderTagger.from_preset(str(tmp_path / "run"))
