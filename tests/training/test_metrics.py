import numpy as np
import pytest

from keras_encoder.training.metrics import classification_report, confusion_matrix


def test_confusion_matrix_counts():
    matrix = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_report_matches_hand_computation():
    matrix = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    report = classification_report(matrix, ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(4 / 6)
    # a: p=1/2 r=1/2 f=1/2; b: p=1/2 r=1 f=2/3; c: p=1 r=2/3 f=4/5
    assert report["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 4 / 5) / 3)
    assert report["per_class"]["c"]["support"] == 3


def test_class_never_predicted_scores_zero_not_nan():
    report = classification_report(np.array([[3, 0], [2, 0]]), ["x", "y"])
    assert report["per_class"]["y"]["f1"] == 0.0
    assert np.isfinite(report["macro_f1"])
