"""Where an export starts: the Keras model from an object, a .keras / .h5 file (safe_mode on unless
asked), a SavedModel folder or zoo:NAME, its fingerprint, who computes the truth, and the versions
of the libraries involved. Keras 2 models are rebuilt in Keras 3 (`keras2`); subclassed Keras 3
models are traced into a functional graph."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import keras
import numpy as np

from rnnedge.errors import RnnEdgeError, first_line
from rnnedge.exporter.load import keras2
from rnnedge.exporter.load.keras2_files import keras_objects
from rnnedge.exporter.load.keras_api import call_parameters, graph_nodes, has_graph, sublayers
from rnnedge.files import digest
from rnnedge.preflight import is_hdf5, keras_file
from rnnedge.tables import VERSION as __version__


@dataclass(frozen=True)
class Source:
    """The Keras 3 model to convert, and the model whose outputs are the truth (often the same)."""

    model: keras.Model
    name: str
    sha256: str
    entry: object | None = None  # a zoo entry
    truth: object | None = None  # the model as given where `model` translates it (tf_keras; layers opened)
    origin: dict = field(default_factory=dict)  # {"format", "truth": {"framework", "version"}, "translated"}
    whole_graph: bool = False  # a plain tf.Module's signature (tfgraph): tf2onnx converts all of it


def load_keras(source, *, unsafe: bool = False, allow_loop: bool = False, custom=None):
    """(keras.Model, description, sha256, zoo entry or None) from a model, a path, `zoo:NAME`
    or a loaded `rnnedge.zoo.ZooModel`."""
    found = load_source(source, unsafe=unsafe, allow_loop=allow_loop, custom=custom)
    return found.model, found.name, found.sha256, found.entry


def load_source(source, *, unsafe: bool = False, allow_loop: bool = False, custom=None) -> Source:
    """The Source of an export from a Keras 3 or tf_keras model object, a .keras / .h5 file (HDF5
    under any name), a SavedModel folder, `zoo:NAME` or a loaded `rnnedge.zoo.ZooModel`. A SavedModel
    without Keras metadata is taken as its signature's graph (tfgraph; the export refuses the Loops
    tf2onnx leaves in it unless `allow_loop`). `custom`: the user's classes for loading (a module, its
    path or dotted name, or a list of classes; custom.py)."""
    from rnnedge.exporter.load.custom import custom_objects

    custom = custom_objects(custom)
    keras3 = {"format": "keras3", "truth": {"framework": "keras", "version": keras.__version__}}
    if isinstance(source, keras.Model):
        if has_graph(source):
            return _open(Source(source, source.name, _weights_sha256(source), origin=keras3), source, allow_loop)
        traced = trace(source)
        return _open(Source(traced, source.name, _weights_sha256(traced), origin={**keras3, "format": "subclassed"}),
                     source, allow_loop)
    if keras2.is_tf_keras_model(source):
        try:
            return _rebuilt(keras2.from_object(source, custom=custom), source.name, None)
        except keras2.CustomLayerError as e:
            return _object_signature(e.model, _custom_kind(e), "tf_keras object")
        except keras2.SubclassedError as e:
            if allow_loop:
                return _object_signature(source)
            raise RnnEdgeError(f"{e}; or pass allow_loop=True to convert it whole with tf2onnx (through a "
                               "SavedModel of it; recurrent layers may stay Loops)") from None
    if hasattr(source, "model") and hasattr(source, "x_test"):  # a ZooModel
        return Source(source.model, f"zoo:{source.name}", _weights_sha256(source.model), source, origin=keras3)
    text = str(source)
    if text.startswith("zoo:"):
        from rnnedge import zoo

        entry = zoo.load(text[4:])
        return Source(entry.model, text, _weights_sha256(entry.model), entry, origin=keras3)
    path = keras_file(text)  # missing, empty, or not a .keras/.h5 file or SavedModel: one line, before Keras reads it
    if keras2.is_savedmodel(path) and not keras2.has_keras_metadata(path):
        kind = "tf.saved_model.save of a Keras model" if keras_objects(path) else "tf.Module"
        return _signature(path, kind)  # exported where tf2onnx's graph of it has no Loop, or with allow_loop
    if keras2.is_savedmodel(path):
        try:
            return _rebuilt(keras2.from_savedmodel(path, custom), str(path), None)
        except keras2.RevivedError as e:  # converted from its traced functions, or refused naming their shapes
            return _revived_signature(path, e)
        except keras2.CustomLayerError as e:  # the user's tf_keras classes: its signature, traced with them
            return _signature(path, _custom_kind(e))
        except keras2.SubclassedError as e:
            if allow_loop:
                return _signature(path, "subclassed tf_keras model")
            raise RnnEdgeError(f"{e}; or pass --allow-loop to convert the SavedModel's signature whole with "
                               "tf2onnx (recurrent layers stay Loops)") from None
    hdf5 = is_hdf5(path)
    if hdf5:
        version = keras2.h5_keras_version(path)
        if version is None and not keras2.h5_has_weights(path):
            raise RnnEdgeError(f"{path} is an HDF5 file with neither a model configuration nor weights (no "
                               "'model_config' attribute): not a Keras model; save the model with model.save")
        if version is None:
            raise RnnEdgeError(f"{path} holds weights only (no model configuration): build the model in code, "
                               f"call model.load_weights('{path.name}'), and export the model object "
                               "(rnnedge.export(model, out))")
        if not version.startswith("3."):
            try:
                return _rebuilt(keras2.from_h5(path, custom), str(path), _file_sha256(path))
            except keras2.CustomLayerError as e:  # the user's tf_keras classes: a signature of the loaded model
                found = _object_signature(e.model, _custom_kind(e), "h5")
                return dataclasses.replace(found, name=str(path), sha256=_file_sha256(path))
    objects = {**_operations(), **keras2.only(custom, keras.layers.Layer)}
    try:
        with keras2.h5_named(path) if hdf5 else contextlib.nullcontext(path) as named:
            model = keras.models.load_model(named, compile=False, safe_mode=not unsafe, custom_objects=objects)
    except Exception as e:  # Keras raises many types for a bad file; all mean "not loadable"
        if "safe_mode" in str(e) or "Lambda" in str(e):
            raise RnnEdgeError(
                f"{path} holds a Lambda layer, which can run arbitrary code when loaded; "
                "pass --unsafe only if you trust the file"
            ) from None
        keras2.unknown_layer(e, path)
        raise RnnEdgeError(f"{path} is not a loadable Keras model ({first_line(e)})") from None
    if not isinstance(model, keras.Model):
        raise RnnEdgeError(f"{path} does not hold a keras.Model")
    origin = {**keras3, "format": "h5" if hdf5 else path.suffix.lstrip(".")}
    if has_graph(model):
        return _open(Source(model, str(path), _file_sha256(path), origin=origin), model, allow_loop)
    traced = trace(model)  # a subclassed model saved whole: its call() traced as for the object
    return _open(Source(traced, str(path), _file_sha256(path), origin={**origin, "format": f"{path.suffix[1:]} "
                                                                       "(subclassed)"}), model, allow_loop)


def _signature(path: Path, kind: str) -> Source:
    """A SavedModel's serving signature as the model (tfgraph): tf2onnx converts it whole."""
    from rnnedge.exporter.load import tfgraph

    model = tfgraph.signature_model(path)
    return Source(model, str(path), _folder_sha256(path), origin=tfgraph.origin(model, kind), whole_graph=True)


