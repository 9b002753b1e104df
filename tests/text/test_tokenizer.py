import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_encoder.errors import ConfigError
from keras_encoder.errors import DataError
from keras_encoder.text import RESERVED_TOKENS
from keras_encoder.text import Tokenizer

# A hand-written vocabulary, so expected tokens are exact.
VOCABULARY = RESERVED_TOKENS + [
    "我", "爱", "书", "这", "本", "好", "read", "##ing", "book", "##s",
    "a", "##a", "!", ",", "iphone", "手", "机",
]  # fmt: skip

ENGLISH = [
    "the tokenizer splits words into pieces",
    "tokens tokenize tokenized tokenizers",
    "reading readers read books",
    "the reader reads the book",
] * 20
CHINESE = [
    "这本书很好看，我很喜欢。",
    "质量不好，不推荐购买",
    "书很好，物流也快",
] * 10


@pytest.fixture
def tokenizer():
    return Tokenizer(VOCABULARY, sequence_length=16)


@pytest.fixture(scope="module")
def english_tokenizer():
    return Tokenizer.learn(ENGLISH, vocabulary_size=60)


def test_reserved_ids(tokenizer):
    assert RESERVED_TOKENS == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ids = [
        tokenizer.pad_id,
        tokenizer.unk_id,
        tokenizer.cls_id,
        tokenizer.sep_id,
        tokenizer.mask_id,
    ]
    assert ids == [0, 1, 2, 3, 4]
    assert tokenizer.vocabulary == VOCABULARY
    assert tokenizer.vocabulary_size == len(VOCABULARY)
    assert tokenizer.sequence_length == 16
    assert tokenizer.lowercase is True


@pytest.mark.parametrize(
    "text, expected",
    [
        ("我爱这本书", ["我", "爱", "这", "本", "书"]),
        ("Reading BOOKS!", ["read", "##ing", "book", "##s", "!"]),
        ("我爱 reading,iPhone手机",
         ["我", "爱", "read", "##ing", ",", "iphone", "手", "机"]),
        ("狗 xyz 我", ["[UNK]", "[UNK]", "我"]),
        ("", []),
        ("  \t\u3000 ", []),
        ("a" * 101, ["[UNK]"]),
        ("a" * 5, ["a", "##a", "##a", "##a", "##a"]),
    ],
    ids=["chinese", "english", "mixed", "oov", "empty", "blank", "long_word",
         "word"],
)  # fmt: skip
def test_tokens(tokenizer, text, expected):
    assert tokenizer.tokens(text) == ["[CLS]"] + expected + ["[SEP]"]


def test_lowercase_false_keeps_case():
    tokenizer = Tokenizer(VOCABULARY + ["Read"], lowercase=False)
    assert tokenizer.tokens("Reading read") == [
        "[CLS]", "Read", "##ing", "read", "[SEP]",
    ]  # fmt: skip


def test_scalar_and_batch_outputs(tokenizer):
    scalar = tokenizer.tokenize(tf.constant("我爱书"))
    assert isinstance(scalar, tf.Tensor)
    assert scalar.dtype == tf.int32
    assert scalar.numpy().tolist() == [2, 5, 6, 7, 3]

    batch = tokenizer(tf.constant(["我爱书", ""]))
    assert isinstance(batch, tf.RaggedTensor)
    assert batch.dtype == tf.int32
    assert batch.to_list() == [[2, 5, 6, 7, 3], [2, 3]]


def test_truncation_of_a_very_long_string(tokenizer):
    long_text = "我爱这本书" * 2000  # 10,000 characters.
    ids = tokenizer.tokenize(tf.constant([long_text, "书"]))
    assert ids.row_lengths().numpy().tolist() == [16, 3]
    first = ids[0].numpy()
    assert first[0] == tokenizer.cls_id and first[-1] == tokenizer.sep_id
    assert tokenizer.id_to_token(first[1:6]) == list("我爱这本书")


