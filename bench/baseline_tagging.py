"""Tagging baseline: a linear-chain CRF (sklearn-crfsuite) on window features.

The anchor a Transformer tagger trained by this package should beat. It
uses the built-in corpus and the split (`split_sentences` with validation
and test fractions of 0.1) that training uses, fits on the train split
only, and scores the test split.

- `peoples-daily-ner` (BIO, one unit per character): features are the
  character, the characters at offsets -2, -1, +1, +2 (`<BOS>`/`<EOS>`
  past the sentence ends) and the bigrams previous+current and
  current+next. Scored by exact-span entity precision/recall/F1
  (`entity_report`) and token accuracy.
- `peoples-daily-pos` (one unit per word): features are the word, the
  words at offsets -2, -1, +1, +2, its first and last character and its
  length (1 to 4, or 5+). Scored by token accuracy, next to a
  most-frequent-tag-per-word baseline (unseen words get the most
  frequent tag of the train split).

    python bench/baseline_tagging.py
    python bench/baseline_tagging.py --data peoples-daily-pos
    python bench/baseline_tagging.py --json logs/baseline_ner.json

Needs sklearn-crfsuite (`pip install -e .[bench]`).
"""

import argparse
import collections
import json
import os
import shlex
import sys
import time
from pathlib import Path

import pycrfsuite
import sklearn_crfsuite

# Lets the script run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Importing keras_encoder starts TensorFlow; keep its start-up log quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_encoder.data.tagging import (
    TAGGING_CORPORA,
    load_tagging_data,
    split_sentences,
)
from keras_encoder.training.metrics import entity_report, token_accuracy


def _at(units, index):
    """`units[index]`, or a padding marker past either end of the sentence."""
    if index < 0:
        return "<BOS>"
    return units[index] if index < len(units) else "<EOS>"


def char_features(chars):
    """Per character: the character, a ±2 window and the two bigrams."""
    features = []
    for i, char in enumerate(chars):
        before, after = _at(chars, i - 1), _at(chars, i + 1)
        features.append([
            f"c={char}",
            f"c-2={_at(chars, i - 2)}",
            f"c-1={before}",
            f"c+1={after}",
            f"c+2={_at(chars, i + 2)}",
            f"c-1c={before}{char}",
            f"cc+1={char}{after}",
        ])
    return features


def word_features(words):
    """Per word: the word, a ±2 window, first/last character, length bucket."""
    features = []
    for i, word in enumerate(words):
        features.append([
            f"w={word}",
            f"w-2={_at(words, i - 2)}",
            f"w-1={_at(words, i - 1)}",
            f"w+1={_at(words, i + 1)}",
            f"w+2={_at(words, i + 2)}",
            f"first={word[0]}",
            f"last={word[-1]}",
            f"len={min(len(word), 5)}{'+' if len(word) >= 5 else ''}",
        ])
    return features


class _QuietTrainer(pycrfsuite.Trainer):
    """Prints one line every 10 iterations instead of crfsuite's full log."""

    def message(self, message):
        if self.logparser.feed(message) == "iteration":
            info = self.logparser.last_iteration
            if info["num"] % 10 == 0:
                print(f"  iteration {info['num']}: loss {info['loss']:.1f}",
                      flush=True)


def timed(label, function, *args):
    """Runs `function(*args)`, printing its start and its elapsed time."""
    print(f"{label} ...", flush=True)
    start = time.perf_counter()
    result = function(*args)
    seconds = time.perf_counter() - start
    print(f"{label}: done in {seconds:.1f} s", flush=True)
    return result, seconds


