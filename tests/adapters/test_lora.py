"""LoRA adapters: what trains, the adapter file, merging, masking, errors."""

import re

import keras
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from keras_encoder.errors import ConfigError, DataError
from keras_encoder.models import EncoderClassifier
from keras_encoder.adapters.lora import (
    LORA_TARGETS,
    enable_lora,
    load_adapters,
    lora_summary,
    merge_adapters,
    save_adapters,
)

IDS = np.array([[2, 7, 8, 9, 3, 0], [2, 11, 3, 0, 0, 0]], "int32")
LABELS = np.array([0, 1])
# The tiny model: D=16 hidden, N=2 heads of H=8, two blocks.
D, N, H, LAYERS = 16, 2, 8, 2
SIZES = dict(hidden_dim=D, num_heads=N, num_layers=LAYERS, intermediate_dim=32)


@pytest.fixture
def make_classifier(make_backbone):
    """`make_classifier(num_classes=2, **backbone_overrides)`: a two-block classifier."""

    def make(num_classes=2, **overrides):
        return EncoderClassifier(make_backbone(**{**SIZES, **overrides}), num_classes)

    return make


def randomize(classifier, seed=0):
    """Give every adapter (B starts at zero) and the head random values, so they matter."""
    rng = np.random.default_rng(seed)
    adapters = [v for v in classifier.weights if v.name in ("lora_kernel_a", "lora_kernel_b")]
    for variable in adapters + classifier.get_layer("logits").weights:
        variable.assign(rng.normal(scale=0.5, size=variable.shape).astype("float32"))


def lora_layers(model):
    return [layer for layer in model._flatten_layers() if getattr(layer, "lora_enabled", False)]


def test_enable_lora_trains_only_the_adapters_and_the_head(make_classifier):
    model = make_classifier()
    before = model.predict(IDS, verbose=0)
    parameters = model.count_params()

    summary = enable_lora(model, rank=4)

    r = 4
    adapters = 2 * LAYERS * (D * N * r + r * H)  # query and value: A (D, N, r), B (r, H)
    head = D * 2 + 2
    assert summary == {
        "rank": 4,
        "alpha": 4,
        "targets": ["query", "value"],
        "adapted": [
            f"backbone/block_{i}/attention/{name}" for i in range(LAYERS) for name in ("query", "value")
        ],
        "parameters": parameters + adapters,
        "trainable_parameters": adapters + head,
    }
    logits = model.get_layer("logits")
    trainable = model.trainable_weights
    assert sorted(v.name for v in trainable if not any(v is w for w in logits.weights)) == sorted(
        ["lora_kernel_a", "lora_kernel_b"] * 2 * LAYERS
    )
    assert all(any(w is v for v in trainable) for w in logits.weights)
    # B starts at zero: the adapted model computes exactly what it did.
    np.testing.assert_array_equal(model.predict(IDS, verbose=0), before)


def test_a_bare_backbone_trains_only_its_adapters(make_backbone):
    backbone = make_backbone(**SIZES)
    targets = ("attention_output", "key", "query", "value", "query")  # any order, repeats ignored
    summary = enable_lora(backbone, rank=2, alpha=8.0, targets=targets)
    assert summary["targets"] == ["query", "key", "value", "attention_output"]
    r = 2
    qkv, out = D * N * r + r * H, N * H * r + r * D
    assert summary["trainable_parameters"] == LAYERS * (3 * qkv + out)
    output = backbone.get_layer("block_0").attention.output_dense
    assert tuple(output.lora_kernel_a.shape) == (N, H, r) and tuple(output.lora_kernel_b.shape) == (r, D)
    assert output.lora_alpha / output.lora_rank == 4.0


def test_feed_forward_adapters_train_save_load_and_merge(make_classifier, tmp_path):
    model = make_classifier()
    base = model.get_weights()
    summary = enable_lora(model, rank=2, targets=("ffn_outer", "ffn_inner"))
    assert summary["targets"] == ["ffn_inner", "ffn_outer"]
    assert summary["adapted"] == [
        f"backbone/block_{i}/{name}" for i in range(LAYERS) for name in ("ffn_inner", "ffn_outer")
    ]
    F, r = SIZES["intermediate_dim"], 2
    inner = model.backbone.get_layer("block_0").ffn_inner
    assert tuple(inner.lora_kernel_a.shape) == (D, r) and tuple(inner.lora_kernel_b.shape) == (r, F)
    head = D * 2 + 2
    assert summary["trainable_parameters"] == LAYERS * (D * r + r * F + F * r + r * D) + head
    randomize(model)
    expected = model.predict(IDS, verbose=0)
    path = tmp_path / "ffn.safetensors"
    save_adapters(model, path)
    with safe_open(str(path), framework="np") as file:
        assert "backbone/block_1/ffn_outer/lora_kernel_b" in set(file.keys())

    fresh = make_classifier()
    fresh.set_weights(base)
    assert load_adapters(fresh, path)["adapted"] == summary["adapted"]
    np.testing.assert_allclose(fresh.predict(IDS, verbose=0), expected, atol=1e-6)
    assert merge_adapters(model) == summary["adapted"]
    assert not lora_layers(model)
    np.testing.assert_allclose(model.predict(IDS, verbose=0), expected, atol=1e-5)


