import json
from collections import Counter

import pytest

from keras_encoder.data import TextClassificationData
from keras_encoder.data import load_classification_data
from keras_encoder.data import load_reviews
from keras_encoder.data import read_labeled_file
from keras_encoder.data import split_dataset
from keras_encoder.errors import ConfigError
from keras_encoder.errors import DataError


def write(tmp_path, name, content):
    """Writes `content` (str as UTF-8, or bytes) to `tmp_path / name`."""
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


@pytest.fixture(scope="module")
def reviews():
    return load_reviews()


# === Reading files ===


def test_csv_with_bom_crlf_multiline_field_and_blank_lines(tmp_path):
    content = (
        "\ufefftext,label\r\n"
        "\r\n"
        "good phone,pos\r\n"
        '"line one\r\nline two, with a comma",neg\r\n'
        '"she said ""fine""",pos\r\n'
        "\r\n"
        ",,\r\n"
        "  padded  , neg \r\n"
    )
    data = read_labeled_file(write(tmp_path, "data.csv", content))
    assert data.texts == [
        "good phone",
        "line one\r\nline two, with a comma",
        'she said "fine"',
        "padded",
    ]
    assert data.label_names == ["neg", "pos"]
    assert data.labels == [1, 0, 1, 0]
    assert data.stats["rows_read"] == 4
    assert data.source == str(tmp_path / "data.csv")


def test_integer_labels_sort_numerically_and_are_strings(tmp_path):
    content = "text,label\na,10\nb,2\nc,-1\nd,02\n"
    data = read_labeled_file(write(tmp_path, "data.csv", content))
    assert data.label_names == ["-1", "2", "10"]
    assert data.labels == [2, 1, 0, 1]


def test_mixed_labels_sort_lexicographically(tmp_path):
    content = "text,label\na,10\nb,2\nc,neutral\n"
    data = read_labeled_file(write(tmp_path, "data.csv", content))
    assert data.label_names == ["10", "2", "neutral"]


def test_tsv_with_custom_columns(tmp_path):
    content = "id\treview\tstars\n1\tgreat, really\t5\n2\tbad\t1\n3\tok\t3\n"
    data = read_labeled_file(
        write(tmp_path, "data.tab", content),
        text_column="review",
        label_column="stars",
    )
    assert data.texts == ["great, really", "bad", "ok"]
    assert data.label_names == ["1", "3", "5"]
    assert data.labels == [2, 0, 1]


def test_jsonl_with_int_and_string_labels(tmp_path):
    lines = [
        {"text": "good", "label": 1},
        {"text": "bad", "label": 0},
        {"text": "also good", "label": "1"},
        {"text": "a\u2028b", "label": 0},
        {"text": None, "label": 0},
    ]
    content = "\n".join(json.dumps(x, ensure_ascii=False) for x in lines)
    content = content.replace("\n", "\r\n", 1) + "\n\n"
    data = read_labeled_file(write(tmp_path, "data.jsonl", content))
    assert data.texts == ["good", "bad", "also good", "a\u2028b"]
    assert data.label_names == ["0", "1"]
    assert data.labels == [1, 0, 1, 0]
    assert data.stats["empty_skipped"] == 1


def test_cleaning_counts(tmp_path):
    content = (
        "text,label\n"
        "a,x\n"
        " a ,x\n"  # duplicate of row 1 once stripped
        "b,x\n"
        "b,y\n"  # b carries two labels
        "b,y\n"
        "c,y\n"
        "   ,y\n"
        '"",x\n'
        "d,x\n"
    )
    data = read_labeled_file(write(tmp_path, "data.csv", content))
    assert data.stats == {
        "rows_read": 9,
        "empty_skipped": 2,
        "duplicates_removed": 2,
        "contradictory_removed": 1,
        "examples": 3,
    }
    assert data.texts == ["a", "c", "d"]
    assert data.labels == [0, 1, 0]
    assert len(data) == 3
    assert data.summary() == (
        f"{data.source}: 9 rows read, 2 duplicates removed, "
        "1 contradictory text dropped, 2 empty texts skipped -> "
        "3 examples, 2 classes"
    )


def test_load_classification_data_reads_a_path(tmp_path):
    path = write(tmp_path, "data.ndjson", '{"text":"a","label":"x"}\n'
                 '{"text":"b","label":"y"}\n')
    data = load_classification_data(path)
    assert data.texts == ["a", "b"]


# === Errors ===


