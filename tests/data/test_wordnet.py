"""The built-in `wordnet-supersenses` corpus (Debian's wordnet-base)."""

import collections
import os
import re

import pytest

from keras_encoder.data import BUILTIN_CORPORA
from keras_encoder.data import load_classification_data
from keras_encoder.data import load_wordnet_supersenses
from keras_encoder.data import split_dataset
from keras_encoder.errors import DataError

REAL_ROOT = "/usr/share/wordnet"

# The first lines of a real data file: each starts with two spaces.
LICENSE = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  By obtaining, using  \n"
    "  3   \n"
    "  4 WordNet 3.0 Copyright 2006 by Princeton University.  All rights reserved.  \n"
)

# Synset lines in the real format (offsets need not be real byte offsets).
DATA = {
    "noun": (
        "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 ~ 00002137 n 0000 "
        "~ 04424418 n 0000 | that which is perceived or known or inferred to "
        "have its own distinct existence (living or nonliving)  \n"
        "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 002 "
        "@ 02083346 n 0000 #m 02083346 n 0000 | a member of the genus Canis; "
        '"the dog barked all night"  \n'
        # A second synset with the same gloss and label: a duplicate.
        "02084072 05 n 01 doggy 0 000 | a member of the genus Canis; "
        '"the dog barked all night"  \n'
        # The same gloss as a noun.act and a verb.motion synset: dropped.
        "00280000 04 n 01 walk 0 000 | the act of traveling by foot  \n"
    ),
    "verb": (
        "01904930 38 v 01 walk 0 001 @ 01835496 v 0000 02 + 08 00 + 09 00 "
        "| use one's feet to advance; advance by steps  \n"
        "01904931 38 v 01 foot 0 000 01 + 08 00 | the act of traveling by foot  \n"
    ),
    "adj": (
        "00001740 00 a 01 able 0 002 = 05207437 n 0000 ! 00002098 a 0101 "
        "| (usually followed by `to') having the necessary means  \n"
        "00002098 00 s 01 unable(p) 0 000 | not able  \n"
    ),
    "adv": "00001740 02 r 01 barely 0 000 | by a small margin  \n",
}


def write_wordnet(root, data=DATA):
    root.mkdir(exist_ok=True)
    for pos, body in data.items():
        (root / f"data.{pos}").write_text(LICENSE + body, encoding="utf-8")
    return root


def test_fake_wordnet_gives_glosses_labeled_by_lexicographer_file(tmp_path):
    data = load_wordnet_supersenses(write_wordnet(tmp_path / "dict"))
    got = [(text, data.label_names[label]) for text, label in
           zip(data.texts, data.labels)]
    assert got == [
        (
            "that which is perceived or known or inferred to have its own "
            "distinct existence (living or nonliving)",
            "noun.Tops",
        ),
        ('a member of the genus Canis; "the dog barked all night"', "noun.animal"),
        ("use one's feet to advance; advance by steps", "verb.motion"),
        ("(usually followed by `to') having the necessary means", "adj.all"),
        ("not able", "adj.all"),
        ("by a small margin", "adv.all"),
    ]
    assert data.label_names == [
        "adj.all", "adv.all", "noun.Tops", "noun.animal", "verb.motion"
    ]
    assert data.source == "wordnet-supersenses"
    assert data.stats == {
        "rows_read": 9,
        "empty_skipped": 0,
        "duplicates_removed": 1,
        "contradictory_removed": 1,
        "examples": 6,
    }


@pytest.mark.parametrize(
    "line, problem",
    [
        ("00002098 00 s 01 unable 0 000 not able  ", r"no gloss"),
        ("0002098 00 s 01 unable 0 000 | not able  ", r"not a WordNet synset line"),
        ("00002098 xx s 01 unable 0 000 | not able  ", r"not a WordNet synset line"),
        ("00002098 45 s 01 unable 0 000 | not able  ", r"lex_filenum 45"),
        ("00002098 38 s 01 unable 0 000 | not able  ", r"verb\.motion\), not one of the adj\.\* lexicographer"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, problem):
    body = DATA["adj"].splitlines(keepends=True)
    body[1] = line + "\n"
    root = write_wordnet(tmp_path / "dict", {**DATA, "adj": "".join(body)})
    path = os.path.join(root, "data.adj")
    # Four license lines, then the adjective synsets: line 6 is the second.
    with pytest.raises(DataError, match=rf"^{re.escape(path)} line 6 .*{problem}"):
        load_wordnet_supersenses(root)


def test_non_utf8_byte_names_file_and_line(tmp_path):
    root = write_wordnet(tmp_path / "dict")
    with open(root / "data.adv", "ab") as f:
        f.write(b"00001741 02 r 01 tres 0 000 | tr\xe8s  \n")
    with pytest.raises(DataError, match=r"data\.adv line 6 is not valid UTF-8"):
        load_wordnet_supersenses(root)


def test_missing_wordnet_names_the_apt_package(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as error:
        load_wordnet_supersenses(missing)
    assert str(error.value) == (
        "wordnet-supersenses needs WordNet 3.0 from Debian's wordnet-base "
        f"package: apt-get install wordnet-base (looked in {missing})"
    )


def test_missing_data_file_is_named(tmp_path):
    root = write_wordnet(tmp_path / "dict")
    (root / "data.verb").unlink()
    with pytest.raises(
        DataError, match=r"apt-get install wordnet-base \(looked in .*; missing data\.verb\)"
    ):
        load_wordnet_supersenses(root)


def test_is_a_builtin_corpus():
    assert "wordnet-supersenses" in BUILTIN_CORPORA


@pytest.mark.skipif(
    not os.path.isdir(REAL_ROOT), reason="needs Debian's wordnet-base"
)
def test_real_wordnet_loads_by_name():
    # About 0.6 s: WordNet 3.0 as packaged in Debian's wordnet-base 3.0.
    data = load_classification_data("wordnet-supersenses")
    assert data.stats == {
        "rows_read": 117659,  # 82115 noun + 13767 verb + 18156 adj + 3621 adv
        "empty_skipped": 0,
        "duplicates_removed": 617,
        "contradictory_removed": 9,
        "examples": 117024,
    }
    assert len(data.label_names) == 45  # every lexicographer file occurs
    counts = collections.Counter(data.label_names[i] for i in data.labels)
    assert counts.most_common(1) == [("adj.all", 14417)]
    assert min(counts.values()) == counts["noun.motive"] == 42
    parts = split_dataset(data, seed=1234)
    assert sum(len(part) for part in parts.values()) == len(data)
    assert set(parts["test"].labels) == set(range(45))
