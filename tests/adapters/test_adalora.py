"""AdaLoRA adapters: what trains, the budget schedule, masking, the orthogonality loss, files, merging, errors."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from safetensors import safe_open

from keras_encoder.adapters import (
    AdaLoRABudget,
    adalora_budget,
    adalora_kept_ranks,
    adalora_summary,
    enable_adalora,
    enable_lora,
    load_adalora,
    mask_triplets,
    merge_adalora,
    orthogonality_loss,
    restore_adalora,
    save_adalora,
)
from keras_encoder.adapters.lora import LORA_TARGETS
from keras_encoder.errors import ConfigError, DataError
from keras_encoder.models import EncoderClassifier

IDS = np.array([[2, 7, 8, 9, 3, 0], [2, 11, 3, 0, 0, 0]], "int32")
LABELS = np.array([0, 1])
# The tiny model: D=16 hidden, N=2 heads of H=8, F=32, two blocks.
D, N, H, F, LAYERS = 16, 2, 8, 32, 2
SIZES = dict(hidden_dim=D, num_heads=N, num_layers=LAYERS, intermediate_dim=F)
ADAPTER_NAMES = ("adalora_p", "adalora_lambda", "adalora_q", "adalora_mask")


@pytest.fixture
def make_classifier(make_backbone):
    """`make_classifier(num_classes=2, **backbone_overrides)`: a two-block classifier."""

    def make(num_classes=2, **overrides):
        return EncoderClassifier(make_backbone(**{**SIZES, **overrides}), num_classes)

    return make


def randomize(classifier, seed=0):
    """Give every lambda (which starts at zero) and the head random values, so they matter."""
    rng = np.random.default_rng(seed)
    lambdas = [v for v in classifier.weights if v.name == "adalora_lambda"]
    for variable in lambdas + classifier.get_layer("logits").weights:
        variable.assign(rng.normal(scale=0.5, size=variable.shape).astype("float32"))


def adapter_weights(model):
    return [v for v in model.weights if v.name in ADAPTER_NAMES]


def numpy(variable):
    return keras.ops.convert_to_numpy(variable)


def test_a_fresh_model_predicts_as_before_and_only_adapters_and_head_train(make_classifier):
    model = make_classifier()
    before = model.predict(IDS, verbose=0)
    parameters = model.count_params()

    summary = enable_adalora(model, rank=4)

    r = 4
    adapters = 2 * LAYERS * (D * r + r + r * N * H)  # query and value: P (D, r), lambda (r,), Q (r, N*H)
    masks = 2 * LAYERS * r
    head = D * 2 + 2
    adapted = [f"backbone/block_{i}/attention/{name}" for i in range(LAYERS) for name in ("query", "value")]
    assert summary == {
        "initial_rank": 4,
        "target_rank": 2,
        "alpha": 4,
        "gamma": 0.1,
        "targets": ["query", "value"],
        "adapted": adapted,
        "kept_ranks": {path: 4 for path in adapted},
        "parameters": parameters + adapters + masks,
        "trainable_parameters": adapters + head,
    }
    logits = model.get_layer("logits")
    trainable = model.trainable_weights
    assert sorted(v.name for v in trainable if not any(v is w for w in logits.weights)) == sorted(
        ["adalora_p", "adalora_lambda", "adalora_q"] * 2 * LAYERS
    )
    # lambda starts at zero: the adapted model computes exactly what it did.
    np.testing.assert_array_equal(model.predict(IDS, verbose=0), before)


def test_fit_changes_only_the_adapters_and_the_head(make_classifier):
    model = make_classifier()
    enable_adalora(model, rank=4, targets=LORA_TARGETS)
    before = [(v, numpy(v).copy()) for v in model.weights]
    model.compile()  # AdamW: its weight decay would move any frozen weight it were given
    model.fit(IDS, LABELS, epochs=3, verbose=0)
    trainable = {id(v) for v in model.trainable_weights}
    for variable, value in before:
        changed = not np.array_equal(numpy(variable), value)
        assert changed == (id(variable) in trainable), variable.path


def test_feed_forward_and_output_kernels_are_viewed_as_matrices(make_backbone):
    backbone = make_backbone(**SIZES)
    enable_adalora(backbone, rank=3, targets=("attention_output", "ffn_inner", "ffn_outer"))
    block = backbone.get_layer("block_0")
    shapes = {
        name: (tuple(layer.adalora_p.shape), tuple(layer.adalora_q.shape))
        for name, layer in (("output", block.attention.output_dense), ("inner", block.ffn_inner),
                            ("outer", block.ffn_outer))
    }
    assert shapes == {"output": ((N * H, 3), (3, D)), "inner": ((D, 3), (3, F)), "outer": ((F, 3), (3, D))}


@pytest.mark.parametrize("step, expected", [
    (0, 16), (9, 16), (10, 16),  # warm-up at the full budget, and the cubic's start
    (25, 11),  # 8 + 8 * (1 - 15/60)^3 = 11.375
    (40, 9),  # 8 + 8 * 0.5^3
    (69, 8),  # 8 + 8 * (1/60)^3, rounded down
    (70, 8), (99, 8), (100, 8),  # the final phase at the target
])
def test_the_budget_falls_on_the_cubic_schedule(step, expected):
    # b(0) = 16, b(T) = 8, T = 100, t_i = 10, t_f = 30.
    assert adalora_budget(step, 16, 8, total_steps=100, initial_warmup=10, final_warmup=30) == expected


def test_the_callback_budget_counts_every_adapted_kernel(make_classifier):
    model = make_classifier()
    enable_adalora(model, rank=4, target_rank=2)  # 4 kernels: b(0) = 16, b(T) = 8
    callback = AdaLoRABudget(tf.data.Dataset.from_tensors((IDS, LABELS)), 100, 10, 30)
    callback.set_model(model)
    assert [callback.budget(step) for step in (0, 40, 100)] == [16, 9, 8]


def test_masking_zeroes_the_weakest_triplets_over_all_kernels(make_classifier):
    model = make_classifier()
    enable_adalora(model, rank=4)
    randomize(model)
    adapted = adalora_summary(model)["adapted"]
    layers = dict(zip(adapted, [
        getattr(model.backbone.get_layer(f"block_{i}").attention, f"{name}_dense")
        for i in range(LAYERS) for name in ("query", "value")
    ]))
    lambdas = {path: numpy(layer.adalora_lambda).copy() for path, layer in layers.items()}
    # Scores 0..15 over the 4 kernels, interleaved: kernel k's triplet i scores 4 * i + k.
    scores = {path: np.array([4 * i + k for i in range(4)], "float32") for k, path in enumerate(adapted)}

    kept = mask_triplets(model, scores, budget=10)

    assert sum(kept.values()) == 10
    # The 6 weakest (scores 0..5): triplet 0 of every kernel, triplet 1 of the first two.
    assert kept == {adapted[0]: 2, adapted[1]: 2, adapted[2]: 3, adapted[3]: 3}
    for k, (path, layer) in enumerate(layers.items()):
        masked = scores[path] < 6
        np.testing.assert_array_equal(numpy(layer.adalora_mask), np.where(masked, 0.0, 1.0))
        np.testing.assert_array_equal(numpy(layer.adalora_lambda), np.where(masked, 0.0, lambdas[path]))
    assert adalora_summary(model)["kept_ranks"] == kept

    # A masked triplet stays masked, however well it scores later.
    reversed_scores = {path: -score for path, score in scores.items()}
    kept = mask_triplets(model, reversed_scores, budget=8)
    assert sum(kept.values()) == 8
    assert numpy(layers[adapted[0]].adalora_mask)[0] == 0.0
    assert mask_triplets(model, scores, budget=12) == kept  # a larger budget unmasks nothing


def test_training_with_the_callback_meets_the_target_budget(make_classifier):
    model = make_classifier()
    enable_adalora(model, rank=4, target_rank=2, targets=LORA_TARGETS)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2))
    data = tf.data.Dataset.from_tensor_slices((np.tile(IDS, (4, 1)), np.tile(LABELS, 4))).batch(2)
    callback = AdaLoRABudget(data, total_steps=20, initial_warmup=4, final_warmup=6, interval=2)
    model.fit(data, epochs=5, callbacks=[callback], verbose=0)  # 4 steps an epoch: 20 steps

    summary = adalora_summary(model)
    assert sum(summary["kept_ranks"].values()) == 2 * len(summary["adapted"])
    scores = callback.scores()
    assert set(scores) == set(summary["adapted"]) and all(np.any(s > 0) for s in scores.values())
    # A masked triplet adds nothing, whatever the optimizer left in its lambda.
    expected = model.predict(IDS, verbose=0)
    for layer in model._flatten_layers():
        if hasattr(layer, "adalora_mask"):
            masked = numpy(layer.adalora_mask) == 0
            layer.adalora_lambda.assign(np.where(masked, 100.0, numpy(layer.adalora_lambda)))
    np.testing.assert_allclose(model.predict(IDS, verbose=0), expected, atol=1e-6)


def test_the_orthogonality_loss_is_zero_only_for_orthonormal_factors(make_classifier):
    rng = np.random.default_rng(0)
    p = np.linalg.qr(rng.normal(size=(16, 4)))[0].astype("float32")  # orthonormal columns
    q = np.linalg.qr(rng.normal(size=(12, 4)))[0].T.astype("float32")  # orthonormal rows
    assert float(orthogonality_loss(p, q)) == pytest.approx(0.0, abs=1e-5)
    assert float(orthogonality_loss(2 * p, q)) == pytest.approx(4 * 3**2)  # P^T P = 4 I
    assert float(orthogonality_loss(p, np.zeros_like(q))) == pytest.approx(4.0)  # Q Q^T = 0

    model = make_classifier()
    enable_adalora(model, rank=4, gamma=0.5)
    model(IDS)
    assert not model.losses  # only while training
    model(IDS, training=True)
    layers = [layer for layer in model._flatten_layers() if hasattr(layer, "adalora_p")]
    expected = sum(0.5 * float(orthogonality_loss(layer.adalora_p, layer.adalora_q)) for layer in layers)
    assert len(model.losses) == 4
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5) and expected > 0


def test_adapters_round_trip_onto_a_fresh_base_model(make_classifier, tmp_path):
    model = make_classifier()
    base = model.get_weights()
    enable_adalora(model, rank=4, target_rank=3, alpha=8.0)
    randomize(model)
    paths = adalora_summary(model)["adapted"]
    mask_triplets(model, {path: np.arange(4.0) for path in paths}, budget=12)
    expected = model.predict(IDS, verbose=0)
    path = tmp_path / "adalora.safetensors"
    save_adalora(model, path)

    with safe_open(str(path), framework="np") as file:
        keys, metadata = set(file.keys()), file.metadata()
    assert keys == {f"{layer}/{name}" for layer in paths for name in ADAPTER_NAMES} | {
        "head/logits/kernel", "head/logits/bias"
    }
    assert {key: metadata[key] for key in ("format", "rank", "target_rank", "alpha", "gamma", "targets")} == {
        "format": "keras_encoder.adalora", "rank": "4", "target_rank": "3", "alpha": "8.0", "gamma": "0.1",
        "targets": '["query", "value"]',
    }
    assert adalora_kept_ranks(path) == {layer: 3 for layer in paths}

    fresh = make_classifier()
    fresh.set_weights(base)
    assert load_adalora(fresh, path) == adalora_summary(model)
    np.testing.assert_array_equal(fresh.predict(IDS, verbose=0), expected)
    load_adalora(fresh, path)  # a model with the same adapters takes the file again


def test_load_errors_name_the_file_and_the_tensor(make_classifier, tmp_path):
    model = make_classifier()
    enable_adalora(model, rank=2)
    path = tmp_path / "adalora.safetensors"
    save_adalora(model, path)

    narrow = make_classifier(hidden_dim=8, intermediate_dim=16)
    weights = len(narrow.weights)
    with pytest.raises(DataError, match=re.escape(
        "'backbone/block_0/attention/query/adalora_p' has shape (16, 2), but the model's weight has shape (8, 2)."
    )):
        load_adalora(narrow, path)
    assert len(narrow.weights) == weights  # checked before anything changed
    with pytest.raises(DataError, match="no tensor 'backbone/block_2/attention/query/adalora_p'"):
        load_adalora(make_classifier(num_layers=3), path)
    other = make_classifier()
    enable_adalora(other, rank=4)
    with pytest.raises(DataError, match=r"already has AdaLoRA adapters \(rank=4"):
        load_adalora(other, path)
    lora = tmp_path / "lora.safetensors"
    from keras_encoder.adapters import save_adapters

    with_lora = make_classifier()
    enable_lora(with_lora, rank=2)
    save_adapters(with_lora, lora)
    with pytest.raises(DataError, match=re.escape(f"{lora}: not an AdaLoRA adapter file")):
        load_adalora(make_classifier(), lora)
    with pytest.raises(DataError, match="no such adapter file"):
        load_adalora(make_classifier(), tmp_path / "missing.safetensors")


def test_merge_keeps_predictions_and_leaves_a_plain_model(make_classifier, assert_survives_saving):
    model = make_classifier()
    weights, trainable = len(model.weights), len(model.trainable_weights)
    classes = {layer.path: type(layer) for layer in model._flatten_layers()}
    enable_adalora(model, rank=4, targets=LORA_TARGETS)
    randomize(model)
    mask_triplets(model, {path: np.arange(4.0) for path in adalora_summary(model)["adapted"]}, budget=30)
    expected = model.predict(IDS, verbose=0)

    merged = merge_adalora(model)

    assert len(merged) == 6 * LAYERS
    # predict retraces: a stale traced function would add the updates twice.
    np.testing.assert_allclose(model.predict(IDS, verbose=0), expected, atol=1e-5)
    assert not adapter_weights(model)
    assert {layer.path: type(layer) for layer in model._flatten_layers()} == classes
    assert (len(model.weights), len(model.trainable_weights)) == (weights, trainable)
    assert_survives_saving(model, IDS)
    assert enable_lora(model, rank=2)["rank"] == 2  # a merged model takes new adapters


def test_a_keras_file_of_an_adapted_model_holds_merged_kernels(make_classifier, assert_survives_saving):
    model = make_classifier()
    enable_adalora(model, rank=2, targets=LORA_TARGETS)
    randomize(model)
    loaded = assert_survives_saving(model, IDS, atol=1e-5)
    assert not adapter_weights(loaded)


def test_restore_undoes_the_merge_of_a_weights_file(make_classifier, tmp_path):
    classifier = make_classifier()
    base = classifier.get_weights()
    enable_adalora(classifier, rank=2)
    classifier.compile(optimizer=keras.optimizers.AdamW(1e-2))
    classifier.fit(IDS, LABELS, epochs=3, verbose=0)
    paths = adalora_summary(classifier)["adapted"]
    mask_triplets(classifier, {path: np.arange(2.0) for path in paths}, budget=6)
    expected = classifier.predict(IDS, verbose=0)
    # save_weights stores merged kernels and no adapters (what
    # BackupAndRestore writes); the adapter file is saved at the same step.
    classifier.save_weights(str(tmp_path / "backup.weights.h5"))
    save_adalora(classifier, tmp_path / "adalora.safetensors")

    resumed = make_classifier()
    resumed.set_weights(base)
    enable_adalora(resumed, rank=2)
    resumed.load_weights(str(tmp_path / "backup.weights.h5"))
    np.testing.assert_allclose(resumed.predict(IDS, verbose=0), expected, atol=1e-5)

    restore_adalora(resumed, tmp_path / "adalora.safetensors")
    np.testing.assert_allclose(resumed.predict(IDS, verbose=0), expected, atol=1e-5)
    found = {v.path: numpy(v) for v in resumed.weights}
    for variable in classifier.weights:  # raw kernels, adapters, masks and head, as they were
        np.testing.assert_allclose(found[variable.path], numpy(variable), atol=1e-6, err_msg=variable.path)


def test_adapter_checkpoints_keep_adalora_through_a_resume(make_classifier, tmp_path):
    from keras_encoder.training.callbacks import AdapterCheckpoints

    first = make_classifier()
    base = first.get_weights()
    ids, labels = np.tile(IDS, (4, 1)), np.tile(LABELS, 4)
    data = tf.data.Dataset.from_tensor_slices((ids, labels)).batch(4)  # 2 steps an epoch

    def adapted():
        classifier = make_classifier()
        classifier.set_weights(base)
        enable_adalora(classifier, rank=2)  # target rank 1
        classifier.compile(optimizer=keras.optimizers.AdamW(1e-2))
        checkpoints = AdapterCheckpoints(
            str(tmp_path / "adapters"), str(tmp_path / "backup"), save=save_adalora, restore=restore_adalora
        )
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
        budget = AdaLoRABudget(data, total_steps=4, initial_warmup=1, final_warmup=1, interval=1)
        return classifier, [budget, checkpoints, backup, checkpoints.restorer()]

    trained, callbacks = adapted()
    trained.fit(data, epochs=2, callbacks=callbacks, verbose=0)
    assert sum(adalora_summary(trained)["kept_ranks"].values()) == 4

    # A new process: the base model, adapters enabled, fit resumes after epoch 2.
    resumed, callbacks = adapted()
    resumed.fit(data, epochs=2, callbacks=callbacks, verbose=0)
    found = {v.path: numpy(v) for v in resumed.weights}
    for variable in trained.weights:  # raw kernels, adapters, masks and head, as they were
        np.testing.assert_allclose(found[variable.path], numpy(variable), atol=1e-6, err_msg=variable.path)


@pytest.mark.parametrize("arguments, message", [
    (dict(rank=0), "`rank` must be a positive integer. Received: rank=0"),
    (dict(rank=2.5), "Received: rank=2.5"),
    (dict(rank=4, target_rank=5), "`target_rank` must be an integer from 1 to rank (4). Received: target_rank=5"),
    (dict(rank=4, target_rank=0), "Received: target_rank=0"),
    (dict(rank=4, alpha=-1), "`alpha` must be a positive number or None. Received: alpha=-1"),
    (dict(rank=4, gamma=-0.1), "`gamma` must be a non-negative number. Received: gamma=-0.1"),
    (dict(rank=4, targets=("query", "ffn")), "Unknown LoRA target 'ffn'"),
    (dict(rank=4, targets=()), "`targets` must name at least one of"),
])
def test_bad_arguments_name_the_argument(arguments, message, make_classifier):
    model = make_classifier()
    trainable = len(model.trainable_weights)
    with pytest.raises(ConfigError, match=re.escape(message)):
        enable_adalora(model, **arguments)
    assert len(model.trainable_weights) == trainable and not adapter_weights(model)


@pytest.mark.parametrize("arguments, message", [
    (dict(total_steps=0, initial_warmup=0, final_warmup=0), "`total_steps` must be a positive integer. Received: total_steps=0"),
    (dict(total_steps=10, initial_warmup=-1, final_warmup=0), "Received: initial_warmup=-1"),
    (dict(total_steps=10, initial_warmup=4, final_warmup=6), "Received: initial_warmup=4, final_warmup=6, total_steps=10"),
    (dict(total_steps=10, initial_warmup=1, final_warmup=1, interval=0), "Received: interval=0"),
    (dict(total_steps=10, initial_warmup=1, final_warmup=1, beta1=1.0), "`beta1` must be in [0, 1). Received: beta1=1.0"),
])
def test_bad_budget_arguments_name_the_argument(arguments, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        AdaLoRABudget(tf.data.Dataset.from_tensors((IDS, LABELS)), **arguments)


def test_models_in_the_wrong_state_are_refused(make_classifier, tmp_path):
    model = make_classifier()
    with pytest.raises(ConfigError, match="has no AdaLoRA adapters; call enable_adalora first"):
        save_adalora(model, tmp_path / "adalora.safetensors")
    with pytest.raises(ConfigError, match="no AdaLoRA adapters to merge"):
        merge_adalora(model)
    with pytest.raises(ConfigError, match="has no AdaLoRA adapters"):
        mask_triplets(model, {}, 1)
    enable_adalora(model, rank=2)
    with pytest.raises(ConfigError, match="already enabled on backbone/block_0/attention/query"):
        enable_adalora(model, rank=2)
    with pytest.raises(ConfigError, match="block_0/attention/query has AdaLoRA adapters; use LoRA or AdaLoRA"):
        enable_lora(model, rank=2)
    with pytest.raises(ConfigError, match=re.escape("for backbone/block_0/attention/query. Received: none")):
        mask_triplets(model, {}, 1)
    with_lora = make_classifier()
    enable_lora(with_lora, rank=2)
    with pytest.raises(ConfigError, match="has LoRA adapters; use LoRA or AdaLoRA, not both"):
        enable_adalora(with_lora, rank=2)
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ConfigError, match="has no MultiHeadSelfAttention"):
        enable_adalora(dense, rank=2)
