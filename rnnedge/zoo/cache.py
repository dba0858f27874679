"""Zoo models trained on first use and cached in process and on disk (`~/.cache/rnnedge/zoo`,
file names carry `ZOO_VERSION`), written atomically so another process never reads half a file."""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from rnnedge.tables import ZOO, ZOO_TASK_METRICS
from rnnedge.zoo.entries import ZOO_VERSION, ZooModel, unknown_model
from rnnedge.zoo.tasks import SEED, TRAINERS

_DEFAULT_CACHE = Path("~/.cache/rnnedge/zoo")

_MEMORY: dict[tuple[str, str], ZooModel] = {}


def _predict(model: keras.Model, x_test: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """The model's outputs on the test split, flattened as `model.predict` returns them.

    One direct call: `predict` would first trace a predict function, which takes longer than
    the whole call on these small test splits. The numbers are the same.
    """
    outputs = model(list(x_test) if len(x_test) > 1 else x_test[0], training=False)
    return [keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(outputs)]


def _train(name: str) -> ZooModel:
    task, cell = ZOO[name]
    keras.utils.set_random_seed(SEED)
    trained = TRAINERS[task](cell)
    unscored = ZooModel(name, task, cell, ZOO_TASK_METRICS[task], trained.model, trained.x_test,
                        trained.y_test, keras_score=float("nan"), baseline=trained.baseline)
    return replace(unscored, keras_score=unscored.score(_predict(trained.model, trained.x_test)))


def _paths(name: str, cache_dir: Path) -> tuple[Path, Path]:
    stem = f"{name}.v{ZOO_VERSION}"
    return cache_dir / f"{stem}.keras", cache_dir / f"{stem}.npz"


def _write_atomically(path: Path, write) -> None:
    """Call write(temp_path) for a temp file beside `path`, then move it into place, so that a
    reader (another process) sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{threading.get_ident()}{path.suffix}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _save(zm: ZooModel, cache_dir: Path) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    model_path, data_path = _paths(zm.name, cache_dir)
    arrays = {f"x_test_{i}": x for i, x in enumerate(zm.x_test)}
    arrays.update(y_test=zm.y_test, keras_score=np.float64(zm.keras_score),
                  baseline=np.float64(zm.baseline))

    def write_data(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)

    with warnings.catch_warnings():
        # Keras 3.15 saving TensorFlow variables under numpy 2 warns once per weight; not ours.
        warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy keyword",
                                DeprecationWarning)
        _write_atomically(model_path, lambda tmp: zm.model.save(tmp))
    _write_atomically(data_path, write_data)  # written last: its presence marks a complete entry


def _read(name: str, cache_dir: Path) -> ZooModel | None:
    model_path, data_path = _paths(name, cache_dir)
    if not (model_path.is_file() and data_path.is_file()):
        return None
    task, cell = ZOO[name]
    with np.load(data_path) as data:
        n_inputs = sum(key.startswith("x_test_") for key in data.files)
        x_test = tuple(data[f"x_test_{i}"] for i in range(n_inputs))
        y_test = data["y_test"]
        keras_score, baseline = float(data["keras_score"]), float(data["baseline"])
    model = keras.models.load_model(model_path)
    return ZooModel(name, task, cell, ZOO_TASK_METRICS[task], model, x_test, y_test, keras_score, baseline)


def load(name: str, cache_dir: str | Path | None = None, retrain: bool = False) -> ZooModel:
    """The zoo model `name`, trained on first use and cached in process and in `cache_dir`.

    `cache_dir` defaults to `~/.cache/rnnedge/zoo`; `retrain=True` ignores both caches and
    overwrites the files.
    """
    if name not in ZOO:
        raise unknown_model(name)
    folder = Path(cache_dir if cache_dir is not None else _DEFAULT_CACHE).expanduser().resolve()
    key = (name, str(folder))
    if not retrain:
        if key in _MEMORY:
            return _MEMORY[key]
        cached = _read(name, folder)
        if cached is not None:
            _MEMORY[key] = cached
            return cached
    zm = _train(name)
    _save(zm, folder)
    _MEMORY[key] = zm
    return zm