def test_fit_changes_only_the_adapters_and_the_head(make_classifier):
    model = make_classifier()
    enable_lora(model, rank=4)
    before = [(v, keras.ops.convert_to_numpy(v).copy()) for v in model.weights]
    model.compile()  # AdamW: its weight decay would move any frozen weight it were given
    model.fit(IDS, LABELS, epochs=3, verbose=0)  # A gets gradients once B has left zero
    trainable = {id(v) for v in model.trainable_weights}
    for variable, value in before:
        changed = not np.array_equal(keras.ops.convert_to_numpy(variable), value)
        assert changed == (id(variable) in trainable), variable.path


def test_adapters_round_trip_onto_a_fresh_base_model(make_classifier, tmp_path):
    model = make_classifier()
    base = model.get_weights()
    enable_lora(model, rank=2)
    randomize(model)
    expected = model.predict(IDS, verbose=0)
    path = tmp_path / "adapters.safetensors"
    save_adapters(model, path)

    with safe_open(str(path), framework="np") as file:
        keys, metadata = set(file.keys()), file.metadata()
    assert keys == {
        f"backbone/block_{i}/attention/{name}/lora_kernel_{ab}"
        for i in range(LAYERS) for name in ("query", "value") for ab in "ab"
    } | {"head/logits/kernel", "head/logits/bias"}
    assert (metadata["format"], metadata["rank"], metadata["alpha"], metadata["targets"]) == (
        "keras_encoder.lora", "2", "2", '["query", "value"]'
    )
    weight_bytes = sum(w.nbytes for w in base)
    assert path.stat().st_size < weight_bytes / 5

    fresh = make_classifier()
    fresh.set_weights(base)
    assert load_adapters(fresh, path) == lora_summary(model)
    np.testing.assert_array_equal(fresh.predict(IDS, verbose=0), expected)
    load_adapters(fresh, path)  # a model with the same adapters takes the file again


