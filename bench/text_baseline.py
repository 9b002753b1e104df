"""Shared pieces of the TF-IDF text-classification baselines.

`baseline_reviews.py` and `baseline_wordnet.py` take the same command line
(`--seed`, `--json`), split the corpus as training does (`split_dataset`
with validation and test fractions of 0.1), score the test split by
accuracy and macro-F1 and print the same report.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

from sklearn.metrics import accuracy_score
from sklearn.metrics import f1_score

# Lets the scripts run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keras_encoder.data import split_dataset  # noqa: E402


def parser(description):
    """An argument parser with `--seed` and `--json`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--seed", type=int, default=1234, help="split seed (default 1234)"
    )
    parser.add_argument(
        "--json", type=Path, help="also write the numbers to this JSON file"
    )
    return parser


def command_line():
    """The command that ran, for the report."""
    return shlex.join(["python", *sys.argv])


def split(data, seed):
    """The split `train.py` uses with its defaults."""
    return split_dataset(
        data, validation_fraction=0.1, test_fraction=0.1, seed=seed
    )


def scores(labels, predicted):
    """Accuracy and macro-F1, rounded to 4 digits."""
    return {
        "accuracy": round(float(accuracy_score(labels, predicted)), 4),
        "macro_f1": round(
            float(f1_score(labels, predicted, average="macro")), 4
        ),
    }


def report(results, json_path=None, extra_lines=()):
    """Prints the results (and `extra_lines` after the model); writes JSON."""
    print(f"command:   {results['command']}")
    print(f"corpus:    {results['corpus']}")
    sizes = results["split_sizes"]
    print(
        f"split:     seed {results['seed']}: train {sizes['train']}, "
        f"validation {sizes['validation']}, test {sizes['test']}"
    )
    print(f"model:     {results['model']}")
    for line in extra_lines:
        print(line)
    print(f"accuracy:  {results['test_accuracy']:.4f} (test)")
    print(f"macro-F1:  {results['test_macro_f1']:.4f} (test)")
    print(f"time:      {results['fit_and_predict_seconds']} s fit + predict")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {json_path}")
