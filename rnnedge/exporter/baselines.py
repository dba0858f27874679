"""The baselines rnnedge is measured against, exported from the same Keras model: Keras itself
(`tf.function`), the plain tf2onnx graph (also the `--allow-loop` fallback) and LiteRT; each
as a runner (a name and `run(feeds) -> outputs`, `bind(feeds)` for timing) that `check` and
`bench` take alike."""

from __future__ import annotations

import warnings

import keras
import onnx

from rnnedge.errors import RnnEdgeError
from rnnedge.exporter.convert import functional_graph, recurrent_layers
from rnnedge.exporter.convert.core import interface
from rnnedge.exporter.truth import stateful_layers


def keras_function(model, shapes: list[tuple[int, ...]] | None = None):
    """(tf.function of the Keras model in inference mode with a fixed input signature, its
    `interface`): inputs named as in rnnedge's export, outputs Keras' flattened outputs.
    `shapes` fixes every input's shape (one per input); by default Keras' own (None = dynamic)."""
    import tensorflow as tf

    graph = functional_graph(model)
    io = interface(graph)
    shapes = shapes or [t.shape for t in graph.inputs]
    spec = [tf.TensorSpec(shape, t.dtype, name=n) for t, n, shape in zip(graph.inputs, io.input_names, shapes)]

    @tf.function(input_signature=spec)
    def call(*args):
        return keras.tree.flatten(model(list(args) if len(args) > 1 else args[0], training=False))

    return call, io


