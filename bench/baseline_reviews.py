"""Reviews baseline: character n-gram TF-IDF + logistic regression.

The anchor a Transformer encoder trained by this package should beat. It
uses the built-in corpus, cleaning and split (`split_dataset` with validation
and test fractions of 0.1) that training uses, fits on the train split
only, and scores the test split.

    python bench/baseline_reviews.py
    python bench/baseline_reviews.py --seed 7 --json logs/baseline_reviews.json

Needs scikit-learn (`pip install -e .[bench]`).
"""

import sys
import time
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))

import text_baseline  # noqa: E402  (puts the checkout on sys.path)

from keras_encoder.data import load_reviews  # noqa: E402


def main(argv=None):
    args = text_baseline.parser(__doc__.splitlines()[0]).parse_args(argv)

    data = load_reviews()
    parts = text_baseline.split(data, args.seed)
    train, test = parts["train"], parts["test"]

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3))
    classifier = LogisticRegression(max_iter=1000)
    classifier.fit(vectorizer.fit_transform(train.texts), train.labels)
    predicted = classifier.predict(vectorizer.transform(test.texts))
    seconds = time.perf_counter() - start

    test_scores = text_baseline.scores(test.labels, predicted)
    results = {
        "command": text_baseline.command_line(),
        "corpus": data.summary(),
        "seed": args.seed,
        "model": 'TfidfVectorizer(analyzer="char", ngram_range=(1, 3)) + '
        "LogisticRegression(max_iter=1000)",
        "split_sizes": {name: len(part) for name, part in parts.items()},
        "test_accuracy": test_scores["accuracy"],
        "test_macro_f1": test_scores["macro_f1"],
        "fit_and_predict_seconds": round(seconds, 1),
    }
    text_baseline.report(results, args.json)


if __name__ == "__main__":
    main()
