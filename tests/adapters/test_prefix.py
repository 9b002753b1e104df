"""Prefix tuning: what trains, saving, masking, the attention maps, errors."""

import re

import keras
import numpy as np
import pytest

from keras_encoder.adapters import enable_lora, enable_prefix_tuning
from keras_encoder.errors import ConfigError
from keras_encoder.models import EncoderClassifier, attention_probe

IDS = np.array([[2, 7, 8, 9, 3, 0], [2, 11, 3, 0, 0, 0]], "int32")
LABELS = np.array([0, 1])
# The tiny model: D=16 hidden, N=2 heads of H=8, two blocks.
D, N, H, LAYERS = 16, 2, 8, 2
SIZES = dict(hidden_dim=D, num_heads=N, num_layers=LAYERS, intermediate_dim=32)


@pytest.fixture
def classifier(make_backbone):
    return EncoderClassifier(make_backbone(**SIZES), 2)


def test_only_the_prefixes_and_the_head_train(classifier):
    parameters = classifier.count_params()
    summary = enable_prefix_tuning(classifier, 4)
    prefixes = LAYERS * 2 * 4 * N * H  # a key and a value prefix, (P, N, H), per block
    head = D * 2 + 2
    assert summary == {
        "prefix_length": 4,
        "blocks": [f"backbone/block_{i}" for i in range(LAYERS)],
        "parameters": parameters + prefixes,
        "trainable_parameters": prefixes + head,
    }
    names = sorted(v.name for v in classifier.trainable_weights)
    assert names == sorted(["prefix_key", "prefix_value"] * LAYERS + ["kernel", "bias"])


def test_fit_changes_only_the_prefixes_and_the_head(classifier):
    enable_prefix_tuning(classifier, 3)
    before = [(v, keras.ops.convert_to_numpy(v).copy()) for v in classifier.weights]
    classifier.compile()  # AdamW: its weight decay would move any frozen weight it were given
    classifier.fit(IDS, LABELS, epochs=2, verbose=0)
    trainable = {id(v) for v in classifier.trainable_weights}
    for variable, value in before:
        changed = not np.array_equal(keras.ops.convert_to_numpy(variable), value)
        assert changed == (id(variable) in trainable), variable.path


def test_the_prefix_changes_predictions_and_survives_saving(classifier, assert_survives_saving):
    before = classifier.predict(IDS, verbose=0)
    enable_prefix_tuning(classifier, 4)
    # predict retraces: a stale traced function would leave the prefix out.
    assert not np.allclose(classifier.predict(IDS, verbose=0), before)
    loaded = assert_survives_saving(classifier, IDS)
    blocks = [layer for layer in loaded._flatten_layers() if hasattr(layer, "prefix_length")]
    assert blocks and all(block.prefix_length == 4 for block in blocks)


def test_padding_changes_no_output_of_a_real_token_with_a_prefix(classifier):
    enable_prefix_tuning(classifier, 4)
    padded = np.pad(IDS, [[0, 0], [0, 5]])
    np.testing.assert_allclose(classifier.predict(padded, verbose=0), classifier.predict(IDS, verbose=0), atol=1e-5)


def test_attention_maps_show_the_tokens_columns(classifier):
    enable_prefix_tuning(classifier, 4)
    scores = attention_probe(classifier)(IDS)
    for block_scores in scores.values():
        block_scores = keras.ops.convert_to_numpy(block_scores)
        assert block_scores.shape == (2, N, 6, 6)  # the 4 prefix columns left out
        row_sums = block_scores.sum(-1)
        assert np.all(row_sums < 1.0) and np.all(row_sums > 0.0)  # the rest went to the prefix


@pytest.mark.parametrize("length, message", [
    (0, "`prefix_length` must be a positive integer. Received: prefix_length=0"),
    (2.5, "Received: prefix_length=2.5"),
    (True, "Received: prefix_length=True"),
])
def test_a_bad_length_is_named(classifier, length, message):
    trainable = len(classifier.trainable_weights)
    with pytest.raises(ConfigError, match=re.escape(message)):
        enable_prefix_tuning(classifier, length)
    assert len(classifier.trainable_weights) == trainable


def test_models_in_the_wrong_state_are_refused(classifier, make_backbone):
    enable_prefix_tuning(classifier, 2)
    with pytest.raises(ConfigError, match="backbone/block_0 has a prefix already"):
        enable_prefix_tuning(classifier, 2)

    adapted = EncoderClassifier(make_backbone(**SIZES), 2)
    enable_lora(adapted, rank=2)
    with pytest.raises(ConfigError, match="has LoRA adapters; use prefix tuning or LoRA, not both"):
        enable_prefix_tuning(adapted, 2)

    with pytest.raises(ConfigError, match="has a prefix \\(prefix tuning\\); use LoRA or prefix tuning, not both"):
        enable_lora(classifier, rank=2)

    frozen = EncoderClassifier(make_backbone(**SIZES), 2)
    frozen.get_layer("logits").trainable = False
    with pytest.raises(ConfigError, match="layer 'logits' has trainable=False"):
        enable_prefix_tuning(frozen, 2)
    assert not any(getattr(layer, "prefix_length", 0) for layer in frozen._flatten_layers())


def test_save_pretrained_refuses_prefixes(make_backbone, tokenizer, tmp_path):
    from keras_encoder import DataError, save_pretrained

    backbone = make_backbone(
        **SIZES, position="learned", embedding_norm=True, layer_norm_epsilon=1e-12,
        segment_vocabulary_size=2, pooler=True, pooling="cls",
    )
    enable_prefix_tuning(backbone, 2)
    with pytest.raises(DataError, match="cannot write prefixes \\(prefix tuning\\) in BERT's layout; block_0 has 2"):
        save_pretrained(backbone, tokenizer, tmp_path / "bert")
    assert not (tmp_path / "bert").exists()
