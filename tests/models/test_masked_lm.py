"""`EncoderMaskedLM`: the task contract, masks, padding, saving, pretraining, errors."""

import json
import zipfile

import keras
import keras_hub
import numpy as np
import pytest

from keras_encoder.data.masking import SpanMaskGenerator
from keras_encoder.models import EncoderClassifier, EncoderMaskedLM, EncoderPreprocessor

TEXTS = ["这个手机很好用", "质量太差了", "还不错 推荐", "mixed English 和中文", "很好", "太差"]
IDS = np.array([[2, 7, 8, 9, 3, 0], [2, 11, 3, 0, 0, 0]], "int32")
POSITIONS = np.array([[1, 2], [1, 1]], "int32")

# masked_lm.py silences this warning when it is imported; pytest restores
# the warning filters after collecting, so it is silenced here again.
pytestmark = pytest.mark.filterwarnings("ignore:Layer 'mlm_head'")


@pytest.fixture
def masked_lm(make_backbone, tokenizer):
    return EncoderMaskedLM(make_backbone(), EncoderPreprocessor(tokenizer))


@pytest.mark.slow
def test_compile_fit_predict_and_keras_file_round_trip(masked_lm, tokenizer, tmp_path):
    inputs = {"token_ids": IDS, "mask_positions": POSITIONS}
    logits = masked_lm.predict(inputs, verbose=0)
    assert logits.shape == (2, 2, tokenizer.vocabulary_size)
    masked_lm.compile()
    assert isinstance(masked_lm.optimizer, keras.optimizers.AdamW)
    history = masked_lm.fit(TEXTS, batch_size=4, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}
    assert np.isfinite(history.history["loss"]).all()
    assert int(masked_lm.optimizer.iterations) == 2
    assert not np.allclose(masked_lm.predict(inputs, verbose=0), logits)  # the backbone learned

    path = tmp_path / "masked_lm.keras"
    masked_lm.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, EncoderMaskedLM) and loaded.mask_rate == 0.15
    np.testing.assert_array_equal(loaded.predict(inputs, verbose=0), masked_lm.predict(inputs, verbose=0))
    history = loaded.fit(TEXTS, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_masks_fall_on_real_tokens_only(masked_lm, tokenizer):
    generator = masked_lm.mask_generator()
    ids = EncoderPreprocessor(tokenizer)(TEXTS * 20).numpy()
    masked = {key: np.asarray(value) for key, value in generator(ids).items()}
    chosen = masked["mask_weights"] > 0
    targets = masked["mask_ids"][chosen]
    assert len(targets) > 0
    assert not np.isin(targets, [tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id]).any()
    rows = np.nonzero(chosen)[0]
    np.testing.assert_array_equal(ids[rows, masked["mask_positions"][chosen]], targets)
    # Most chosen tokens become [MASK]; [CLS] and padding stay as they were.
    replaced = masked["token_ids"][rows, masked["mask_positions"][chosen]]
    assert (replaced == tokenizer.mask_id).mean() > 0.5
    assert (masked["token_ids"][:, 0] == tokenizer.cls_id).all()
    np.testing.assert_array_equal(masked["token_ids"][ids == 0], 0)


def test_padding_appended_to_token_ids_changes_no_logit(make_backbone):
    model = EncoderMaskedLM(make_backbone(num_layers=2, position="rotary"))
    padded = np.pad(IDS, [[0, 0], [0, 5]])
    np.testing.assert_allclose(
        model.predict({"token_ids": padded, "mask_positions": POSITIONS}, verbose=0),
        model.predict({"token_ids": IDS, "mask_positions": POSITIONS}, verbose=0),
        atol=1e-5,
    )


def test_the_loss_counts_masked_tokens_only(make_backbone):
    model = EncoderMaskedLM(make_backbone())
    model.compile()
    inputs = {"token_ids": IDS, "mask_positions": POSITIONS}
    targets = np.array([[7, 8], [11, 11]])
    weights = np.array([[1.0, 1.0], [1.0, 0.0]], "float32")
    loss, _ = model.evaluate(inputs, targets, sample_weight=weights, verbose=0)
    other = np.where(weights > 0, targets, 20)  # another target where the weight is 0
    assert model.evaluate(inputs, other, sample_weight=weights, verbose=0)[0] == pytest.approx(loss, rel=1e-6)
    logits = model.predict(inputs, verbose=0)
    log_probabilities = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_probabilities, targets[..., None], -1)[..., 0][weights > 0].mean()
    assert loss == pytest.approx(expected, rel=1e-5)


