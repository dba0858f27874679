"""Keras 2 models (tf.keras 2 `.h5` files, SavedModel folders, tf_keras objects) rebuilt as Keras 3
models: the configuration translated layer by layer, the weights copied by layer name. Where
tf_keras is installed the original model is kept as the truth the export is checked against, so
parity proves the translation as well as the ONNX file."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import keras
import numpy as np

from rnnedge.errors import RnnEdgeError, first_line
from rnnedge.exporter.convert import recurrent_names
from rnnedge.exporter.load.keras2_files import (
    RevivedError,
    grus_without_reset_after,
    h5_model,
    h5_named,
    is_revived,
    keras_metadata,
    reset_after_from_weights,
)
from rnnedge.exporter.load.keras2_fit import fit_arguments, is_layer, renumber_nested_calls
from rnnedge.exporter.load.keras_api import standard_kernel_only

INSTALL = "pip install 'rnnedge[export,keras2]'"
# Keras 2 arguments Keras 3 no longer takes, with the values that leave the computation unchanged
# (None: any value). A value outside them has no Keras 3 equivalent and is refused.
DROPPED = {
    "time_major": (False,),
    "implementation": None,  # how the gates are batched into matrix products: the same arithmetic
    "input_length": None,  # Embedding: a shape hint only
    "ragged": (False,),
}


ACTIVATION_ARGS = ("activation", "recurrent_activation")


@keras.saving.register_keras_serializable(package="rnnedge")  # global: a thread's custom object scope is not
def keras2_hard_sigmoid(x):
    """tf.keras 2's hard_sigmoid, clip(0.2 x + 0.5, 0, 1). Keras 3's hard_sigmoid is another
    function (clip(x / 6 + 0.5, 0, 1)), so a Keras 2 configuration naming it is rebuilt with this
    one; its name is the converter's key (ONNX HardSigmoid with alpha 0.2, beta 0.5)."""
    return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)


class SubclassedError(RnnEdgeError):
    """A subclassed tf_keras model: no configuration to rebuild it from."""


@dataclass(frozen=True)
class Rebuilt:
    """A Keras 3 model equivalent to a Keras 2 one, and what it took."""

    model: keras.Model
    truth: object | None  # the tf_keras model that computes the golden outputs; None: the rebuild does
    source_format: str  # "h5", "savedmodel" or "tf_keras object"
    translated: dict[str, list[str]] = field(default_factory=dict)  # layer -> what was changed
    why_rebuild: str = "tf_keras not installed"  # why the rebuild computes the truth (truth None)

    def origin(self) -> dict:
        """The manifest's record of where the model came from and who computed the truth."""
        if self.truth is not None:
            truth = {"framework": "tf_keras", "version": _version("tf-keras") or _version("tf_keras")}
        else:
            truth = {"framework": "keras", "version": keras.__version__, "rebuild": self.why_rebuild,
                     "note": f"{self.why_rebuild}: parity is against rnnedge's Keras 3 rebuild "
                             "of the stored configuration"}
        return {"format": self.source_format, "truth": truth, "translated": self.translated}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def has_tf_keras() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("tf_keras") is not None
    except (ImportError, ValueError):
        return False


def is_tf_keras_model(obj) -> bool:
    """A tf_keras (Keras 2) model object, recognised without importing tf_keras."""
    return any(c.__module__.split(".")[0] in ("tf_keras", "tf_keras_src") and c.__name__ == "Model"
               for c in type(obj).__mro__)


def h5_keras_version(path: Path) -> str | None:
    """The Keras version that wrote an .h5 model file; None for a file of weights only."""
    import h5py

    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs:
            return None
        version = f.attrs.get("keras_version", b"")
        return version.decode() if isinstance(version, bytes) else str(version)


def h5_has_weights(path: Path) -> bool:
    """Whether an HDF5 file holds Keras weights (layer names, at its root or under model_weights)."""
    import h5py

    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        return "layer_names" in group.attrs or "weight_names" in group.attrs or len(group) > 0