def _revived_signature(path: Path, error: RnnEdgeError) -> Source:
    """A tf_keras SavedModel with layers revived from traced functions (their class not supplied):
    its serving signature, which calls those functions at the shapes they were traced with; refused
    with `error` (naming the shapes) where it has none."""
    layers = ", ".join(f"'{layer.name}'" for layer in error.layers)
    try:
        return _signature(path, f"tf_keras model whose layer(s) {layers} were revived from traced functions")
    except RnnEdgeError:
        raise error from None


def _custom_kind(error) -> str:
    return f"tf_keras model with --custom layer(s) {', '.join(repr(layer.name) for layer in error.layers)}"


def _object_signature(model, kind: str = "subclassed tf_keras model",
                      fmt: str = "tf_keras object (subclassed)") -> Source:
    """A subclassed tf_keras model object (or one of the user's tf_keras classes) through a
    SavedModel of it (tf_keras writes the serving signature of the shapes it was called with), then
    as `_signature`."""
    import tempfile

    from rnnedge.logs import quiet_native_stderr

    with tempfile.TemporaryDirectory(prefix="rnnedge-tf-keras-") as folder:
        path = Path(folder) / model.name
        try:
            with quiet_native_stderr():
                model.save(str(path), save_format="tf")
        except Exception as e:  # tf_keras cannot save a model it has never run
            raise RnnEdgeError(f"model '{model.name}' ({type(model).__name__}): tf_keras could not save it as a "
                               f"SavedModel ({first_line(e)}); call it once on a batch and export again") from None
        found = _signature(path, kind)  # its variables are read into memory here
    origin = {**found.origin, "format": f"{fmt} ({kind})" if "subclassed" not in kind else fmt}
    return dataclasses.replace(found, name=model.name, origin=origin)


