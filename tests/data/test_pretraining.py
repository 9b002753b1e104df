"""Unlabelled pretraining text: `chinese-text` without held-out text, files, splits, the --init guard."""

import pytest

from keras_encoder.data import load_reviews, split_dataset
from keras_encoder.data.pretraining import (
    check_held_out_split,
    load_chinese_text,
    load_pretraining_text,
    read_text_file,
    split_texts,
)
from keras_encoder.data.tagging import load_peoples_daily, split_sentences
from keras_encoder.errors import ConfigError, DataError


def scored_texts(seed):
    """Every text a built-in Chinese task validates or tests on at `seed`, from the tasks' own loaders."""
    texts = set()
    reviews = split_dataset(load_reviews(), seed=seed)
    texts |= set(reviews["validation"].texts) | set(reviews["test"].texts)
    for kind in ("ner", "pos"):
        sentences = split_sentences(load_peoples_daily(kind), seed=seed)
        for split in ("validation", "test"):
            texts |= {"".join(units) for units in sentences[split].units}
    return texts


@pytest.mark.parametrize("seed", [1234, 1])
def test_chinese_text_holds_no_text_scored_at_its_seed(seed):
    corpus = load_chinese_text(seed)
    scored = scored_texts(seed)
    assert len(scored) > 15000  # the three tasks' validation and test splits
    assert not set(corpus.texts) & scored
    # Stripping cannot hide a held-out text either.
    assert not {text.strip() for text in corpus.texts} & scored
    assert len(set(corpus.texts)) == len(corpus.texts)  # deduplicated
    sources = corpus.stats["sources"]
    assert sum(counts["kept"] for counts in sources.values()) == len(corpus)
    assert all(counts["held_out"] > 0 for counts in sources.values())
    assert corpus.stats["held_out_seed"] == seed
    # Text outside the held-out splits is kept: the training reviews are in.
    train_reviews = split_dataset(load_reviews(), seed=seed)["train"].texts
    assert set(train_reviews) <= set(corpus.texts)
    assert corpus.num_characters > 2_000_000


def test_text_file_reading_skips_blanks_and_duplicates(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("第一句。\n\n  第二句 \n第一句。\r\n第三句\n", encoding="utf-8")
    data = load_pretraining_text(str(path))
    assert data.texts == ["第一句。", "第二句", "第三句"]
    assert data.stats["duplicates_removed"] == 1
    assert "3 texts" in data.summary()


def test_text_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe broken\n")
    with pytest.raises(DataError, match="bad.txt"):
        read_text_file(str(bad))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt: no text"):
        read_text_file(str(empty))
    with pytest.raises(DataError, match="no such file"):
        read_text_file(str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="one text per line"):
        load_pretraining_text(str(tmp_path / "labelled.csv"))


def test_split_is_deterministic_disjoint_and_complete(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("\n".join(f"句子{i}" for i in range(200)), encoding="utf-8")
    data = read_text_file(str(path))
    parts = split_texts(data, 0.1, 0.05, seed=3)
    assert [len(parts[name]) for name in ("train", "validation", "test")] == [170, 20, 10]
    assert sorted(sum((parts[name].texts for name in parts), [])) == sorted(data.texts)
    assert split_texts(data, 0.1, 0.05, seed=3)["test"].texts == parts["test"].texts
    assert split_texts(data, 0.1, 0.05, seed=4)["test"].texts != parts["test"].texts


def test_init_guard_refuses_a_split_the_pretraining_read():
    pretrained = {"task": "pretrain", "data": "chinese-text", "seed": 1234}
    # Same seed and default fractions: the held-out text was left out.
    check_held_out_split(pretrained, "reviews", 1234, 0.1, 0.1, "logs/p")
    # Data the corpus does not hold out from is not its business.
    check_held_out_split(pretrained, "my.csv", 7, 0.2, 0.2, "logs/p")
    # A run pretrained on a user's file, or a classifier, is not checked.
    check_held_out_split({"task": "pretrain", "data": "mine.txt", "seed": 1}, "reviews", 2, 0.1, 0.1, "x")
    check_held_out_split({"task": "classify", "data": "reviews", "seed": 1}, "reviews", 2, 0.1, 0.1, "x")
    with pytest.raises(ConfigError, match=r"--seed 1234 .*--data peoples-daily-ner --seed 1 "):
        check_held_out_split(pretrained, "peoples-daily-ner", 1, 0.1, 0.1, "logs/p")
    with pytest.raises(ConfigError, match="--validation-fraction 0.2"):
        check_held_out_split(pretrained, "peoples-daily-pos", 1234, 0.2, 0.1, "logs/p")