def test_tokenize_to_dense(tokenizer):
    dense = tokenizer.tokenize_to_dense(tf.constant(["我爱书", ""]))
    assert dense.dtype == tf.int32
    assert dense.shape == (2, 16)
    expected = np.zeros((2, 16), np.int32)
    expected[0, :5] = [2, 5, 6, 7, 3]
    expected[1, :2] = [2, 3]
    np.testing.assert_array_equal(dense.numpy(), expected)
    assert tokenizer.tokenize_to_dense(tf.constant("书")).shape == (16,)


def test_inside_dataset_map(tokenizer):
    texts = ["我爱书", "", "reading"]
    dataset = tf.data.Dataset.from_tensor_slices(texts).map(tokenizer.tokenize)
    eager = [tokenizer.tokenize(tf.constant(t)).numpy().tolist() for t in texts]
    assert [x.numpy().tolist() for x in dataset] == eager
    batched = (
        tf.data.Dataset.from_tensor_slices(texts)
        .batch(2)
        .map(tokenizer.tokenize_to_dense)
    )
    assert [x.shape[1] for x in batched] == [16, 16]


def test_id_to_token(tokenizer):
    assert tokenizer.id_to_token(2) == ["[CLS]"]
    assert tokenizer.id_to_token([5, 6]) == ["我", "爱"]
    assert tokenizer.id_to_token(tf.constant([0, 1])) == ["[PAD]", "[UNK]"]


def test_learn_chinese_gives_one_token_per_character():
    tokenizer = Tokenizer.learn(CHINESE, vocabulary_size=100)
    vocabulary = tokenizer.vocabulary
    assert vocabulary[: len(RESERVED_TOKENS)] == RESERVED_TOKENS
    assert len(vocabulary) <= 100
    # Characters are always words of their own: no "##好", no "很好".
    assert not any(token.startswith("##") for token in vocabulary)
    assert tokenizer.tokens("这本书很好") == [
        "[CLS]", "这", "本", "书", "很", "好", "[SEP]",
    ]  # fmt: skip
    assert "[UNK]" not in tokenizer.tokens(CHINESE[1])


def test_learn_english_gives_word_pieces(english_tokenizer):
    vocabulary = english_tokenizer.vocabulary
    assert vocabulary[: len(RESERVED_TOKENS)] == RESERVED_TOKENS
    assert len(vocabulary) <= 60
    pieces = english_tokenizer.tokens("tokenizing")[1:-1]
    assert len(pieces) >= 2
    assert not pieces[0].startswith("##")
    assert all(piece.startswith("##") for piece in pieces[1:])
    assert "".join(piece.removeprefix("##") for piece in pieces) == (
        "tokenizing"
    )


def test_learn_from_dataset():
    dataset = tf.data.Dataset.from_tensor_slices(CHINESE)
    from_dataset = Tokenizer.learn(dataset, vocabulary_size=100)
    from_list = Tokenizer.learn(CHINESE, vocabulary_size=100)
    assert from_dataset.vocabulary == from_list.vocabulary


def test_save_load_round_trip(english_tokenizer, tmp_path):
    tokenizer = Tokenizer(
        english_tokenizer.vocabulary + ["书", "好"], sequence_length=8
    )
    tokenizer.save(tmp_path)
    assert (tmp_path / "vocab.txt").read_text("utf-8").split("\n")[:2] == [
        "[PAD]", "[UNK]",
    ]  # fmt: skip
    assert json.loads((tmp_path / "tokenizer.json").read_text("utf-8")) == {
        "sequence_length": 8,
        "lowercase": True,
        "normalization": "nfkc",
    }
    restored = Tokenizer.load(tmp_path)
    assert restored.vocabulary == tokenizer.vocabulary
    assert restored.sequence_length == 8
    texts = tf.constant(ENGLISH[:4] + ["好书 tokenizing", ""])
    np.testing.assert_array_equal(
        restored.tokenize_to_dense(texts).numpy(),
        tokenizer.tokenize_to_dense(texts).numpy(),
    )