def _open(found: Source, given, allow_loop: bool) -> Source:
    """`found` with the custom layers that run recurrent layers in their own call opened
    (inline.py); the model as `given` computes the truth. Where a layer's call() cannot be traced,
    `allow_loop` leaves the model as it is (for tf2onnx's graph); otherwise that is one line."""
    from rnnedge.exporter.load import inline

    layers = inline.wrapping_layers(found.model)
    if not layers:
        return found
    try:
        model = inline.opened_graph(found.model, layers)
    except Exception as e:  # the layer's own call() on symbolic tensors
        if allow_loop:
            return found
        names = ", ".join(f"'{layer.name}' ({type(layer).__name__})" for layer in layers)
        if "NoneType" in str(e):  # ops.zeros((ops.shape(x)[0], n)): the batch size is unknown in a graph
            advice = ("it uses a size unknown while tracing (the batch, ops.shape(x)[0]); derive such tensors from "
                      "the input instead (ops.zeros_like(x[:, 0, :1]) + h0), or pass --allow-loop to export it "
                      "unfused")
        else:
            advice = ("use keras layers and keras.ops in call() (keras.ops.cond or keras.ops.where for a branch "
                      "on a tensor's value)")
        raise RnnEdgeError(f"layer(s) {names} run recurrent layers inside their own call, which could not be traced "
                           f"into the graph ({first_line(e)}); {advice}") from None
    return dataclasses.replace(found, model=model, truth=given,
                               origin={**found.origin, "opened": inline.described(layers)})


def _rebuilt(rebuilt: keras2.Rebuilt, name: str, sha256: str | None) -> Source:
    return Source(rebuilt.model, name, sha256 or _weights_sha256(rebuilt.model), truth=rebuilt.truth,
                  origin=rebuilt.origin())


def _file_sha256(path: Path) -> str:
    return digest(path)["sha256"]