def test_load_adapters_errors_name_the_file_and_the_tensor(make_classifier, make_backbone, tmp_path):
    model = make_classifier()
    enable_lora(model, rank=2)
    path = tmp_path / "adapters.safetensors"
    save_adapters(model, path)

    narrow = make_classifier(hidden_dim=8, intermediate_dim=16)
    weights = len(narrow.weights)
    with pytest.raises(DataError, match=re.escape(
        "'backbone/block_0/attention/query/lora_kernel_a' has shape (16, 2, 2), but the model's "
        "weight has shape (8, 2, 2)."
    )):
        load_adapters(narrow, path)
    assert len(narrow.weights) == weights and not lora_layers(narrow)  # checked before anything changed
    with pytest.raises(DataError, match=re.escape(
        "'head/logits/kernel' has shape (16, 2), but the model's weight has shape (16, 3)."
    )):
        load_adapters(make_classifier(num_classes=3), path)
    with pytest.raises(DataError, match="no tensor 'backbone/block_2/attention/query/lora_kernel_a'"):
        load_adapters(make_classifier(num_layers=3), path)
    with pytest.raises(DataError, match="the model has no weight for 'head/logits/bias'"):
        load_adapters(make_backbone(**SIZES), path)
    other = make_classifier()
    enable_lora(other, rank=4)
    with pytest.raises(DataError, match=r"already has LoRA adapters \(rank=4"):
        load_adapters(other, path)

    text = tmp_path / "notes.txt"
    text.write_text("not tensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"x": np.zeros(2, "float32")}, str(plain))
    for bad in (text, plain):
        with pytest.raises(DataError, match=re.escape(f"{bad}: not an adapter file")):
            load_adapters(make_classifier(), bad)
    with pytest.raises(DataError, match="no such adapter file"):
        load_adapters(make_classifier(), tmp_path / "missing.safetensors")


def test_merge_adapters_keeps_predictions_and_leaves_a_plain_model(make_classifier, assert_survives_saving):
    model = make_classifier()
    weights, trainable = len(model.weights), len(model.trainable_weights)
    enable_lora(model, rank=4, targets=LORA_TARGETS)
    randomize(model)
    expected = model.predict(IDS, verbose=0)

    merged = merge_adapters(model)

    attention = ("query", "key", "value", "attention_output")
    assert merged == [  # every projection of every block, the block's own feed-forward first
        f"backbone/block_{i}/{path}" for i in range(LAYERS)
        for path in ("ffn_inner", "ffn_outer", *(f"attention/{name}" for name in attention))
    ]
    # predict retraces: a stale traced function would add the adapters twice.
    np.testing.assert_allclose(model.predict(IDS, verbose=0), expected, atol=1e-5)
    assert not lora_layers(model)
    assert (len(model.weights), len(model.trainable_weights)) == (weights, trainable)
    assert_survives_saving(model, IDS)
    assert enable_lora(model, rank=2)["rank"] == 2  # a merged model takes new adapters


def test_a_keras_file_of_an_adapted_model_holds_merged_kernels(make_classifier, assert_survives_saving):
    # Why save_adapters exists: `.keras` drops the adapters (keras#23244).
    model = make_classifier()
    enable_lora(model, rank=2)
    randomize(model)
    loaded = assert_survives_saving(model, IDS, atol=1e-5)
    assert not lora_layers(loaded)


def test_padding_changes_no_output_of_a_real_token_with_lora(make_classifier):
    model = make_classifier()
    enable_lora(model, rank=4, targets=LORA_TARGETS)
    randomize(model)
    padded = np.pad(IDS, [[0, 0], [0, 5]])
    np.testing.assert_allclose(model.predict(padded, verbose=0), model.predict(IDS, verbose=0), atol=1e-5)
    real = IDS != 0
    sequence = model.backbone(IDS)["sequence_output"].numpy()  # (B, T, D)
    padded_sequence = model.backbone(padded)["sequence_output"].numpy()[:, : IDS.shape[1]]
    np.testing.assert_allclose(padded_sequence[real], sequence[real], atol=1e-5)


@pytest.mark.parametrize("arguments, message", [
    (dict(rank=2, targets=("query", "ffn")),
     "Unknown LoRA target 'ffn'; `targets` may name query, key, value, attention_output, ffn_inner, ffn_outer."),
    (dict(rank=2, targets=()), "`targets` must name at least one of query, key, value, attention_output, ffn_inner, ffn_outer."),
    (dict(rank=0), "`rank` must be a positive integer. Received: rank=0"),
    (dict(rank=2.5), "Received: rank=2.5"),
    (dict(rank=True), "Received: rank=True"),
    (dict(rank=None), "Received: rank=None"),
    (dict(rank=2, alpha=0), "`alpha` must be a positive number or None. Received: alpha=0"),
])
def test_bad_arguments_name_the_argument(arguments, message, make_classifier):
    model = make_classifier()
    trainable = len(model.trainable_weights)
    with pytest.raises(ConfigError, match=re.escape(message)):
        enable_lora(model, **arguments)
    assert len(model.trainable_weights) == trainable and not lora_layers(model)


def test_models_in_the_wrong_state_are_refused(make_classifier, tmp_path):
    model = make_classifier()
    with pytest.raises(ConfigError, match="has no LoRA adapters; call enable_lora first"):
        save_adapters(model, tmp_path / "adapters.safetensors")
    with pytest.raises(ConfigError, match="no LoRA adapters to merge"):
        merge_adapters(model)
    model.backbone.trainable = False
    with pytest.raises(ConfigError, match="layer 'encoder' has trainable=False; set model.trainable = True"):
        enable_lora(model, rank=2)
    model.backbone.trainable = True
    enable_lora(model, rank=2)
    with pytest.raises(ConfigError, match="already enabled on backbone/block_0/attention/query"):
        enable_lora(model, rank=2)
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ConfigError, match="has no MultiHeadSelfAttention"):
        enable_lora(dense, rank=2)


def test_restore_adapters_undoes_the_merge_of_a_weights_file(make_classifier, tmp_path):
    from keras_encoder.adapters import restore_adapters

    classifier = make_classifier()
    base = classifier.get_weights()
    enable_lora(classifier, rank=2)
    classifier.compile(optimizer=keras.optimizers.AdamW(1e-2))
    classifier.fit(IDS, LABELS, epochs=3, verbose=0)
    expected = classifier.predict(IDS, verbose=0)
    # save_weights stores merged kernels and no adapters (what
    # BackupAndRestore writes); the adapter file is saved at the same step.
    classifier.save_weights(str(tmp_path / "backup.weights.h5"))
    save_adapters(classifier, tmp_path / "adapters.safetensors")

    resumed = make_classifier()
    resumed.set_weights(base)
    query = resumed.backbone.get_layer("block_0").attention.query_dense
    base_kernel = keras.ops.convert_to_numpy(query.kernel)
    enable_lora(resumed, rank=2)
    resumed.load_weights(str(tmp_path / "backup.weights.h5"))
    # Loaded alone, the adapters are zero: both factors zero get no gradient.
    assert not np.any(keras.ops.convert_to_numpy(query.lora_kernel_a))
    np.testing.assert_allclose(resumed.predict(IDS, verbose=0), expected, atol=1e-5)

    restore_adapters(resumed, tmp_path / "adapters.safetensors")
    np.testing.assert_allclose(resumed.predict(IDS, verbose=0), expected, atol=1e-5)
    trained_query = classifier.backbone.get_layer("block_0").attention.query_dense
    for name in ("_kernel", "lora_kernel_a", "lora_kernel_b"):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(getattr(query, name)),
            keras.ops.convert_to_numpy(getattr(trained_query, name)),
            atol=1e-6,
        )
    # The frozen kernel is the base one again.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(query._kernel), base_kernel, atol=1e-6)
