"""Built-in English corpus `wordnet-supersenses`: WordNet glosses by supersense.

Each synset of WordNet 3.0 becomes one example: its gloss (the definition
and any example sentences after ` | `) is the text, and the lexicographer
file it was entered in (one of 45 "supersenses" such as `noun.animal`,
`verb.motion` or `adj.all`) is the label. The data files come from Debian's
`wordnet-base` package (`/usr/share/wordnet/data.{noun,verb,adj,adv}`) and
are read in place; their format is in `man 5 wndb`, the file names in
`man 5 lexnames`.

Nothing here imports TensorFlow.
"""

import os
import re

from keras_encoder.data.classification import _decode
from keras_encoder.data.classification import _finish
from keras_encoder.data.classification import _split_lines
from keras_encoder.errors import DataError

DEFAULT_ROOT = "/usr/share/wordnet"

# lex_filenum -> lexicographer file name, from lexnames(5WN).
LEXICOGRAPHER_FILES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal",
    "noun.artifact", "noun.attribute", "noun.body", "noun.cognition",
    "noun.communication", "noun.event", "noun.feeling", "noun.food",
    "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape",
    "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change",
    "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion",
    "verb.motion", "verb.perception", "verb.possession", "verb.social",
    "verb.stative", "verb.weather", "adj.ppl",
)

# data.<pos>; a synset's lexicographer file name starts with "<pos>.".
_PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")

# synset_offset (8 digits), lex_filenum (2 digits), ss_type, then the rest.
_SYNSET = re.compile(r"([0-9]{8}) ([0-9]{2}) ([nvasr]) ")


def load_wordnet_supersenses(root=DEFAULT_ROOT):
    """Loads WordNet 3.0 glosses labeled by lexicographer file (supersense).

    Reads `data.noun`, `data.verb`, `data.adj` and `data.adv` under `root`
    (117,659 synsets in Debian's `wordnet-base`), skipping the license
    header lines, which start with two spaces. Every other line is one
    synset: the text is its gloss, the label the name of its lexicographer
    file (`lex_filenum`, the second field). The rows then go through the
    same cleaning as every other source, which drops repeated glosses and
    glosses shared by synsets of different supersenses.

    Args:
        root: str or path-like. The WordNet `dict` directory. Defaults to
            `/usr/share/wordnet`.

    Returns:
        A `TextClassificationData` with `source == "wordnet-supersenses"`
        and the lexicographer file names (`"adj.all"`, `"noun.animal"`, ...)
        as `label_names`.

    Raises:
        DataError: a data file is missing (the message names the apt
            package), or a line is malformed (the message names file and
            line).
    """
    root = os.fspath(root)
    paths = [os.path.join(root, f"data.{pos}") for pos in _PARTS_OF_SPEECH]
    missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
    if missing:
        where = root if len(missing) == len(paths) else (
            f"{root}; missing {', '.join(missing)}"
        )
        raise DataError(
            "wordnet-supersenses needs WordNet 3.0 from Debian's wordnet-base "
            f"package: apt-get install wordnet-base (looked in {where})"
        )
    rows = []
    for pos, path in zip(_PARTS_OF_SPEECH, paths):
        with open(path, "rb") as f:
            text = _decode(f.read(), path)
        rows.extend(_read_data_file(text, path, pos))
    return _finish(rows, "wordnet-supersenses")


def _read_data_file(text, path, pos):
    """(gloss, lexicographer file name) for each synset line of one file."""
    rows = []
    for line_number, line in enumerate(_split_lines(text), start=1):
        if line.startswith("  "):
            continue  # license header
        match = _SYNSET.match(line)
        if not match:
            raise DataError(
                f"{path} line {line_number} is not a WordNet synset line "
                "(expected an 8-digit offset, a 2-digit lex_filenum and a "
                "synset type)."
            )
        number = int(match.group(2))
        if number >= len(LEXICOGRAPHER_FILES):
            raise DataError(
                f"{path} line {line_number} has lex_filenum {number}; "
                f"WordNet 3.0 has {len(LEXICOGRAPHER_FILES)} (00 to "
                f"{len(LEXICOGRAPHER_FILES) - 1:02d})."
            )
        label = LEXICOGRAPHER_FILES[number]
        if not label.startswith(pos + "."):
            raise DataError(
                f"{path} line {line_number} has lex_filenum {number} "
                f"({label}), not one of the {pos}.* lexicographer files."
            )
        _, bar, gloss = line.partition(" | ")
        if not bar:
            raise DataError(
                f"{path} line {line_number} has no gloss (no ' | ' separator)."
            )
        rows.append((gloss, label))
    return rows
