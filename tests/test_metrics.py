"""Task metrics, and the table they share with the quantization gate and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from rnnedge import metrics
from rnnedge.errors import RnnEdgeError
from rnnedge.tables import METRICS


def test_every_metric_in_the_table_has_a_scorer():
    assert set(metrics.SCORERS) == set(METRICS)


def test_accuracy_of_class_probabilities_and_of_one_probability_per_row():
    probs = np.array([[0.1, 0.9], [0.8, 0.2], [0.4, 0.6]])
    assert metrics.score("accuracy", probs, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert metrics.score("accuracy", np.array([[0.7], [0.2]]), np.array([1.0, 0.0])) == 1.0


def test_micro_f1_counts_every_label():
    y = np.array([[1, 0], [1, 1]], np.float32)
    pred = np.array([[0.9, 0.6], [0.2, 0.7]])  # tp 2, fp 1, fn 1
    assert metrics.f1(pred, y) == pytest.approx(2 * 2 / (2 * 2 + 2))
    assert metrics.f1(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def test_rmse_and_majority_baseline():
    assert metrics.rmse(np.array([[1.0], [3.0]]), np.array([2.0, 2.0])) == 1.0
    assert metrics.majority_accuracy(np.array([3, 3, 1, 3])) == 0.75


def test_unknown_metric_names_the_known_ones():
    with pytest.raises(RnnEdgeError, match="unknown metric 'auc': expected one of accuracy, f1, rmse"):
        metrics.score("auc", np.zeros(2), np.zeros(2))
