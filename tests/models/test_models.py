"""Backbone, task heads, attention probe, LoRA and int8."""

import numpy as np
import pytest

import keras

from keras_encoder.layers import TransformerEncoderBlock
from keras_encoder.models import (
    EncoderConfig,
    attention_probe,
    build_classifier,
    build_encoder,
    build_token_classifier,
)

IDS = np.array([[2, 7, 8, 9, 3, 0], [2, 11, 3, 0, 0, 0]], "int32")


def tiny(**overrides):
    values = dict(
        vocabulary_size=40, max_length=16, hidden_dim=16, num_heads=2,
        num_layers=2, intermediate_dim=32, dropout=0.0,
    )
    values.update(overrides)
    return EncoderConfig(**values)


def test_encoder_outputs():
    outputs = build_encoder(tiny()).predict(IDS, verbose=0)
    assert set(outputs) == {"sequence_output", "pooled_output"}
    assert outputs["sequence_output"].shape == (2, 6, 16)
    assert outputs["pooled_output"].shape == (2, 16)


def test_layer_names_follow_the_contract():
    names = [layer.name for layer in build_encoder(tiny(norm_first=True, embedding_norm=True)).layers]
    for expected in ("token_ids", "embedding", "embedding_norm", "block_0", "block_1", "final_norm", "pooling"):
        assert expected in names


@pytest.mark.parametrize("position, bigram_buckets", [
    ("sinusoidal", 0), ("learned", 0), ("rotary", 0), ("none", 0), ("sinusoidal", 32),
])
def test_classifier_learns_and_round_trips(position, bigram_buckets, tmp_path):
    model = build_classifier(tiny(position=position, bigram_buckets=bigram_buckets), num_classes=3)
    labels = np.array([0, 2])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(IDS, labels, epochs=15, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert list(model.predict(IDS, verbose=0).argmax(-1)) == [0, 2]
    path = tmp_path / "classifier.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(restored.predict(IDS, verbose=0), model.predict(IDS, verbose=0))


def test_token_classifier_logits_carry_mask_and_loss_ignores_padding():
    model = build_token_classifier(tiny(), num_tags=4)
    logits = model(IDS)
    assert tuple(logits.shape) == (2, 6, 4)
    np.testing.assert_array_equal(np.asarray(logits._keras_mask), IDS != 0)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    tags = np.array([[0, 1, 2, 3, 0, 0], [0, 1, 0, 0, 0, 0]])
    garbage = np.where(IDS == 0, 3, tags)  # different labels on padding only
    assert model.evaluate(IDS, tags, verbose=0) == pytest.approx(
        model.evaluate(IDS, garbage, verbose=0), abs=1e-6
    )


def test_bad_head_sizes():
    with pytest.raises(ValueError, match="num_classes=0"):
        build_classifier(tiny(), num_classes=0)
    with pytest.raises(ValueError, match="num_tags=-2"):
        build_token_classifier(tiny(), num_tags=-2)


@pytest.mark.parametrize("embedding_norm", [False, True])
def test_attention_probe_shares_weights_and_matches_blocks(embedding_norm):
    model = build_classifier(tiny(embedding_norm=embedding_norm), num_classes=2)
    probe = attention_probe(model)
    scores = probe.predict(IDS, verbose=0)
    assert list(scores) == ["block_0", "block_1"]
    assert scores["block_0"].shape == (2, 2, 6, 6)
    assert np.all(scores["block_1"][1, :, :, 3:] == 0.0)
    # The same numbers as asking the first block directly.
    embedding = model.get_layer("embedding")
    x = embedding(IDS)
    if embedding_norm:
        x = model.get_layer("embedding_norm")(x)
    _, direct = model.get_layer("block_0")(
        x, mask=embedding.compute_mask(IDS), return_attention_scores=True
    )
    np.testing.assert_allclose(scores["block_0"], direct, atol=1e-6)
    # Shared, not copied: changing the model's weights changes the probe.
    query = model.get_layer("block_0").attention.query_dense.kernel
    query.assign(query * 3.0)
    assert not np.allclose(probe.predict(IDS, verbose=0)["block_0"], scores["block_0"])
    assert len(probe.trainable_weights) == len(
        build_encoder(tiny(embedding_norm=embedding_norm)).trainable_weights
    )


def test_attention_probe_needs_blocks():
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="TransformerEncoderBlock"):
        attention_probe(keras.Model(inputs, keras.layers.Dense(2)(inputs)))


def test_lora_reduces_trainable_parameters_and_still_trains():
    model = build_classifier(tiny(hidden_dim=32, intermediate_dim=64), num_classes=2)
    full = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    model.get_layer("embedding").trainable = False
    for block in (layer for layer in model.layers if isinstance(layer, TransformerEncoderBlock)):
        for dense in (
            block.attention.query_dense, block.attention.key_dense,
            block.attention.value_dense, block.attention.output_dense,
            block.ffn_inner, block.ffn_outer,
        ):
            dense.enable_lora(rank=2)
    lora = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert lora < full / 2
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(IDS, np.array([0, 1]), epochs=10, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_int8_quantization_stays_close():
    model = build_classifier(tiny(hidden_dim=32, intermediate_dim=64), num_classes=3)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 40, size=(16, 10)).astype("int32")
    before = model.predict(ids, verbose=0)
    model.quantize("int8")
    quantized = [layer for layer in model._flatten_layers() if layer.quantization_mode == "int8"]
    assert len(quantized) >= 2 * 6  # every projection and feed-forward layer
    after = model.predict(ids, verbose=0)
    scale = np.abs(before).max()
    assert np.abs(after - before).max() < 0.05 * scale


def test_masked_lm_pretraining_reaches_the_classifier():
    from keras_encoder.models import build_masked_lm

    config = tiny()
    encoder = build_encoder(config)
    masked_lm = build_masked_lm(config, encoder=encoder)
    inputs = {"token_ids": IDS, "mask_positions": np.array([[1, 2], [1, 1]], "int32")}
    logits = masked_lm.predict(inputs, verbose=0)
    assert logits.shape == (2, 2, config.vocabulary_size)
    masked_lm.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    classifier = build_classifier(config, 2, encoder=encoder)
    before = classifier.predict(IDS, verbose=0)
    masked_lm.fit(inputs, np.array([[7, 8], [11, 11]]), epochs=3, verbose=0)
    # Same layer objects: pretraining moved the classifier's encoder too.
    assert not np.allclose(classifier.predict(IDS, verbose=0), before)
    assert classifier.get_layer("block_0") is masked_lm.get_layer("block_0")