def _folder_sha256(path: Path) -> str:
    """Every file of a folder, by relative path and content digest, in path order."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{_file_sha256(f)}\n".encode())
    return h.hexdigest()




def _operations() -> dict:
    """Keras operations a Keras 3 legacy .h5 stores as layers of its graph (the mask of
    Embedding(mask_zero=True) is `NotEqual`), which its loader does not look up by itself."""
    from rnnedge.exporter.load.keras_api import ops_classes

    return {name: getattr(ops_classes, name) for name in ("NotEqual", "Equal", "Any", "All", "Cast")
            if hasattr(ops_classes, name)}


def trace(model) -> keras.Model:
    """A subclassed Keras 3 model as a functional one: its call() run on symbolic inputs shaped
    as it was built (a free time axis where call() allows one), sharing its layers and weights."""
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    stateful = [layer.name for layer in sublayers(model) if getattr(layer, "stateful", False)]
    if not shapes and stateful:  # its state variables are made at the first real call, so Keras built it eagerly
        raise RnnEdgeError(f"model '{model.name}' ({type(model).__name__}): its stateful layer(s) "
                           f"{', '.join(stateful)} create their states at the first call, so Keras could not "
                           "trace call() into a graph; build the model with the functional API "
                           "(keras.Input(batch_shape=...)) to export it")
    if not model.built:
        raise RnnEdgeError(f"model '{model.name}' ({type(model).__name__}) is a subclassed model that has not been "
                           "called yet: call it once on a batch (model(x)) and export again")
    if not shapes:  # Keras tried call() on symbolic inputs at the first call, failed, and ran it eagerly
        raise RnnEdgeError(f"model '{model.name}' ({type(model).__name__}): its call() cannot be traced on symbolic "
                           "inputs (Keras could not either when it was first called), typically because it branches "
                           "in Python on a tensor's value; use keras.ops.cond or keras.ops.where, or move the branch "
                           "out of call()")
    if len(shapes) != 1:
        raise RnnEdgeError(f"model '{model.name}' ({type(model).__name__}): its call() takes {len(shapes)} tensor "
                           "arguments; rnnedge traces a call() of one argument (a tensor or a list of tensors)")
    shape = next(iter(shapes.values()))
    nested = isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple))
    shapes = list(shape) if nested else [shape]
    error = None
    for free_time in (True, False):
        try:
            traced = _traced_call(model, shapes, nested, free_time)
            tokens = _token_inputs(_opened_or_not(traced))
            if tokens:  # what Embeddings read are token ids: int32, with a free time axis
                traced = _traced_call(model, shapes, nested, free_time, tokens)
        except Exception as e:  # the user's call() on symbolic tensors
            error = e
            if _branches(e):
                break
            continue
        own = {id(v) for v in model.weights}
        if any(id(v) not in own for v in traced.weights):
            raise RnnEdgeError(f"model '{model.name}' ({type(model).__name__}): its call() creates layers as it runs, "
                               "so a traced graph would not hold its weights; create the layers in __init__")
        return traced
    if _branches(error):
        raise RnnEdgeError(f"model '{model.name}' ({type(model).__name__}): its call() branches in Python on a "
                           "tensor's value, which cannot be traced into a graph; use keras.ops.cond or "
                           "keras.ops.where, or move the branch out of call()") from None
    raise RnnEdgeError(f"model '{model.name}' ({type(model).__name__}): its call() cannot be traced on symbolic "
                       f"inputs ({first_line(error)}); use keras layers and keras.ops in call()") from None


def _traced_call(model, shapes: list, nested: bool, free_time: bool, tokens=frozenset()) -> keras.Model:
    """keras.Model(inputs, model.call(inputs)) on symbolic inputs of the built shapes (batch free;
    the time axis free too where asked, for sequences of features or of tokens)."""
    inputs = []
    argument = (call_parameters(model) or ["inputs"])[0]  # the export's input names: call()'s argument's
    for k, shape in enumerate(shapes):
        free = free_time and (len(shape) >= 3 or k in tokens)
        inputs.append(keras.Input(shape=tuple(None if free and i == 0 else d for i, d in enumerate(shape[1:])),
                                  dtype="int32" if k in tokens else None,
                                  name=f"{argument}_{k}" if nested else argument))
    outputs = model.call(inputs if nested else inputs[0])
    return keras.Model(inputs if nested else inputs[0], outputs, name=model.name)


def _opened_or_not(traced) -> keras.Model:
    """The traced graph with custom layers opened where they can be, so that an Embedding inside one
    (a nested encoder model) is seen reading its input."""
    from rnnedge.exporter.load import inline

    layers = inline.wrapping_layers(traced)
    if not layers:
        return traced
    try:
        return inline.opened_graph(traced, layers)
    except Exception:  # noqa: BLE001 - a call() that cannot be opened: said when the export opens it
        return traced


def _token_inputs(traced) -> frozenset:
    """The inputs every reader of which is an Embedding (or the `NotEqual` of its zero mask)."""
    readers: dict[int, list] = {}
    for node in graph_nodes(traced):
        if node.operation is not None and not node.is_input:
            for t in node.arguments.keras_tensors:
                readers.setdefault(id(t), []).append(node.operation)
    return frozenset(k for k, t in enumerate(traced.inputs)
                     if readers.get(id(t))
                     and all(isinstance(r, keras.layers.Embedding) or type(r).__name__ == "NotEqual"
                             for r in readers[id(t)]))


def _branches(error: Exception) -> bool:
    """Python control flow on a symbolic tensor's value (`if x > 0:`, `while`, `bool(x)`)."""
    return isinstance(error, TypeError) and "bool" in str(error).lower() or "symbolic" in str(error).lower() \
        and "boolean" in str(error).lower()


def _weights_sha256(model) -> str:
    h = hashlib.sha256(model.to_json().encode())
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def versions() -> dict[str, str]:
    found = {"rnnedge": __version__}
    for pkg in ("keras", "tf-keras", "tensorflow", "tensorflow-cpu", "tf2onnx", "onnx", "onnxruntime",
                "onnxruntime-gpu", "numpy"):
        try:
            found[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return found
