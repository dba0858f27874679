"""What a Keras 2 file says beyond its model configuration (keras2.py reads that): where a
SavedModel keeps its Keras metadata (keras_metadata.pb, or saved_model.pb's object graph as TF <= 2.4
wrote it), layers tf_keras revived from traced functions, HDF5 under any name, and the kind of a Keras
2.0-2.2 GRU (no `reset_after`) read from its bias."""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from rnnedge.errors import RnnEdgeError


def keras_metadata(path: Path) -> str | None:
    """Where a SavedModel folder keeps its Keras metadata: "keras_metadata.pb" (tf.keras 2.5 and
    later), "saved_model.pb" (TF <= 2.4: the object graph's user objects carry it), None where it
    has none (a plain tf.Module, or `tf.saved_model.save` of a Keras model)."""
    if (path / "keras_metadata.pb").is_file():
        return "keras_metadata.pb"
    return "saved_model.pb" if any(metadata for _, metadata in keras_object_entries(path)) else None


def keras_objects(path: Path) -> bool:
    """Whether a SavedModel's object graph holds Keras objects (tf_keras' identifiers) at all: one
    without metadata is `tf.saved_model.save(keras_model)`."""
    return bool(keras_object_entries(path))


def keras_object_entries(path: Path) -> list[tuple[str, bytes]]:
    """(identifier, metadata) of each Keras object in a SavedModel's object graph."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString((path / "saved_model.pb").read_bytes())
    except Exception:  # noqa: BLE001 - a damaged file: said when TensorFlow loads it
        return []
    if not saved.meta_graphs:
        return []
    nodes = saved.meta_graphs[0].object_graph_def.nodes
    return [(n.user_object.identifier, n.user_object.metadata) for n in nodes
            if n.WhichOneof("kind") == "user_object" and n.user_object.identifier.startswith("_tf_keras_")]


def grus_without_reset_after(config: dict, weights: dict) -> list[str]:
    """The GRU layers (inside Bidirectional too) of a Keras 2 configuration that do not say
    `reset_after` while their bias says False (one row): Keras 2.0-2.2 wrote them, and tf_keras,
    which defaults it to True, refuses their weights."""
    probe = json.loads(json.dumps(config))
    notes: dict = {}
    reset_after_from_weights(probe, weights, notes)
    return [name for name, said in notes.items() if any("reset_after=False" in n for n in said)]


def h5_model(path: Path, only_old_grus: bool = False) -> tuple[dict, dict]:
    """(model configuration, weights by layer name) of an .h5 model file, read with h5py;
    `only_old_grus`: only the weights of layers holding a GRU without reset_after (a large file's
    other weights are not read where tf_keras will load it anyway)."""
    import h5py

    with h5py.File(path, "r") as f:
        config = json.loads(text(f.attrs["model_config"]))
        group = f["model_weights"] if "model_weights" in f else f
        wanted = _old_gru_owners(config) if only_old_grus else None
        weights = {}
        for name in (text(n) for n in group.attrs.get("layer_names", [])):
            if wanted is not None and name not in wanted:
                continue
            layer = group[name]
            weights[name] = [np.asarray(layer[text(w)]) for w in layer.attrs.get("weight_names", [])]
    return config, weights


def _old_gru_owners(config, owner: str | None = None) -> set[str]:
    """The names of the layers (a GRU, or the Bidirectional around it) whose GRU config has no reset_after."""
    found = set()
    if isinstance(config, list):
        for x in config:
            found |= _old_gru_owners(x, owner)
    elif isinstance(config, dict):
        inner = config.get("config")
        if isinstance(inner, dict) and config.get("class_name") == "Bidirectional":
            owner = inner.get("name")
        if isinstance(inner, dict) and config.get("class_name") == "GRU" and "reset_after" not in inner:
            found.add(owner or inner.get("name", "gru"))
        for x in config.values():
            found |= _old_gru_owners(x, owner)
    return found


@contextmanager
def h5_named(path: Path):
    """`path` under a name ending in .h5 (a link in a temporary folder where it has another suffix):
    Keras' loaders choose the format by the name."""
    if path.suffix in (".h5", ".hdf5"):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="rnnedge-h5-") as folder:
        link = Path(folder) / f"{path.stem}.h5"
        link.symlink_to(path.resolve())
        yield link


class RevivedError(RnnEdgeError):
    """A tf_keras SavedModel layer whose class was not supplied: tf_keras revived it from its traced
    functions, which run only on the input shapes they were traced with."""

    def __init__(self, path: Path, layers: list):
        self.layers = layers
        parts = []
        for layer in layers:
            shapes = traced_shapes(layer)
            parts.append(f"'{layer.name}' (class {class_name(layer)!r}, traced for inputs "
                         f"{' or '.join(shapes) or 'of unknown shape'})")
        super().__init__(f"{path}: layer(s) {', '.join(parts)} exist only as traced functions (their class was not "
                         "supplied): pass --custom module.py with the class(es), or export the SavedModel's signature "
                         "at those lengths")


def is_revived(layer) -> bool:
    return type(layer).__module__.endswith("revived_types") or type(layer).__name__.startswith("Revived") \
        or "saved_model.load" in type(layer).__module__


def class_name(layer) -> str:
    """The class a revived layer had when it was saved (its metadata's class_name)."""
    metadata = getattr(layer, "_serialized_attributes", {}).get("metadata") or {}
    return getattr(layer, "_saved_model_class_name", None) or metadata.get("class_name") or type(layer).__name__


def traced_shapes(layer) -> list[str]:
    """The input shapes a revived layer's call was traced with, e.g. ["(None, 12, 3)"]."""
    import tensorflow as tf

    shapes = []
    call = getattr(layer, "call", None)
    functions = getattr(call, "_list_all_concrete_functions", None) or getattr(call, "concrete_functions", None)
    try:
        concrete = functions() if callable(functions) else list(functions or [])
    except Exception:  # noqa: BLE001 - no traces to describe
        concrete = []
    for fn in concrete:
        specs = [s for s in tf.nest.flatten(fn.structured_input_signature) if isinstance(s, tf.TensorSpec)]
        if specs:
            text = str(tuple(specs[0].shape.as_list())).replace(",)", ")")
            if text not in shapes:
                shapes.append(text)
    return shapes


def reset_after_from_weights(config, weights: dict, translated: dict, owner: str | None = None):
    """A GRU configuration without `reset_after` (Keras 2.0-2.2) gets the kind its bias says: one
    bias of 3*units is reset_after=False, two ([2, 3*units]) reset_after=True."""
    if isinstance(config, list):
        for x in config:
            reset_after_from_weights(x, weights, translated, owner)
        return
    if not isinstance(config, dict):
        return
    inner = config.get("config")
    if config.get("class_name") == "GRU" and isinstance(inner, dict) and "reset_after" not in inner:
        name = inner.get("name", "gru")
        stored = weights.get(owner or name) or []
        bias = stored[2] if len(stored) >= 3 else None
        if inner.get("use_bias", True) is False or bias is None:
            inner["reset_after"] = False  # no bias to tell: the Keras 2.0-2.2 default
        else:
            inner["reset_after"] = bool(np.ndim(bias) == 2)
        translated.setdefault(name, []).append(f"no reset_after (Keras 2.0-2.2) -> reset_after={inner['reset_after']} "
                                               "from its bias shape" + ("" if bias is None else f" {np.shape(bias)}"))
    if config.get("class_name") == "Bidirectional" and isinstance(inner, dict):
        owner = inner.get("name")
    for value in config.values():
        reset_after_from_weights(value, weights, translated, owner)


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
