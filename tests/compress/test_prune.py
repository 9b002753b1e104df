"""Head pruning: importance scores, which heads go, the pruned model, the run-level tool."""

import os

import keras
import numpy as np
import pytest

from keras_encoder.compress import head_importance, heads_to_prune, prune_heads, prune_run
from keras_encoder.errors import ConfigError
from keras_encoder.models import EncoderClassifier, EncoderPreprocessor

TEXTS = ["这个手机很好用", "质量太差了", "还不错 推荐", "mixed English 和中文", "很好", "太差"]
LABELS = np.array([1, 0, 1, 1, 1, 0])
N, LAYERS = 4, 2
PATHS = [f"backbone/block_{i}/attention" for i in range(LAYERS)]


@pytest.fixture
def classifier(make_backbone, tokenizer):
    model = EncoderClassifier(
        make_backbone(hidden_dim=32, num_heads=N, intermediate_dim=64, num_layers=LAYERS), 2,
        EncoderPreprocessor(tokenizer), label_names=["negative", "positive"],
    )
    model(model.preprocessor(TEXTS))  # built
    return model


def batches(model):
    ids = model.preprocessor(TEXTS)
    return [(ids[:3], LABELS[:3]), (ids[3:], LABELS[3:])]


def attention(model, index):
    return model.backbone.get_layer(f"block_{index}").attention


def logits(model, ids):
    return keras.ops.convert_to_numpy(model(ids, training=False))


def test_a_head_that_writes_nothing_scores_zero_and_goes_first(classifier):
    silent = attention(classifier, 1)
    kernel = silent.output_dense.kernel.numpy()
    kernel[2] = 0.0  # head 2 of block 1 adds nothing to the output
    silent.output_dense.kernel.assign(kernel)

    scores = head_importance(classifier, batches(classifier))

    assert list(scores) == PATHS
    for values in scores.values():
        assert values.shape == (N,) and np.all(values >= 0)
        np.testing.assert_allclose(np.linalg.norm(values), 1.0, rtol=1e-6)  # normalized per layer
    assert scores[PATHS[1]][2] == 0.0 and np.all(np.delete(scores[PATHS[1]], 2) > 0)
    assert heads_to_prune(scores, 1 / 8) == {PATHS[0]: [], PATHS[1]: [2]}
    # The gates are gone after scoring.
    assert all(attention(classifier, i).head_gates is None for i in range(LAYERS))


def test_heads_to_prune_ranks_across_layers_and_keeps_one_per_layer():
    scores = {"a": np.array([0.1, 0.9, 0.2]), "b": np.array([0.05, 0.01])}
    # 2 of 5: b's weakest (0.01) first; b's other (0.05) would leave b empty, so a's 0.1.
    assert heads_to_prune(scores, 0.4) == {"a": [0], "b": [1]}
    assert heads_to_prune(scores, 0.8) == {"a": [0, 2], "b": [1]}  # the most that can go: 3
    assert heads_to_prune(scores, 0.0) == {"a": [], "b": []}
    for share in (1.0, -0.1, "half"):
        with pytest.raises(ConfigError, match=r"--share must be in \[0, 1\)"):
            heads_to_prune(scores, share)


def test_the_pruned_model_computes_what_gating_those_heads_off_computes(classifier, assert_survives_saving):
    ids = classifier.preprocessor(TEXTS)
    removed = {PATHS[0]: [1, 3], PATHS[1]: [0]}
    gated = []
    for path, layer in zip(PATHS, (attention(classifier, 0), attention(classifier, 1))):
        gates = np.ones(N, "float32")
        gates[removed[path]] = 0.0
        object.__setattr__(layer, "head_gates", gates)
        gated.append(layer)
    expected = logits(classifier, ids)
    for layer in gated:
        object.__setattr__(layer, "head_gates", None)
    full = logits(classifier, ids)

    pruned = prune_heads(classifier, removed)

    np.testing.assert_allclose(logits(pruned, ids), expected, atol=1e-5)
    assert not np.allclose(logits(pruned, ids), full, atol=1e-4)
    assert [attention(pruned, i).num_heads for i in range(LAYERS)] == [2, 3]
    d, h = 32, 32 // N
    assert classifier.count_params() - pruned.count_params() == 3 * (4 * d * h + 3 * h)  # q, k, v, out; 3 biases
    loaded = assert_survives_saving(pruned, ids, atol=1e-6)
    assert [attention(loaded, i).num_heads for i in range(LAYERS)] == [2, 3]
    # The classifier's text path still works.
    assert pruned.predict(TEXTS[:2])["probabilities"].shape == (2, 2)


@pytest.mark.parametrize("removed, message", [
    ({"backbone/block_9/attention": [0]}, "No attention layer 'backbone/block_9/attention'"),
    ({PATHS[0]: [4]}, r"has heads 0 to 3. Received: \[4\]"),
    ({PATHS[0]: [0, 1, 2, 3]}, "pruning every head of a layer is not supported"),
])
def test_bad_pruning_requests_are_named(classifier, removed, message):
    with pytest.raises(ConfigError, match=message):
        prune_heads(classifier, removed)


def test_prune_run_checks_its_arguments_before_any_work(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="is not a finished run directory: metrics.json is missing"):
        prune_run(str(tmp_path))
    for name in ("metrics.json", "model.keras"):
        (tmp_path / name).write_text("{}")
    with pytest.raises(ConfigError, match=r"--share must be in \[0, 1\). Received: 1.5"):
        prune_run(str(tmp_path), share=1.5)
    with pytest.raises(ConfigError, match="--steps must be a non-negative integer. Received: -1"):
        prune_run(str(tmp_path), steps=-1)
    os.mkdir(f"{tmp_path}-pruned50")
    with pytest.raises(ConfigError, match=r"-pruned50 already exists; pass another --out or remove it\."):
        prune_run(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["config.json", "metrics.json", "model.keras"]


def test_models_with_prefixes_or_adapters_are_refused(make_backbone, tokenizer):
    from keras_encoder.adapters import enable_lora, enable_prefix_tuning

    def fresh():
        return EncoderClassifier(make_backbone(hidden_dim=32, num_heads=N, intermediate_dim=64, num_layers=1), 2)

    prefixed, adapted = fresh(), fresh()
    enable_prefix_tuning(prefixed, 2)
    enable_lora(adapted, rank=2)
    with pytest.raises(ConfigError, match=r"block_0/attention has a prefix \(prefix tuning\); pruning such"):
        prune_heads(prefixed, {PATHS[0]: [0]})
    with pytest.raises(ConfigError, match=r"has LoRA adapters; merge them \(merge_adapters\) before pruning"):
        prune_heads(adapted, {PATHS[0]: [0]})


def test_save_pretrained_refuses_a_pruned_backbone(make_backbone, tokenizer, tmp_path):
    from keras_encoder import DataError, save_pretrained

    bert_like = make_backbone(
        hidden_dim=32, num_heads=N, intermediate_dim=64, num_layers=LAYERS, position="learned",
        embedding_norm=True, layer_norm_epsilon=1e-12, segment_vocabulary_size=2, pooler=True, pooling="cls",
    )
    pruned = prune_heads(EncoderClassifier(bert_like, 2), {PATHS[1]: [0, 1]})
    with pytest.raises(DataError, match="same full set of heads, as BERT has; block_0 has 4 heads"):
        save_pretrained(pruned.backbone, tokenizer, tmp_path / "bert")
