"""The TensorFlow.js baseline: the export's Keras model rebuilt in tf_keras (a chain of layers with
Keras 3's weights) and converted by the `tensorflowjs` converter into a layers model the page loads.

The converter pins an older TensorFlow and protobuf and imports tensorflow_decision_forests and jax,
which the Keras path never uses: it is installed without its dependencies, and it runs here in a
subprocess (`python -m rnnedge.web.tfjs`) whose sys.path gets an empty tensorflow_decision_forests
and whose jax conversion module is a stand-in; the shared environment is left as it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from rnnedge.errors import RnnEdgeError

CONVERTER_HINT = ("pip install --no-deps tensorflowjs==4.22.0 tensorflow-hub==0.16.1 (`make install` does it; "
                  "--no-deps: its pins would replace TensorFlow and protobuf)")


def convert(source: str, out: Path, inputs: dict[str, np.ndarray]) -> dict:
    """Convert `source` (a Keras model file or zoo:NAME) into a TF.js layers model at `out`, and run
    Keras on `inputs` there: {"ok": bool, "why": str, "keras": {output: array}} (why: the reason
    TF.js gets no model, e.g. a multi-input model)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "inputs.npz", **inputs)
    with tempfile.TemporaryDirectory(prefix="rnnedge-tfjs-") as stub:
        (Path(stub) / "tensorflow_decision_forests").mkdir()
        (Path(stub) / "tensorflow_decision_forests" / "__init__.py").write_text("")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
            stub, str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")])),
            "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run([sys.executable, "-m", "rnnedge.web.tfjs", source, str(out)], env=env,
                              capture_output=True, text=True, timeout=900)
    result = out / "result.json"
    info = json.loads(result.read_text()) if result.is_file() else {}
    if info.get("missing"):
        raise RnnEdgeError(f"the tensorflowjs converter is not installed ({info['missing']}): {CONVERTER_HINT}")
    if not info.get("ok") and not info.get("why"):  # it stopped on an error of its own: its last line
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        raise RnnEdgeError(f"the TensorFlow.js conversion of {source} failed: {tail[0][:300]}")
    keras = {}
    if (out / "keras.npz").is_file():
        with np.load(out / "keras.npz") as z:
            keras = {k: z[k] for k in z.files}
    return {**info, "keras": keras}


# -- in the subprocess ---------------------------------------------------------------------------

_DROP = {"module", "registered_name", "build_config", "shared_object_id", "compile_config", "optional"}


def _clean(value):
    """A Keras 3 layer config as tf_keras reads it: dtype policies as their names, no Keras 3 keys."""
    if isinstance(value, dict):
        if value.get("class_name") == "DTypePolicy":
            return value["config"]["name"]
        # initializers only matter before weights are set (they are, from Keras 3's): tf_keras' defaults
        return {k: "zeros" if k.endswith("_initializer") else _clean(v) for k, v in value.items() if k not in _DROP}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _chain(model) -> list:
    """The model's layers as a chain (each takes the one before's output), or RnnEdgeError."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise RnnEdgeError(f"the source has {len(model.inputs)} inputs and {len(model.outputs)} outputs: rnnedge "
                           "rebuilds single-input chains of layers for TF.js")
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    if type(model).__name__ == "Sequential":
        return layers
    from rnnedge.exporter.load.keras_api import graph_nodes, producer

    nodes = [n for n in graph_nodes(model) if type(n.operation).__name__ != "InputLayer"]
    before = None
    for node in nodes:
        tensors = list(node.input_tensors)
        made = producer(tensors[0]) if len(tensors) == 1 else None
        parent = made.operation if made is not None else None
        if parent is None or (parent is not before if before is not None else type(parent).__name__ != "InputLayer"):
            raise RnnEdgeError(f"layer '{node.operation.name}' does not take the output of the one before: rnnedge "
                               "rebuilds chains of layers for TF.js")
        before = node.operation
    layers = [n.operation for n in nodes]
    if len({id(layer) for layer in layers}) != len(layers):
        raise RnnEdgeError("a layer is called twice: rnnedge rebuilds chains of distinct layers for TF.js")
    return layers


_BASE_KWARGS = {"name", "trainable", "dtype", "input_shape", "batch_input_shape", "batch_size", "input_dim",
                "dynamic", "autocast"}


def _fit_to(class_name: str, config: dict) -> dict:
    """`config` less the arguments tf_keras' layer of that name does not take (Keras 3 added some)."""
    import inspect

    import tf_keras

    cls = getattr(tf_keras.layers, class_name, None)
    if cls is None:
        raise RnnEdgeError(f"tf_keras has no layer {class_name}: TF.js cannot load this model")
    takes = set(inspect.signature(cls.__init__).parameters) | _BASE_KWARGS
    fitted = {}
    for key, value in config.items():
        if key not in takes:
            continue
        if isinstance(value, dict) and "class_name" in value and "config" in value and key == "layer":
            value = {"class_name": value["class_name"], "config": _fit_to(value["class_name"], value["config"])}
        fitted[key] = value
    return fitted


def _tf_keras_layer(layer):
    import tf_keras

    name = type(layer).__name__
    try:
        return tf_keras.layers.deserialize({"class_name": name, "config": _fit_to(name, _clean(layer.get_config()))})
    except (TypeError, ValueError) as e:
        why = str(e).splitlines()[0][:160]
        raise RnnEdgeError(f"layer '{layer.name}' ({name}) has no tf_keras twin: {why}") from None


def _main(source: str, out: str) -> None:
    out_dir = Path(out)
    result: dict = {"ok": False, "why": ""}
    try:
        import sys
        import types

        stand_in = types.ModuleType("tensorflowjs.converters.jax_conversion")
        stand_in.convert_jax = None
        sys.modules[stand_in.__name__] = stand_in
        try:
            from tensorflowjs.converters import save_keras_model
        except ImportError as e:
            result["missing"] = e.name or str(e)
            return
        import tf_keras

        from rnnedge.exporter import load_keras

        model = load_keras(source)[0]
        with np.load(out_dir / "inputs.npz") as z:
            inputs = [z[k] for k in z.files]
        reference = model.predict(inputs, verbose=0)
        if isinstance(reference, (list, tuple, dict)):
            result["why"] = "the source has several outputs: rnnedge rebuilds single-output chains of layers for TF.js"
            return
        np.savez(out_dir / "keras.npz", output=np.asarray(reference))
        try:
            layers = _chain(model)
            twin = tf_keras.Sequential([tf_keras.Input(batch_shape=tuple(model.inputs[0].shape)),
                                        *[_tf_keras_layer(layer) for layer in layers]])
            for layer, twin_layer in zip(layers, twin.layers):
                twin_layer.set_weights(layer.get_weights())
        except RnnEdgeError as e:
            result["why"] = str(e)
            return
        mirrored = twin.predict(inputs, verbose=0)
        result["twin_max_abs"] = float(np.max(np.abs(mirrored - reference)))
        save_keras_model(twin, str(out_dir / "tfjs"))
        result["ok"] = True
    finally:
        (out_dir / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