def tf2onnx_export(model, opset: int = 17) -> onnx.ModelProto:
    """The plain tf2onnx graph of a Keras 3 model (Sequential included, via a tf.function),
    with the same input and output names as rnnedge's export."""
    import tf2onnx

    call, io = keras_function(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto, _ = tf2onnx.convert.from_function(call, input_signature=call.input_signature, opset=opset)
    proto.ir_version = min(proto.ir_version, 8)
    renamed = {o.name: n for o, n in zip(proto.graph.output, io.output_names)}
    for node in proto.graph.node:
        node.output[:] = [renamed.get(o, o) for o in node.output]
        node.input[:] = [renamed.get(i, i) for i in node.input]
    for o in proto.graph.output:
        o.name = renamed[o.name]
    return proto


def litert_export(model, shapes: list[tuple[int, ...]], *, int8: bool = False) -> bytes:
    """The Keras model as a LiteRT (TensorFlow Lite) flatbuffer for fixed input `shapes` (one per
    input, batch first), the way an edge user of Keras converts it: `TFLiteConverter` on the
    frozen `keras_function`, built-in ops only. Keras 3 recurrent layers become `WHILE` loops;
    LiteRT cannot lower their tensor lists with a dynamic batch, so every shape is fixed.
    `int8`: LiteRT's dynamic-range quantization (`Optimize.DEFAULT`: int8 weights, activations
    quantized on the fly by its hybrid kernels), its counterpart of rnnedge's int8 variant."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    shown = ", ".join(str(tuple(s)) for s in shapes)
    stateful = [layer.name for layer in stateful_layers(model)]
    if stateful:
        raise RnnEdgeError(f"LiteRT could not convert model '{model.name}': stateful layer(s) {', '.join(stateful)} "
                           "keep their state in variables, which the conversion would freeze; leave litert out of "
                           "the baselines for this model")
    try:
        call, _ = keras_function(model, shapes)
        frozen = convert_variables_to_constants_v2(call.get_concrete_function(), lower_control_flow=False)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()
    except Exception as e:  # the converter's MLIR diagnostics: keep the first error line
        lines = [ln.strip() for ln in str(e).splitlines() if "error:" in ln] or [str(e).strip() or type(e).__name__]
        reason = lines[0].split("error:", 1)[-1].strip()
        raise RnnEdgeError(f"LiteRT could not convert model '{model.name}' "
                           f"for input shapes {shown}: {reason}") from None


def loop_nodes(proto: onnx.ModelProto) -> list[str]:
    """The names of the graph's Loop and Scan nodes (tf2onnx's recurrences)."""
    return [n.name for n in proto.graph.node if n.op_type in ("Loop", "Scan")]


_PASS_THROUGH = ("Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Transpose", "Flatten")


def token_inputs(proto: onnx.ModelProto) -> dict[str, int]:
    """{graph input: vocabulary size} for each input that reaches, through casts and reshapes only,
    the indices of a Gather from a stored table (an Embedding): its values must be ids below the
    table's first dimension (tf2onnx's graph of a SavedModel gives no other sign of it)."""
    graph = proto.graph
    tables = {init.name: init.dims[0] for init in graph.initializer if init.dims}
    tables.update((n.output[0], onnx.helper.get_attribute_value(n.attribute[0]).dims[0]) for n in graph.node
                  if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
                  and onnx.helper.get_attribute_value(n.attribute[0]).dims)
    readers: dict[str, list] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, k))
    found = {}
    for given in graph.input:
        seen, todo, sizes = set(), [given.name], []
        while todo:
            name = todo.pop()
            for node, k in readers.get(name, []):
                if node.op_type in ("Gather", "GatherV2") and k == 1 and node.input[0] in tables:
                    sizes.append(int(tables[node.input[0]]))
                elif node.op_type in _PASS_THROUGH and k == 0 and node.output[0] not in seen:
                    seen.add(node.output[0])
                    todo.append(node.output[0])
        if sizes:
            found[given.name] = min(sizes)
    return found


def loop_layers(proto: onnx.ModelProto, model) -> list[str]:
    loops = loop_nodes(proto)
    names = [layer.name for layer in recurrent_layers(functional_graph(model))]
    hit = [n for n in names if any(f"/{n}/" in f"/{loop}/" for loop in loops)]
    return hit or (names if loops else [])


# ---------------------------------------------------------------- the baselines as runners

class KerasRunner:
    """The Keras model under `tf.function` (no XLA): inputs in `input_names` order, outputs named
    `output_names` (the export's data outputs, in Keras' flattened order)."""

    name = "keras"

    def __init__(self, model, input_names: list[str], output_names: list[str]):
        self.fn = keras_function(model)[0]
        self.input_names, self.output_names = list(input_names), list(output_names)
        self.provider = "TensorFlow"

    def bind(self, feeds):
        import tensorflow as tf

        args = [tf.constant(feeds[n]) for n in self.input_names]
        return lambda: [t.numpy() for t in tf.nest.flatten(self.fn(*args))]

    def run(self, feeds) -> dict:
        return dict(zip(self.output_names, self.bind(feeds)()))


class LiteRTRunner:
    """The Keras model converted by TensorFlow Lite's converter for the feeds' fixed shapes (once
    per shapes), in the LiteRT interpreter with `threads` threads and XNNPACK; `int8` uses the
    converter's dynamic-range quantization ("litert-int8"). `input_names` follow the model's
    inputs (the export's data inputs); feeds are matched to them by name."""

    def __init__(self, model, input_names: list[str], output_names: list[str], *, threads: int = 1,
                 int8: bool = False):
        self.model, self.threads, self.int8 = model, threads, int8
        self.input_names, self.output_names = list(input_names), list(output_names)
        self.name = "litert-int8" if int8 else "litert"
        self.provider = "LiteRT (CPU)"
        self._interpreters: dict[tuple, object] = {}

    def bind(self, feeds):
        from rnnedge.logs import quiet_native_stderr

        data = {n: feeds[n] for n in self.input_names}
        shapes = tuple(tuple(a.shape) for a in data.values())
        if shapes not in self._interpreters:
            with quiet_native_stderr():  # the converter's and XNNPACK's INFO lines
                flat = litert_export(self.model, list(shapes), int8=self.int8)
                self._interpreters[shapes] = litert_interpreter(flat, self.threads)
        return litert_call(self._interpreters[shapes], data)

    def run(self, feeds) -> dict:
        return dict(zip(self.output_names, self.bind(feeds)()))


def litert_call(interpreter, feeds):
    """One call on a LiteRT interpreter, for timing: set `feeds` (matched to the inputs by name, else
    in order), invoke, read every output."""
    import numpy as np

    details = interpreter.get_input_details()
    by_name = {d["name"]: d for d in details}
    if set(by_name) != set(feeds):  # named otherwise: the converter keeps the signature's order
        by_name = dict(zip(feeds, details))
    inputs = [(by_name[n]["index"], np.asarray(a).astype(by_name[n]["dtype"], copy=False)) for n, a in feeds.items()]
    outputs = [d["index"] for d in interpreter.get_output_details()]

    def call():
        for index, array in inputs:
            interpreter.set_tensor(index, array)
        interpreter.invoke()
        return [interpreter.get_tensor(i) for i in outputs]

    return call


def litert_interpreter(flatbuffer: bytes, threads: int = 1):
    """A LiteRT interpreter, tensors allocated: `ai_edge_litert`'s where installed, else TensorFlow's
    `tf.lite.Interpreter` (deprecated in favour of the former, still shipped with TensorFlow 2.21)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def tf2onnx_runner(model, like=None, threads: int = 1):
    """The plain tf2onnx graph in onnxruntime (an OrtRunner named "tf2onnx"), on the providers and
    options of session `like` (CPU if None)."""
    import logging

    import onnxruntime as ort

    from rnnedge.logs import quiet_native_stderr
    from rnnedge.runtime import session_options
    from rnnedge.runtime.runner import OrtRunner

    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with quiet_native_stderr():  # grappler's INFO lines
            proto = tf2onnx_export(model)
    finally:
        logger.setLevel(level)
    providers = like.get_providers() if like is not None else ["CPUExecutionProvider"]
    options = like.get_provider_options() if like is not None else {}
    session = ort.InferenceSession(proto.SerializeToString(), session_options(threads), providers=providers,
                                   provider_options=[options.get(p, {}) for p in providers])
    return OrtRunner(session, "tf2onnx")

