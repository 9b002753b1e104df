"""Backbone, attention probe, LoRA and int8 (the task models have their own files)."""

import numpy as np
import pytest

import keras

from keras_encoder.layers import TransformerEncoderBlock
from keras_encoder.models import EncoderClassifier, EncoderConfig, attention_probe, build_encoder

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


@pytest.mark.parametrize("embedding_norm", [False, True])
def test_attention_probe_shares_weights_and_matches_blocks(embedding_norm):
    model = EncoderClassifier(build_encoder(tiny(embedding_norm=embedding_norm)), 2)
    probe = attention_probe(model)  # finds the layers inside the task's backbone
    backbone = model.backbone
    scores = probe.predict(IDS, verbose=0)
    assert list(scores) == ["block_0", "block_1"]
    assert scores["block_0"].shape == (2, 2, 6, 6)
    assert np.all(scores["block_1"][1, :, :, 3:] == 0.0)
    # The same numbers as asking the first block directly.
    embedding = backbone.get_layer("embedding")
    x = embedding(IDS)
    if embedding_norm:
        x = backbone.get_layer("embedding_norm")(x)
    _, direct = backbone.get_layer("block_0")(
        x, mask=embedding.compute_mask(IDS), return_attention_scores=True
    )
    np.testing.assert_allclose(scores["block_0"], direct, atol=1e-6)
    # Shared, not copied: changing the model's weights changes the probe.
    query = backbone.get_layer("block_0").attention.query_dense.kernel
    query.assign(query * 3.0)
    assert not np.allclose(probe.predict(IDS, verbose=0)["block_0"], scores["block_0"])
    assert len(probe.trainable_weights) == len(
        build_encoder(tiny(embedding_norm=embedding_norm)).trainable_weights
    )


def test_attention_probe_needs_blocks():
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="TransformerEncoderBlock"):
        attention_probe(keras.Model(inputs, keras.layers.Dense(2)(inputs)))


@pytest.mark.slow
def test_lora_reduces_trainable_parameters_and_still_trains():
    model = EncoderClassifier(build_encoder(tiny(hidden_dim=32, intermediate_dim=64)), 2)
    full = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    model.backbone.get_layer("embedding").trainable = False
    for block in (layer for layer in model.backbone.layers if isinstance(layer, TransformerEncoderBlock)):
        for dense in (
            block.attention.query_dense, block.attention.key_dense,
            block.attention.value_dense, block.attention.output_dense,
            block.ffn_inner, block.ffn_outer,
        ):
            dense.enable_lora(rank=2)
    lora = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert lora < full / 2
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(IDS, np.array([0, 1]), epochs=10, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


# Quantizing a task model walks into its backbone, where Keras notes every
# layer without weights to quantize.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Layer .* does not have a `quantize` method")
def test_int8_quantization_stays_close():
    model = EncoderClassifier(build_encoder(tiny(hidden_dim=32, intermediate_dim=64)), 3)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 40, size=(16, 10)).astype("int32")
    before = model.predict(ids, verbose=0)
    model.quantize("int8")
    blocks = [layer for layer in model.backbone.layers if isinstance(layer, TransformerEncoderBlock)]
    quantized = [
        dense
        for block in blocks
        for dense in (
            block.attention.query_dense, block.attention.key_dense, block.attention.value_dense,
            block.attention.output_dense, block.ffn_inner, block.ffn_outer,
        )
        if dense.quantization_mode == "int8"
    ]
    assert len(quantized) == 2 * 6  # every projection and feed-forward layer
    after = model.predict(ids, verbose=0)
    scale = np.abs(before).max()
    assert np.abs(after - before).max() < 0.05 * scale