def most_frequent_tag(train, test):
    """Each test word's most frequent train tag (else the overall top tag)."""
    counts = collections.defaultdict(collections.Counter)
    for words, tags in zip(train.units, train.tags):
        for word, tag in zip(words, tags):
            counts[word][tag] += 1
    overall = sum(counts.values(), collections.Counter()).most_common(1)[0][0]
    best = {word: c.most_common(1)[0][0] for word, c in counts.items()}
    return [[best.get(word, overall) for word in words] for words in test.units]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=TAGGING_CORPORA,
                        default="peoples-daily-ner", help="built-in corpus")
    parser.add_argument("--seed", type=int, default=1234,
                        help="split seed (default 1234)")
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--iterations", type=int, default=100,
                        help="L-BFGS iterations at most (default 100)")
    parser.add_argument("--c1", type=float, default=0.1, help="L1 penalty")
    parser.add_argument("--c2", type=float, default=0.1, help="L2 penalty")
    parser.add_argument("--json", type=Path,
                        help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    command = shlex.join(["python", *sys.argv])
    print(f"command:   {command}", flush=True)

    data, _ = timed("loading", load_tagging_data, args.data)
    parts = split_sentences(data, args.validation_fraction,
                            args.test_fraction, args.seed)
    train, test = parts["train"], parts["test"]
    sizes = {name: len(part) for name, part in parts.items()}
    print(f"corpus:    {data.summary()}")
    print(f"split:     seed {args.seed}: train {sizes['train']}, validation "
          f"{sizes['validation']}, test {sizes['test']} sentences "
          f"({train.num_units} / {test.num_units} train / test units)")

    featurize = char_features if data.unit == "char" else word_features
    (x_train, x_test), feature_seconds = timed(
        "features", lambda: ([featurize(s) for s in train.units],
                             [featurize(s) for s in test.units]))
    crf = sklearn_crfsuite.CRF(
        algorithm="lbfgs", c1=args.c1, c2=args.c2,
        max_iterations=args.iterations, trainer_cls=_QuietTrainer)
    _, train_seconds = timed("training", crf.fit, x_train, train.tags)
    predicted, predict_seconds = timed("predicting", crf.predict, x_test)
    log = crf.training_log_
    model = (f"CRF lbfgs c1={args.c1} c2={args.c2}, {len(log.iterations)} "
             f"of at most {args.iterations} iterations, "
             f"{log.featgen_num_features} features, "
             f"final loss {log.last_iteration['loss']:.1f}")

    results = {
        "command": command, "corpus": data.summary(), "seed": args.seed,
        "model": model, "split_sizes": sizes,
        "token_accuracy": token_accuracy(test.tags, predicted),
        "feature_seconds": round(feature_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "predict_seconds": round(predict_seconds, 1),
    }
    print(f"model:     {model}")
    print(f"time:      {feature_seconds:.1f} s features, {train_seconds:.1f} s "
          f"training, {predict_seconds:.1f} s predicting (test)")
    accuracy = results["token_accuracy"]
    minutes = f"{train_seconds / 60:.1f} min"
    if data.scheme == "bio":
        report = entity_report(test.tags, predicted)
        results["entities"] = report
        rows = [*report["per_type"].items(), ("micro", report)]
        print(f"\n{'type':<8}{'precision':>10}{'recall':>10}{'F1':>10}"
              f"{'support':>10}")
        for name, row in rows:
            print(f"{name:<8}{row['precision']:>10.4f}{row['recall']:>10.4f}"
                  f"{row['f1']:>10.4f}{row['support']:>10}")
        print(f"token accuracy: {accuracy:.4f}")
        print("\nmarkdown row (model | command | entity P | R | F1 | "
              "token accuracy | training):")
        print(f"| CRF, char window ±2 + bigrams | `{command}` | "
              f"{report['precision']:.4f} | {report['recall']:.4f} | "
              f"**{report['f1']:.4f}** | {accuracy:.4f} | {minutes} |")
    else:
        baseline = token_accuracy(test.tags, most_frequent_tag(train, test))
        seen = {word for words in train.units for word in words}
        unseen = sum(w not in seen for words in test.units for w in words)
        results["most_frequent_tag_accuracy"] = baseline
        results["test_unseen_word_share"] = unseen / test.num_units
        print(f"\n{'model':<20}{'token accuracy':>16}")
        print(f"{'CRF':<20}{accuracy:>16.4f}")
        print(f"{'most frequent tag':<20}{baseline:>16.4f}")
        print(f"test words unseen in train: {unseen / test.num_units:.2%}")
        print("\nmarkdown row (model | command | token accuracy | "
              "most-frequent-tag accuracy | training):")
        print(f"| CRF, word window ±2 + first/last char + length | "
              f"`{command}` | **{accuracy:.4f}** | {baseline:.4f} | "
              f"{minutes} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
