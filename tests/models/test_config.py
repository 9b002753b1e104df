import pytest

from keras_encoder.errors import ConfigError
from keras_encoder.models import EncoderConfig


def test_json_round_trip():
    config = EncoderConfig(hidden_dim=64, num_heads=8, position="rotary", norm_first=True)
    assert EncoderConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    "field, value",
    [
        ("vocabulary_size", 0),
        ("max_length", -3),
        ("num_layers", 1.5),
        ("num_heads", True),
        ("dropout", 1.0),
        ("position", "absolute"),
        ("pooling", "max"),
        ("layer_norm_epsilon", 0.0),
        ("bigram_buckets", -1),
    ],
)
def test_bad_field_is_named(field, value):
    with pytest.raises(ConfigError, match=field):
        EncoderConfig(**{field: value})


def test_hidden_not_divisible_by_heads_names_both():
    with pytest.raises(ConfigError, match="hidden_dim.*num_heads=3"):
        EncoderConfig(hidden_dim=128, num_heads=3)


def test_rotary_needs_even_head_size():
    with pytest.raises(ConfigError, match="rotary"):
        EncoderConfig(hidden_dim=12, num_heads=4, position="rotary")


def test_unknown_fields_are_named():
    with pytest.raises(ConfigError, match="hidden_size"):
        EncoderConfig.from_dict({"hidden_size": 64})


def test_invalid_json():
    with pytest.raises(ConfigError, match="not valid"):
        EncoderConfig.from_json("{hidden_dim: 3")