def test_load_missing_or_malformed_files(tokenizer, tmp_path):
    with pytest.raises(DataError, match="tokenizer.json"):
        Tokenizer.load(tmp_path)
    tokenizer.save(tmp_path)

    (tmp_path / "tokenizer.json").write_text("{not json", "utf-8")
    with pytest.raises(DataError, match="tokenizer.json"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"sequence_length": 1, '
                                             '"lowercase": true}', "utf-8")
    with pytest.raises(DataError, match="tokenizer.json.*sequence_length=1"):
        Tokenizer.load(tmp_path)

    tokenizer.save(tmp_path)
    (tmp_path / "vocab.txt").write_text("[UNK]\n[PAD]\n", "utf-8")
    with pytest.raises(DataError, match="vocab.txt.*reserved"):
        Tokenizer.load(tmp_path)
    (tmp_path / "vocab.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="vocab.txt"):
        Tokenizer.load(tmp_path)
    (tmp_path / "vocab.txt").unlink()
    with pytest.raises(DataError, match="vocab.txt"):
        Tokenizer.load(tmp_path)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"vocabulary": ["a", "b"]}, "vocabulary"),
        ({"vocabulary": RESERVED_TOKENS[::-1]}, "reserved"),
        ({"vocabulary": VOCABULARY + ["书"]}, "duplicate.*书"),
        ({"vocabulary": VOCABULARY + [""]}, "vocabulary"),
        ({"vocabulary": VOCABULARY, "sequence_length": 2},
         "sequence_length=2"),
        ({"vocabulary": VOCABULARY, "sequence_length": 3.0},
         "sequence_length=3.0"),
        ({"vocabulary": VOCABULARY, "lowercase": "yes"}, "lowercase='yes'"),
    ],
)  # fmt: skip
def test_constructor_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Tokenizer(**kwargs)


def test_learn_validation():
    with pytest.raises(ConfigError, match="vocabulary_size=5"):
        Tokenizer.learn(CHINESE, vocabulary_size=5)
    with pytest.raises(ConfigError, match="sequence_length=0"):
        Tokenizer.learn(CHINESE, sequence_length=0)
    with pytest.raises(DataError, match="texts"):
        Tokenizer.learn([])
    with pytest.raises(DataError, match="texts"):
        Tokenizer.learn(["", "  "])
    with pytest.raises(DataError, match="texts"):
        Tokenizer.learn(tf.data.Dataset.from_tensor_slices([1, 2]))


FRESH_PROCESS = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401 (registers the ops)

module = tf.saved_model.load(sys.argv[1])
ids = module.tokenize(tf.constant(json.loads(sys.argv[2])))
leaked = [m for m in ("keras_encoder", "keras_hub") if m in sys.modules]
print(json.dumps({"ids": ids.numpy().tolist(), "leaked": leaked}))
"""


@pytest.mark.slow
def test_saved_model_loads_with_tensorflow_text_only(tokenizer, tmp_path):
    class Serving(tf.Module):
        def __init__(self, tokenizer):
            super().__init__()
            self.tokenizer = tokenizer

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def tokenize(self, strings):
            return self.tokenizer.tokenize_to_dense(strings)

    texts = ["我爱 Reading books!", "", "狗" * 10_000, "a" * 500]
    module = Serving(tokenizer)
    expected = module.tokenize(tf.constant(texts)).numpy().tolist()
    export_dir = str(tmp_path / "export")
    tf.saved_model.save(module, export_dir)
    del module

    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, export_dir, json.dumps(texts)],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # Outside the repository.
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["leaked"] == []
    assert output["ids"] == expected


def test_bert_layout_vocabulary_and_normalization():
    vocabulary = (
        ["[PAD]"] + [f"[unused{i}]" for i in range(3)]
        + ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "cafe", "ﬁ", "##ne"]
    )
    tokenizer = Tokenizer(vocabulary, sequence_length=16, normalization="bert")
    ids = (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id)
    assert ids == (0, 4, 5, 6, 7)
    assert tokenizer.first_regular_id == 8
    # BERT's normalizer: a soft hyphen (a format character) is removed, not
    # a space; accents are stripped; a ligature is not unfolded (no NFKC).
    assert tokenizer.tokens("Caf\u00ade ﬁne") == ["[CLS]", "cafe", "ﬁ", "##ne", "[SEP]"]
    assert tokenizer.tokens("x" * 101) == ["[CLS]", "[UNK]", "[SEP]"]
    with pytest.raises(ConfigError, match="normalization"):
        Tokenizer(vocabulary, normalization="nfc")