@pytest.mark.parametrize(
    "name,content,kwargs,message",
    [
        (
            "data.xlsx",
            "x",
            {},
            r"data\.xlsx has extension '\.xlsx'; accepted extensions are "
            r"\.csv, \.jsonl, \.ndjson, \.tab, \.tsv",
        ),
        ("data.csv", "", {}, r"data\.csv is empty"),
        ("data.csv", "\r\n\n  \n", {}, r"data\.csv is empty"),
        ("data.jsonl", "\n\n", {}, r"data\.jsonl is empty"),
        (
            "data.csv",
            "text,label\n\n",
            {},
            r"data\.csv has a header but no data rows",
        ),
        (
            "data.csv",
            "review,stars\nok,1\n",
            {},
            r"data\.csv has no column 'text' \(columns: review, stars\); "
            r"pass --text-column",
        ),
        (
            "data.tsv",
            "text\tstars\nok\t1\n",
            {},
            r"data\.tsv has no column 'label' \(columns: text, stars\); "
            r"pass --label-column",
        ),
        (
            "data.csv",
            "text,label\na,x\nb,\nc,y\n",
            {},
            r"data\.csv line 3 has an empty label in column 'label'",
        ),
        (
            "data.csv",
            'text,label\n"multi\nline",x\n"b",  \n',
            {},
            r"data\.csv line 4 has an empty label",
        ),
        (
            "data.csv",
            'text,label\na,x\n"unclosed,y\nc,y\n',
            {},
            r"data\.csv line 3 has 1 field but the header has 2; "
            r"check for an unclosed quote",
        ),
        (
            "data.csv",
            "text,label\nbad, really,x\n",
            {},
            r"data\.csv line 2 has 3 fields but the header has 2",
        ),
        (
            "data.jsonl",
            '{"text": "a", "label": "x"}\n\n{"text": "b", "label": }\n',
            {},
            r"data\.jsonl line 3 is not valid JSON \(Expecting value at "
            r"column 24\)",
        ),
        (
            "data.jsonl",
            '{"text": "a", "label": "x"}\n["b", "y"]\n',
            {},
            r"data\.jsonl line 2 is a JSON array, not an object",
        ),
        (
            "data.jsonl",
            '{"review": "a", "label": "x"}\n',
            {},
            r"data\.jsonl line 1 has no field 'text' \(fields: review, "
            r"label\); pass --text-column",
        ),
        (
            "data.jsonl",
            '{"text": "a", "label": "x"}\n{"text": "b", "label": ""}\n',
            {},
            r"data\.jsonl line 2 has an empty label in field 'label'",
        ),
        (
            "data.jsonl",
            '{"text": "a", "label": null}\n',
            {},
            r"data\.jsonl line 1 has an empty label",
        ),
        (
            "data.jsonl",
            '{"text": "a", "label": 1.5}\n',
            {},
            r"data\.jsonl line 1 has label 1\.5, a JSON number; labels must be "
            r"strings or integers",
        ),
        (
            "data.jsonl",
            '{"text": 3, "label": "x"}\n',
            {},
            r"data\.jsonl line 1 has a JSON integer in field 'text', where a "
            r"string was expected",
        ),
        (
            "data.csv",
            "text,label\na,pos\nb,pos\n",
            {},
            r"data\.csv has only one label after cleaning, 'pos'; a "
            r"classifier needs at least two",
        ),
        (
            "data.csv",
            "text,label\na,pos\na,neg\nb,pos\n",
            {},
            r"data\.csv has only one label after cleaning, 'pos'",
        ),
        (
            "data.csv",
            "text,label\n  ,pos\n,neg\n",
            {},
            r"data\.csv has no examples left after cleaning \(2 rows read, "
            r"2 empty texts skipped\)",
        ),
    ],
)
def test_file_errors(tmp_path, name, content, kwargs, message):
    with pytest.raises(DataError, match=message):
        read_labeled_file(write(tmp_path, name, content), **kwargs)


def test_undecodable_bytes_name_the_line(tmp_path):
    content = "text,label\nok,x\n".encode() + "café".encode("latin-1") + b",y\n"
    path = write(tmp_path, "data.csv", content)
    with pytest.raises(
        DataError, match=r"data\.csv line 3 is not valid UTF-8 \(byte 0xe9\)"
    ):
        read_labeled_file(path)


def test_unparsable_csv_names_the_line(tmp_path):
    content = 'text,label\na,x\n"unclosed ' + "x" * 200_000 + "\n"
    path = write(tmp_path, "data.csv", content)
    with pytest.raises(
        DataError, match=r"data\.csv line 3 cannot be parsed \(field larger"
    ):
        read_labeled_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.csv does not exist"):
        read_labeled_file(tmp_path / "nothere.csv")


