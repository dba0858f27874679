"""Task metrics, from a model's first output and the targets (numpy only: the runtime side uses them too)."""

from __future__ import annotations

import numpy as np

from rnnedge.errors import RnnEdgeError


def _checked(metric: str, output, y) -> tuple[np.ndarray, np.ndarray]:
    """Both as numeric arrays, refused in one line when they are not numbers or not one output
    value per target: numpy would raise its own error or, worse, broadcast to a wrong score."""
    output, y = np.asarray(output), np.asarray(y)
    for what, a in (("the model's output", output), ("the targets 'y'", y)):
        if a.dtype.kind not in "biuf":
            raise RnnEdgeError(f"metric '{metric}' needs numbers but {what} are {a.dtype}: give numeric targets 'y'")
    classes = metric == "accuracy" and output.ndim > y.ndim and output.shape[-1] > 1
    fits = output.shape[:-1] == y.shape if classes else output.size == y.size
    if not fits or y.size == 0:
        raise RnnEdgeError(f"metric '{metric}' needs one target per output value (or per row of class "
                           f"probabilities): the output is {list(output.shape)}, the targets 'y' are "
                           f"{list(y.shape)}; give 'y' one row per input row")
    return output, y


def accuracy(output: np.ndarray, y: np.ndarray) -> float:
    """Class probabilities on the last axis (argmax), or one probability per target (>= 0.5)."""
    output, y = _checked("accuracy", output, y)
    if output.ndim > y.ndim and output.shape[-1] > 1:
        return float(np.mean(np.argmax(output, axis=-1) == y))
    return float(np.mean((output.reshape(y.shape) >= 0.5) == (y >= 0.5)))


def f1(output: np.ndarray, y: np.ndarray) -> float:
    """Micro F1 of multi-label probabilities (or boolean predictions) at threshold 0.5."""
    output, y = _checked("f1", output, y)
    pred = output.reshape(y.shape) >= 0.5 if output.dtype != bool else output.reshape(y.shape)
    true = y >= 0.5
    tp = np.sum(pred & true)
    wrong = np.sum(pred != true)  # false positives + false negatives
    return float(2 * tp / (2 * tp + wrong)) if tp + wrong else 1.0


def rmse(output: np.ndarray, y: np.ndarray) -> float:
    output, y = _checked("rmse", output, y)
    return float(np.sqrt(np.mean((np.asarray(output).reshape(y.shape).astype(np.float64) - y) ** 2)))


def majority_accuracy(y: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent class (a trivial baseline)."""
    y = np.asarray(y)
    return float(np.max(np.bincount(y.reshape(-1).astype(np.int64))) / y.size)


SCORERS = {"accuracy": accuracy, "f1": f1, "rmse": rmse}  # one per name in tables.METRICS


def score(metric: str, output: np.ndarray, y: np.ndarray) -> float:
    if metric not in SCORERS:
        raise RnnEdgeError(f"unknown metric {metric!r}: expected one of {', '.join(SCORERS)}")
    return SCORERS[metric](output, y)
