"""`EncoderClassifier`: the task contract, learning, masking, saving, export, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_encoder.models import EncoderClassifier, EncoderPreprocessor

TEXTS = ["这个手机很好用", "质量太差了", "还不错 推荐", "mixed English 和中文", "很好", "太差"]
LABELS = np.array([1, 0, 1, 1, 1, 0])
NAMES = ["negative", "positive"]


def softmax(logits):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


@pytest.fixture
def classifier(make_backbone, tokenizer):
    return EncoderClassifier(make_backbone(), 2, EncoderPreprocessor(tokenizer), label_names=NAMES)


@pytest.mark.slow
def test_compile_fit_predict_and_keras_file_round_trip(classifier, tmp_path):
    backbone = classifier.backbone
    assert len(classifier.trainable_weights) == len(backbone.trainable_weights) + 2  # logits kernel, bias
    classifier.compile()
    assert isinstance(classifier.optimizer, keras.optimizers.AdamW)
    assert isinstance(classifier.loss, keras.losses.SparseCategoricalCrossentropy)
    history = classifier.fit(TEXTS, LABELS, batch_size=4, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}
    assert np.isfinite(history.history["loss"]).all()
    assert int(classifier.optimizer.iterations) == 2  # six texts, batches of four

    texts = TEXTS + [""]
    predicted = classifier.predict(texts, batch_size=4)
    assert set(predicted) == {"label", "label_id", "probabilities"}
    assert predicted["probabilities"].shape == (7, 2) and predicted["probabilities"].dtype == np.float32
    assert predicted["label_id"].shape == (7,) and predicted["label_id"].dtype == np.int32
    np.testing.assert_allclose(predicted["probabilities"].sum(axis=-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(predicted["label_id"], predicted["probabilities"].argmax(axis=-1))
    assert predicted["label"].tolist() == [NAMES[i] for i in predicted["label_id"]]
    # Raw text gives what the Keras model gives on the preprocessor's ids.
    logits = classifier.predict(classifier.preprocessor(texts), verbose=0)
    assert logits.shape == (7, 2)
    np.testing.assert_allclose(predicted["probabilities"], softmax(logits), atol=1e-5)
    scores = classifier.evaluate(TEXTS, LABELS, verbose=0)

    path = tmp_path / "classifier.keras"
    classifier.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, EncoderClassifier)
    assert (loaded.num_classes, loaded.label_names, loaded.dropout) == (2, NAMES, 0.1)
    assert loaded.preprocessor.tokenizer.vocabulary == classifier.preprocessor.tokenizer.vocabulary
    again = loaded.predict(texts, batch_size=4)
    np.testing.assert_array_equal(again["probabilities"], predicted["probabilities"])
    assert again["label"].tolist() == predicted["label"].tolist()
    # The compile() arguments came back with it.
    np.testing.assert_allclose(loaded.evaluate(TEXTS, LABELS, verbose=0), scores, rtol=1e-6)


def test_predict_on_an_empty_batch_keeps_the_structure(classifier):
    predicted = classifier.predict(tf.constant([], tf.string))
    assert predicted["probabilities"].shape == (0, 2)
    assert predicted["label_id"].shape == predicted["label"].shape == (0,)


def test_label_names_default_to_the_class_ids(make_backbone, tokenizer):
    model = EncoderClassifier(make_backbone(), 3, EncoderPreprocessor(tokenizer))
    assert model.label_names == ["0", "1", "2"]
    assert set(model.predict(["很好"])["label"]) <= {"0", "1", "2"}


@pytest.mark.parametrize("position, bigram_buckets", [
    ("sinusoidal", 0), ("learned", 0), ("rotary", 0), ("none", 0), ("sinusoidal", 32),
])
def test_learns_token_ids_with_every_position(position, bigram_buckets, make_backbone):
    ids = np.array([[2, 7, 8, 9, 3, 0], [2, 11, 3, 0, 0, 0]], "int32")
    model = EncoderClassifier(make_backbone(position=position, bigram_buckets=bigram_buckets, hidden_dim=16), 3)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(ids, np.array([0, 2]), epochs=15, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert list(model.predict(ids, verbose=0).argmax(-1)) == [0, 2]


@pytest.mark.parametrize("position", ["sinusoidal", "rotary"])
def test_padding_appended_to_token_ids_changes_no_logit(position, make_backbone, tokenizer):
    model = EncoderClassifier(make_backbone(position=position, num_layers=2), 2)
    ids = EncoderPreprocessor(tokenizer)(TEXTS).numpy()
    padded = np.pad(ids, [[0, 0], [0, 5]])
    np.testing.assert_allclose(model.predict(padded, verbose=0), model.predict(ids, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_export_serves_raw_strings_with_tensorflow_alone(classifier, tmp_path, serve_in_fresh_python):
    classifier.compile()
    classifier.fit(TEXTS, LABELS, batch_size=6, epochs=1, verbose=0)
    classifier.export(tmp_path / "export")
    long_text = "好" * 20_000  # far past the tokenizer's 16 tokens: truncated, as in training
    batches = [TEXTS + ["", long_text], [long_text], [""], []]
    served = serve_in_fresh_python(tmp_path / "export", batches)
    for batch, outputs in zip(batches[:3], served):
        expected = classifier.predict(batch)
        np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], atol=1e-5)
        np.testing.assert_array_equal(outputs["label_id"], expected["label_id"])
        assert outputs["label"].tolist() == expected["label"].tolist()
    assert served[3]["probabilities"].shape == (0, 2) and served[3]["label"].shape == (0,)


def test_bad_arguments_name_the_argument(make_backbone):
    backbone = make_backbone()
    with pytest.raises(ValueError, match="num_classes=0"):
        EncoderClassifier(backbone, 0)
    with pytest.raises(ValueError, match="num_classes"):
        EncoderClassifier(backbone, 2.5)
    with pytest.raises(ValueError, match="`label_names` must hold num_classes=2 names. Received: 3"):
        EncoderClassifier(backbone, 2, label_names=["a", "b", "c"])


def test_raw_text_needs_a_preprocessor(make_backbone, tmp_path):
    model = EncoderClassifier(make_backbone(), 2)
    model.compile()
    with pytest.raises(ValueError, match="needs a preprocessor"):
        model.predict(TEXTS)
    with pytest.raises(ValueError, match="needs a preprocessor"):
        model.fit(TEXTS, LABELS, verbose=0)
    with pytest.raises(ValueError, match="needs a preprocessor"):
        model.export(tmp_path / "export")
    assert not (tmp_path / "export").exists()
