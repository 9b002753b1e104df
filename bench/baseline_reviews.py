"""Reviews baseline: character n-gram TF-IDF + logistic regression.

The anchor a Transformer encoder trained by this package should beat. It
uses the built-in corpus, cleaning and split (`split_dataset` with validation
and test fractions of 0.1) that training uses, fits on the train split
only, and scores the test split.

    python bench/baseline_reviews.py
    python bench/baseline_reviews.py --seed 7 --json logs/baseline_reviews.json

Needs scikit-learn (`pip install -e .[bench]`).
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.metrics import f1_score

# Lets the script run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from keras_encoder.data import load_reviews  # noqa: E402
from keras_encoder.data import split_dataset  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seed", type=int, default=1234, help="split seed (default 1234)"
    )
    parser.add_argument(
        "--json", type=Path, help="also write the numbers to this JSON file"
    )
    args = parser.parse_args(argv)
    command = shlex.join(["python", *sys.argv])

    data = load_reviews()
    parts = split_dataset(
        data, validation_fraction=0.1, test_fraction=0.1, seed=args.seed
    )
    train, test = parts["train"], parts["test"]

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3))
    classifier = LogisticRegression(max_iter=1000)
    classifier.fit(vectorizer.fit_transform(train.texts), train.labels)
    predicted = classifier.predict(vectorizer.transform(test.texts))
    seconds = time.perf_counter() - start

    results = {
        "command": command,
        "corpus": data.summary(),
        "seed": args.seed,
        "model": 'TfidfVectorizer(analyzer="char", ngram_range=(1, 3)) + '
        "LogisticRegression(max_iter=1000)",
        "split_sizes": {name: len(part) for name, part in parts.items()},
        "test_accuracy": round(
            float(accuracy_score(test.labels, predicted)), 4
        ),
        "test_macro_f1": round(
            float(f1_score(test.labels, predicted, average="macro")), 4
        ),
        "fit_and_predict_seconds": round(seconds, 1),
    }

    print(f"command:   {results['command']}")
    print(f"corpus:    {results['corpus']}")
    sizes = results["split_sizes"]
    print(
        f"split:     seed {args.seed}: train {sizes['train']}, "
        f"validation {sizes['validation']}, test {sizes['test']}"
    )
    print(f"model:     {results['model']}")
    print(f"accuracy:  {results['test_accuracy']:.4f} (test)")
    print(f"macro-F1:  {results['test_macro_f1']:.4f} (test)")
    print(f"time:      {results['fit_and_predict_seconds']} s fit + predict")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