def is_savedmodel(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def has_keras_metadata(path: Path) -> bool:
    """A SavedModel folder written by tf.keras (model.save), not a plain tf.Module."""
    return keras_metadata(path) is not None


def from_object(model, source_format: str = "tf_keras object", custom: dict | None = None) -> Rebuilt:
    """Rebuild a tf_keras model object; it stays the truth."""
    if type(model).__name__ not in ("Functional", "Sequential", "Model") or not hasattr(model, "_is_graph_network") \
            or not model._is_graph_network:
        raise SubclassedError(f"model '{model.name}' ({type(model).__name__}) is a subclassed tf_keras model: "
                              "expected a Sequential or functional tf_keras model; rebuild it as a Keras 3 model "
                              "(subclassed Keras 3 models export) or build it with the functional API")
    kind = "Sequential" if type(model).__name__ == "Sequential" else "Functional"
    config = {"class_name": kind, "config": model.get_config()}
    weights = {}
    for layer in _all_layers(model):
        weights.setdefault(layer.name, [np.asarray(w) for w in layer.get_weights()])
    try:
        rebuilt, translated = rebuild(config, weights, model.name, custom)
    except RnnEdgeError:
        mine = {id(c) for c in (custom or {}).values()}
        user = [layer for layer in _all_layers(model) if id(type(layer)) in mine]
        if user:  # tf_keras classes the user supplied, which Keras 3 cannot rebuild
            raise CustomLayerError(model, user) from None
        raise
    return Rebuilt(rebuilt, model, source_format, translated)


class CustomLayerError(RnnEdgeError):
    """A tf_keras model holding layers of the user's own (tf_keras) classes: tf_keras loaded it with
    them, but it has no Keras 3 rebuild; it is exported from a traced signature of it instead."""

    def __init__(self, model, layers: list):
        self.model, self.layers = model, layers
        names = ", ".join(f"'{layer.name}' ({type(layer).__name__})" for layer in layers)
        super().__init__(f"model '{model.name}': layer(s) {names} are tf_keras classes from --custom, which have "
                         "no Keras 3 rebuild")


def from_h5(path: Path, custom: dict | None = None) -> Rebuilt:
    """A Keras 2 .h5 file (HDF5 under any name): loaded by tf_keras where installed (the truth),
    else its stored configuration and weights read with h5py and rebuilt in Keras 3. A Keras
    2.0-2.2 GRU (no `reset_after`, which tf_keras refuses) is rebuilt too, the truth then the rebuild."""
    config, weights = h5_model(path, only_old_grus=True)
    old_grus = grus_without_reset_after(config, weights)
    if has_tf_keras() and not old_grus:
        import tf_keras

        objects = {**_standard_kernels(), **only(custom, tf_keras.layers.Layer)}
        with h5_named(path) as named:
            model = _load(lambda: tf_keras.models.load_model(named, compile=False, custom_objects=objects), path)
        return from_object(model, "h5", custom)
    why = "tf_keras not installed"
    if old_grus:
        why = (f"tf_keras cannot load a Keras 2.0-2.2 GRU without reset_after ({', '.join(old_grus)}); "
               "its kind is read from its bias shape")
    config, weights = h5_model(path)
    rebuilt, translated = rebuild(config, weights, path.name, custom)
    return Rebuilt(rebuilt, None, "h5", translated, why)


def from_savedmodel(path: Path, custom: dict | None = None) -> Rebuilt:
    """A SavedModel folder written by tf.keras 2: tf_keras restores its layers from its Keras
    metadata (keras_metadata.pb, or saved_model.pb's object graph for TF <= 2.4)."""
    where = keras_metadata(path)
    if where is None:
        raise RnnEdgeError(f"{path} is a SavedModel without Keras metadata (a plain tf.Module, or "
                           "tf.saved_model.save of a Keras model): no Keras layers to rebuild; export its signature "
                           "(pass --allow-loop where tf2onnx's graph of it has Loops), or export the Keras model it "
                           "came from")
    if not has_tf_keras():
        raise RnnEdgeError(f"{path} is a Keras 2 SavedModel folder: reading it needs tf_keras: {INSTALL}")
    import tf_keras

    from rnnedge.logs import quiet_native_stderr

    objects = {**_standard_kernels(), **only(custom, tf_keras.layers.Layer)}
    with quiet_native_stderr():
        model = _load(lambda: tf_keras.models.load_model(path, compile=False, custom_objects=objects), path)
    if not hasattr(model, "layers"):  # tf_keras found no Keras object in it: the core loader's result
        raise RnnEdgeError(f"{path}: its Keras metadata describes no Keras model")
    revived = [layer for layer in _all_layers(model) if is_revived(layer)]
    if revived:
        raise RevivedError(path, revived)
    fmt = "savedmodel" if where == "keras_metadata.pb" else "savedmodel (TF <= 2.4: Keras metadata in saved_model.pb)"
    return from_object(model, fmt, custom)


def only(custom: dict | None, base) -> dict:
    """The user's custom objects (`--custom`) of one framework: classes derived from `base`
    (tf_keras' or Keras 3's Layer), and plain functions (activations) for both."""
    return {name: obj for name, obj in (custom or {}).items()
            if not isinstance(obj, type) or issubclass(obj, base)}


def _standard_kernels() -> dict:
    """tf_keras' LSTM and GRU, built to run their standard kernel directly. As written, each
    registers a cuDNN-or-standard selection function (with its gradients) when it is built, about
    0.5 s a layer and most of a Keras 2 file's load time; on a CPU that selection runs the same
    standard kernel. The layers keep their class names, configurations and weights."""
    import tf_keras

    def standard(base):
        def __init__(self, *args, **kwargs):
            base.__init__(self, *args, **kwargs)
            standard_kernel_only(self)

        return type(base.__name__, (base,), {"__init__": __init__, "__module__": base.__module__,
                                             "__qualname__": base.__qualname__})

    return {name: standard(getattr(tf_keras.layers, name)) for name in _STANDARD}


_STANDARD = ("LSTM", "GRU")


def _load(fn, path):
    try:
        return fn()
    except Exception as e:  # tf_keras raises many types for a file it cannot read
        unknown_layer(e, path)
        raise RnnEdgeError(f"{path} is not a loadable tf_keras model ({first_line(e)})") from None


def unknown_layer(e: Exception, what) -> None:
    """One line naming a layer class that neither Keras 3 nor tf_keras knows (a custom layer)."""
    found = re.search(r"(?:Unknown layer|Could not locate class):? '([^']+)'", str(e))
    if found:
        name = found.group(1)
        raise RnnEdgeError(f"{what}: layer class {name!r} is known to neither Keras nor rnnedge (a custom layer?); "
                           "pass --custom module.py (or a dotted module path) defining it (Python: "
                           "export(..., custom=...)), or build the model in code and export the object") from None


def _rebuild_reason(e: Exception) -> str:
    """Keras wraps a layer's failure in its model's ("could not be deserialized properly ...
    Exception encountered: ..."): the innermost cause, with the class it was building."""
    text = str(e)
    classes = re.findall(r"deserializing class '(\w+)'", text)
    inner = text.rsplit("Exception encountered:", 1)[-1].strip() if "Exception encountered:" in text else text
    reason = first_line(type(e)(inner) if inner else e)
    return f"layer class {classes[-1]}: {reason}" if classes else reason


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _all_layers(model) -> list:
    found = []
    for layer in model.layers:
        found.append(layer)
        if hasattr(layer, "layers") and not hasattr(layer, "layer"):
            found.extend(_all_layers(layer))
    return found


def rebuild(config: dict, weights: dict[str, list[np.ndarray]], what: str,
            custom: dict | None = None) -> tuple[keras.Model, dict]:
    """A Keras 3 model from a Keras 2 model configuration and weights by layer name."""
    translated: dict[str, list[str]] = {}
    config = _translate(json.loads(json.dumps(config)), translated)
    reset_after_from_weights(config, weights, translated)
    try:
        model = keras.models.model_from_json(json.dumps(config), custom_objects=only(custom, keras.layers.Layer))
    except Exception as e:  # Keras raises many types for a configuration it cannot build
        unknown_layer(e, what)
        raise RnnEdgeError(f"{what}: its Keras 2 configuration does not rebuild in Keras 3 "
                           f"({_rebuild_reason(e)})") from None
    for layer in _all_layers(model):
        stored = weights.get(layer.name)
        if stored is None or not layer.weights:
            continue
        try:
            layer.set_weights(stored)
        except ValueError as e:
            raise RnnEdgeError(f"{what}: layer '{layer.name}' weights do not fit its Keras 3 rebuild "
                               f"({first_line(e)})") from None
    return model, translated


def _translate(obj, translated: dict):
    """Walk a Keras 2 configuration and change, in place, what Keras 3 reads differently."""
    if isinstance(obj, list):
        return [_translate(x, translated) for x in obj]
    if not isinstance(obj, dict):
        return obj
    for key, value in obj.items():
        obj[key] = _translate(value, translated)
    config = obj.get("config")
    if "class_name" not in obj or not isinstance(config, dict):
        return obj
    name = config.get("name", obj.get("class_name"))
    if obj["class_name"] in _STANDARD and obj.get("registered_name") == obj["class_name"]:
        obj["module"], obj["registered_name"] = "keras.layers", None  # our _standard_kernels classes
    elif "module" not in obj and is_layer(obj):
        obj["module"] = "keras.layers"  # a legacy nested entry (Bidirectional's backward_layer, a cell)
    obj.pop("build_config", None)  # Keras 2's input shapes (states included); the graph builds every layer
    notes = []
    for arg, harmless in DROPPED.items():
        if arg not in config:
            continue
        value = config.pop(arg)
        if harmless is not None and value not in harmless:
            raise RnnEdgeError(f"layer '{name}': Keras 2 argument {arg}={value!r} has no Keras 3 equivalent; "
                               f"rebuild the model without it (e.g. transpose the inputs instead of time_major)")
        notes.append(f"dropped {arg}={value!r}")
    for arg in ACTIVATION_ARGS:
        value = config.get(arg)
        if value == "hard_sigmoid" or isinstance(value, dict) and value.get("config") == "hard_sigmoid":
            config[arg] = {"class_name": "function", "config": "rnnedge>keras2_hard_sigmoid", "module": None,
                           "registered_name": "rnnedge>keras2_hard_sigmoid"}  # a string names only Keras' own
            notes.append(f"{arg} hard_sigmoid -> Keras 2's clip(0.2x + 0.5) (Keras 3's is clip(x/6 + 0.5))")
    if is_layer(obj):
        notes += fit_arguments(obj["class_name"], name, config)
    if "batch_input_shape" in config:
        shape = config.pop("batch_input_shape")
        if obj["class_name"] == "InputLayer":
            config["batch_shape"] = shape
            notes.append("batch_input_shape -> batch_shape")
        else:
            obj["_batch_shape"] = shape  # the Sequential above turns it into an InputLayer
    for arg in ("input_shape", "input_dim"):
        if arg in config and obj["class_name"] != "InputLayer" and not _takes(obj["class_name"], arg):
            value = config.pop(arg)
            obj["_batch_shape"] = [None, *(value if arg == "input_shape" else [value])]
    if obj["class_name"] == "Sequential":
        _input_layer(config, notes)
        obj["module"] = keras.Sequential.__module__
    elif obj["class_name"] in ("Functional", "Model"):  # Keras 3 finds models by module
        obj["class_name"], obj["module"] = "Model", keras.Model.__module__
    if obj["class_name"] in ("Sequential", "Model"):
        _token_inputs(config.get("layers", []), obj["class_name"] == "Sequential", translated)
    if obj["class_name"] == "Model":
        renumber_nested_calls(config, notes)
    for layer in config.get("layers", []) if isinstance(config.get("layers"), list) else []:
        layer.pop("_batch_shape", None)  # a functional model's InputLayers say it already
    if obj["class_name"] in recurrent_names() and obj.get("inbound_nodes"):
        obj["inbound_nodes"] = [_state_node(node, notes) for node in obj["inbound_nodes"]]
    if notes:
        translated.setdefault(name, []).extend(notes)
    return obj


def _takes(class_name: str, arg: str) -> bool:
    """Whether the Keras 3 layer of that name has an argument of its own called `arg` (Embedding's input_dim)."""
    import inspect

    cls = getattr(keras.layers, class_name, None)
    return cls is not None and arg in inspect.signature(cls.__init__).parameters


def _input_layer(config: dict, notes: list):
    """A Keras 2 Sequential names its input shape on its first layer: Keras 3 wants an InputLayer."""
    layers = config.get("layers", [])
    for layer in layers:
        shape = layer.pop("_batch_shape", None)
        if shape is None:
            continue
        if layer is layers[0]:
            dtype = layer["config"].get("dtype")
            layers.insert(0, {"class_name": "InputLayer", "config": {
                "batch_shape": shape, **({"dtype": dtype} if isinstance(dtype, str) else {}),
                "name": f"{layer['config'].get('name', 'input')}_input"}})
            notes.append(f"input shape {shape} of layer '{layer['config'].get('name')}' -> InputLayer")
        break


def _token_inputs(layers: list, sequential: bool, translated: dict):
    """Keras 2 gives an Embedding's model input the float32 dtype; its values are token ids, so the
    rebuild (and the export) takes int32 where every reader of the input is an Embedding."""
    for i, layer in enumerate(layers):
        config = layer.get("config", {})
        if layer.get("class_name") != "InputLayer" or config.get("dtype") not in ("float32", None):
            continue
        if sequential:
            readers = layers[i + 1:i + 2]
        else:
            readers = [other for other in layers if any(
                entry[0] == config.get("name") for node in other.get("inbound_nodes", []) if isinstance(node, list)
                for entry in node)]
        if readers and all(r.get("class_name") == "Embedding" for r in readers):
            config["dtype"] = "int32"
            translated.setdefault(config.get("name", "input"), []).append("dtype float32 -> int32 (token ids)")


def _state_node(node, notes: list):
    """Keras 2 stores a recurrent layer's `initial_state` as extra inbound tensors of its call;
    Keras 3 takes it as the `initial_state` argument."""
    if not isinstance(node, list) or len(node) < 2:
        return node
    tensors = [{"class_name": "__keras_tensor__",
                "config": {"shape": [], "dtype": "float32", "keras_history": list(entry[:3])}} for entry in node]
    kwargs = dict(node[0][3]) if len(node[0]) > 3 else {}
    kwargs["initial_state"] = tensors[1:]
    notes.append(f"{len(node) - 1} extra inbound tensor(s) -> initial_state")
    return {"args": [tensors[0]], "kwargs": kwargs}