def test_pretraining_reaches_a_classifier_on_the_same_backbone(make_backbone):
    backbone = make_backbone()
    masked_lm = EncoderMaskedLM(backbone)
    classifier = EncoderClassifier(backbone, 2)
    masked_lm.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = classifier.predict(IDS, verbose=0)
    masked_lm.fit({"token_ids": IDS, "mask_positions": POSITIONS}, np.array([[7, 8], [11, 11]]), epochs=3, verbose=0)
    # Same layer objects: pretraining moved the classifier's encoder too.
    assert not np.allclose(classifier.predict(IDS, verbose=0), before)
    assert classifier.backbone.get_layer("block_0") is masked_lm.backbone.get_layer("block_0")


def test_from_preset_puts_a_new_head_on_a_saved_masked_lm(masked_lm, tokenizer, tmp_path):
    from keras_encoder.models import EncoderTagger

    masked_lm.save(tmp_path / "model.keras")
    classifier = EncoderClassifier.from_preset(str(tmp_path), num_classes=3, sequence_length=16)
    assert classifier.preprocessor.tokenizer.sequence_length == 16
    assert classifier.preprocessor.tokenizer.vocabulary == tokenizer.vocabulary
    # The pretrained weights, not a new initialization, under the new head.
    for new, old in zip(classifier.backbone.weights, masked_lm.backbone.weights):
        np.testing.assert_array_equal(new.numpy(), old.numpy())
    assert classifier.predict(TEXTS, verbose=0)["probabilities"].shape == (len(TEXTS), 3)
    tagger = EncoderTagger.from_preset(str(tmp_path), tag_names=["O", "B-X", "I-X"], scheme="bio", unit="char")
    assert tagger.preprocessor.unit == "char"
    # The masked LM itself comes back as it was.
    assert isinstance(EncoderMaskedLM.from_preset(str(tmp_path)), EncoderMaskedLM)


@pytest.mark.slow
def test_span_masking_trains_saves_and_loads(make_backbone, tokenizer, tmp_path):
    model = EncoderMaskedLM(make_backbone(), EncoderPreprocessor(tokenizer), mask_spans=3)
    generator = model.mask_generator()
    assert isinstance(generator, SpanMaskGenerator)
    assert (generator.mask_spans, generator.mask_rate, generator.mask_selection_length) == (3, 0.15, 5)
    model.compile()
    history = model.fit(TEXTS, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.get_config()["mask_spans"] == 3
    path = tmp_path / "spans.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert (loaded.mask_spans, loaded.mask_rate) == (3, 0.15)
    assert isinstance(loaded.mask_generator(), SpanMaskGenerator)


def test_a_file_saved_before_span_masking_loads_with_single_tokens(masked_lm, tmp_path):
    assert masked_lm.mask_spans == 1
    assert isinstance(masked_lm.mask_generator(), keras_hub.layers.MaskedLMMaskGenerator)
    masked_lm.save(tmp_path / "new.keras")
    # The same file without the `mask_spans` entry, as older versions wrote it.
    with zipfile.ZipFile(tmp_path / "new.keras") as new, zipfile.ZipFile(tmp_path / "old.keras", "w") as old:
        for item in new.infolist():
            data = new.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                assert config["config"].pop("mask_spans") == 1
                data = json.dumps(config)
            old.writestr(item, data)
    loaded = keras.models.load_model(tmp_path / "old.keras")
    assert (loaded.mask_spans, loaded.mask_rate) == (1, 0.15)
    assert isinstance(loaded.mask_generator(), keras_hub.layers.MaskedLMMaskGenerator)


def test_bad_arguments_name_the_argument(make_backbone):
    for rate in (0, 1, 1.5):
        with pytest.raises(ValueError, match=f"mask_rate={rate}"):
            EncoderMaskedLM(make_backbone(), mask_rate=rate)
    for spans in (0, 5, 1.5, True):
        with pytest.raises(ValueError, match=f"mask_spans={spans}"):
            EncoderMaskedLM(make_backbone(), mask_spans=spans)
    model = EncoderMaskedLM(make_backbone())
    model.compile()
    with pytest.raises(ValueError, match="needs a preprocessor"):
        model.fit(TEXTS, verbose=0)
    with pytest.raises(ValueError, match="needs a preprocessor"):
        model.mask_generator()
