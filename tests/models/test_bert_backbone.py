"""The BERT-style backbone: segment ids and an explicit padding mask."""

import keras
import numpy as np
import pytest

from keras_encoder import ConfigError
from keras_encoder.models import EncoderConfig, build_encoder

CONFIG = dict(
    vocabulary_size=50, max_length=16, hidden_dim=16, num_heads=2, num_layers=2,
    intermediate_dim=32, dropout=0.0, position="learned", embedding_norm=True,
    layer_norm_epsilon=1e-12, segment_vocabulary_size=2,
)
IDS = np.array([[2, 7, 8, 9, 3], [2, 11, 3, 0, 0]], "int32")


def inputs(ids, segments=None):
    return {
        "token_ids": ids,
        "segment_ids": np.zeros_like(ids) if segments is None else segments,
        "padding_mask": (ids != 0).astype("int32"),
    }


@pytest.mark.parametrize("pooler", [False, True])
def test_padding_does_not_change_real_positions(pooler):
    backbone = build_encoder(EncoderConfig(**CONFIG, pooler=pooler))
    longer = np.concatenate([IDS, np.zeros((2, 4), "int32")], axis=1)
    short, long = backbone(inputs(IDS)), backbone(inputs(longer))
    real = IDS != 0
    np.testing.assert_allclose(
        np.asarray(short["sequence_output"])[real], np.asarray(long["sequence_output"])[:, :5][real], atol=1e-5
    )
    np.testing.assert_allclose(short["pooled_output"], long["pooled_output"], atol=1e-5)


def test_segments_change_the_output():
    backbone = build_encoder(EncoderConfig(**CONFIG))
    first = backbone(inputs(IDS))["sequence_output"]
    second = backbone(inputs(IDS, segments=np.ones_like(IDS)))["sequence_output"]
    assert not np.allclose(first, second)


def test_keras_file_round_trip(tmp_path):
    backbone = build_encoder(EncoderConfig(**CONFIG, pooler=True))
    backbone.save(tmp_path / "b.keras")
    again = keras.models.load_model(tmp_path / "b.keras")
    np.testing.assert_allclose(
        again(inputs(IDS))["sequence_output"], backbone(inputs(IDS))["sequence_output"], atol=1e-6
    )


def test_negative_segment_vocabulary_is_refused():
    with pytest.raises(ConfigError, match="segment_vocabulary_size"):
        EncoderConfig(**{**CONFIG, "segment_vocabulary_size": -1})


def test_task_models_take_token_ids_on_a_bert_style_backbone(tmp_path):
    from keras_encoder.models import EncoderClassifier, EncoderPreprocessor, EncoderTagger, attention_probe
    from keras_encoder.text import Tokenizer

    texts = ["好书 reading", "太差了", "不错不错", "很烂"] * 4
    tokenizer = Tokenizer.learn(texts, vocabulary_size=60, sequence_length=16)
    config = {**CONFIG, "vocabulary_size": tokenizer.vocabulary_size, "pooler": True}
    classifier = EncoderClassifier(
        build_encoder(EncoderConfig(**config)), 2, preprocessor=EncoderPreprocessor(tokenizer)
    )
    assert classifier.input.shape == (None, None)  # token ids, not the backbone's dict
    classifier.compile()
    classifier.fit(texts, np.array([1, 0, 1, 0] * 4), batch_size=4, epochs=1, verbose=0)
    ids = np.asarray(EncoderPreprocessor(tokenizer)(texts[:2]))
    padded = np.concatenate([ids, np.zeros((2, 3), "int32")], axis=1)
    np.testing.assert_allclose(classifier.predict(ids, verbose=0), classifier.predict(padded, verbose=0), atol=1e-5)
    classifier.save(tmp_path / "c.keras")
    again = keras.models.load_model(tmp_path / "c.keras")
    np.testing.assert_allclose(again.predict(ids, verbose=0), classifier.predict(ids, verbose=0), atol=1e-6)
    scores = attention_probe(classifier)(ids[:1])
    assert len(scores) == CONFIG["num_layers"]
    tagger = EncoderTagger(build_encoder(EncoderConfig(**config)), ["O", "B-X", "I-X"],
                           EncoderPreprocessor(tokenizer, unit="char"), scheme="bio")
    assert len(tagger.predict(["好书"])[0]["tags"]) == 2