def test_unknown_corpus_names_the_builtin_ones(tmp_path):
    with pytest.raises(
        DataError,
        match=r"revews is neither a built-in corpus \(reviews, wordnet-supersenses\) nor an "
        r"existing file",
    ):
        load_classification_data("revews")
    with pytest.raises(DataError, match=r"built-in corpus \(reviews, wordnet-supersenses\)"):
        load_classification_data(tmp_path / "nothere.csv")


# === Built-in corpus ===


def test_reviews_corpus(reviews):
    assert reviews is not None
    assert len(reviews) > 10000
    assert reviews.label_names == ["negative", "positive"]
    assert set(reviews.labels) == {0, 1}
    assert reviews.source == "reviews"
    assert len(set(reviews.texts)) == len(reviews)  # also: no contradictions
    assert all(text == text.strip() and text for text in reviews.texts)
    stats = reviews.stats
    assert stats["examples"] == len(reviews)
    assert stats["rows_read"] == (
        stats["empty_skipped"]
        + stats["duplicates_removed"]
        + 2 * stats["contradictory_removed"]
        + stats["examples"]
    )
    assert stats["duplicates_removed"] > 0
    assert stats["contradictory_removed"] > 0
    assert reviews.summary().startswith("reviews: ")


def test_load_classification_data_builtin(reviews):
    assert load_classification_data("reviews").texts == reviews.texts


# === Splits ===


def test_split_is_stratified_disjoint_and_complete(reviews):
    parts = split_dataset(reviews, validation_fraction=0.1, test_fraction=0.2)
    assert sorted(parts) == ["test", "train", "validation"]
    texts = [set(part.texts) for part in parts.values()]
    assert sum(len(t) for t in texts) == len(reviews)
    assert set().union(*texts) == set(reviews.texts)
    whole = Counter(reviews.labels)
    for part in parts.values():
        assert part.label_names == reviews.label_names
        counts = Counter(part.labels)
        for label in whole:
            assert counts[label] / len(part) == pytest.approx(
                whole[label] / len(reviews), abs=0.01
            )
    assert len(parts["test"]) / len(reviews) == pytest.approx(0.2, abs=0.001)
    assert len(parts["validation"]) / len(reviews) == pytest.approx(
        0.1, abs=0.001
    )
    pairs = set(zip(reviews.texts, reviews.labels))
    for part in parts.values():
        assert set(zip(part.texts, part.labels)) <= pairs


def test_split_is_deterministic_for_a_seed(reviews):
    first = split_dataset(reviews, seed=7)
    again = split_dataset(reviews, seed=7)
    other = split_dataset(reviews, seed=8)
    assert first["test"].texts == again["test"].texts
    assert first["train"].texts == again["train"].texts
    assert first["test"].texts != other["test"].texts
    assert first["train"].summary() == (
        "reviews (train split, seed 7): "
        f"{len(first['train'])} examples, 2 classes"
    )


def small_data(counts):
    texts, labels = [], []
    for label, count in enumerate(counts):
        texts += [f"{label}-{i}" for i in range(count)]
        labels += [label] * count
    names = [str(i) for i in range(len(counts))]
    return TextClassificationData(texts, labels, names, "small", {})


def test_split_keeps_every_class_in_train():
    data = small_data([1, 2, 3, 50])
    parts = split_dataset(data, validation_fraction=0.3, test_fraction=0.4)
    assert set(parts["train"].labels) == {0, 1, 2, 3}
    assert sum(len(p) for p in parts.values()) == len(data)


def test_split_without_validation():
    data = small_data([20, 30])
    parts = split_dataset(data, validation_fraction=0, test_fraction=0.1)
    assert len(parts["validation"]) == 0
    assert parts["validation"].texts == []
    assert len(parts["test"]) == 5
    assert len(parts["train"]) == 45


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"validation_fraction": -0.1}, r"Received: validation_fraction=-0\.1"),
        ({"validation_fraction": 1.0}, r"validation_fraction must be a number"),
        ({"test_fraction": "0.1"}, r"Received: test_fraction='0\.1'"),
        ({"test_fraction": float("nan")}, r"Received: test_fraction=nan"),
        (
            {"validation_fraction": 0.5, "test_fraction": 0.5},
            r"validation_fraction \+ test_fraction must be below 1",
        ),
        ({"seed": 1.5}, r"seed must be an integer\. Received: seed=1\.5"),
        ({"seed": -1}, r"Received: seed=-1"),
    ],
)
def test_split_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        split_dataset(small_data([5, 5]), **kwargs)
