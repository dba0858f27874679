"""The zoo's entries: names, tasks, cells and metrics, and `ZooModel` (a trained model with its
test split, its score and the score of a trivial baseline)."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from rnnedge import metrics
from rnnedge.errors import RnnEdgeError
from rnnedge.tables import METRICS, ZOO, ZOO_TASK_METRICS

# Bump when training code, data or hyper-parameters change: old cache files are then ignored.
ZOO_VERSION = 2

NAMES: tuple[str, ...] = tuple(ZOO)

# tasks whose first output holds class probabilities on its last axis
_CLASS_PROBABILITY_TASKS = {"digits", "digits-conv", "seq2seq", "kws"}


def unknown_model(name: str) -> RnnEdgeError:
    return RnnEdgeError(f"unknown zoo model {name!r}; expected one of: {', '.join(NAMES)}")


@dataclass(frozen=True)
class ZooModel:
    """A trained zoo model with its test split, its score and the score of a trivial baseline."""

    name: str
    task: str
    cell: str
    metric: str
    model: keras.Model
    x_test: tuple[np.ndarray, ...]  # one array per model.inputs, in order, in the dtype it expects
    y_test: np.ndarray
    keras_score: float
    baseline: float

    def __post_init__(self):
        if self.name not in ZOO:
            raise unknown_model(self.name)
        if (self.task, self.cell) != ZOO[self.name] or self.metric != ZOO_TASK_METRICS[self.task]:
            raise RnnEdgeError(
                f"zoo model {self.name!r} must have task/cell/metric "
                f"{ZOO[self.name] + (ZOO_TASK_METRICS[ZOO[self.name][0]],)}, "
                f"got {(self.task, self.cell, self.metric)}"
            )
        if len(self.x_test) != len(self.model.inputs):
            raise RnnEdgeError(
                f"zoo model {self.name!r} has {len(self.model.inputs)} inputs "
                f"but x_test holds {len(self.x_test)} arrays"
            )

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric].higher_is_better

    def score(self, outputs) -> float:
        """The task metric of raw model outputs against `y_test`.

        `outputs` is one array, or the list of the model's outputs in Keras' flattened order
        (Keras `predict` or onnxruntime `run`); only the first (the prediction) is scored, the
        state outputs of seq2seq and cells models are ignored.
        """
        main = np.asarray(outputs[0] if isinstance(outputs, (list, tuple)) else outputs)
        y = self.y_test
        if self.task in _CLASS_PROBABILITY_TASKS:
            fits, expected = main.shape[:-1] == y.shape, f"{y.shape} + (classes,)"
        else:
            fits, expected = main.size == y.size and main.shape[:1] == y.shape[:1], f"{y.shape}"
        if not fits:
            raise RnnEdgeError(
                f"{self.name}: expected the first output for the {len(y)} test samples shaped "
                f"{expected}, got {main.shape}; pass the outputs of the model run on x_test"
            )
        return metrics.score(self.metric, main, y)

    def beats_baseline(self) -> bool:
        """True when the model is strictly better than the trivial baseline."""
        if self.higher_is_better:
            return self.keras_score > self.baseline
        return self.keras_score < self.baseline
