"""The `--allow-loop` fallback: tf2onnx's plain graph of the whole model (Loops kept), named and
described like a fused export, and refused in one line where tf2onnx or onnxruntime cannot take it.
`keras_function` and `tf2onnx_export` are also the baselines `bench` measures (bench/baselines.py)."""

from __future__ import annotations

import re
import warnings

import keras
import onnx

from rnnedge.errors import RnnEdgeError, first_line, one_line
from rnnedge.exporter.convert import TF2ONNX_OPSET, Converted, functional_graph, interface, recurrent_layers
from rnnedge.manifest import TensorSpec


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


def loops_refused(found, loops: int) -> str:
    """Why a SavedModel's signature graph with Loops is refused without --allow-loop."""
    fmt = found.origin.get("format", "savedmodel")
    why = ("rnnedge fuses only layers it can read as Keras layers, and a SavedModel without Keras metadata has none"
           if "revived" not in fmt else "its layer classes were not supplied (--custom module.py)")
    return (f"{found.name} ({fmt}): tf2onnx's graph of its signature keeps {loops} recurrence(s) as Loop/Scan and "
            f"{why}; pass --allow-loop to export it with them, or export the Keras model (model.save) it came from")


def fallback_graph(model, where: str, opset: int):
    """tf2onnx's graph of the whole model, described with the same input/output specs as a fused
    export would have. Refused in one line, starting with `where` (the layer that made it needed)
    and naming the op, where tf2onnx fails or onnxruntime cannot run its graph."""
    import onnxruntime as ort

    try:
        proto = tf2onnx_export(model, opset=min(opset, TF2ONNX_OPSET))
    except Exception as err:  # noqa: BLE001 - tf2onnx's own failure, said in one line
        said = first_line(err, scrub=True)
        raise RnnEdgeError(one_line(f"{where}, which tf2onnx could not convert: {said}")) from None
    try:
        ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime's exception types are not importable across versions
        unknown = unknown_ops(proto.graph)
        match = re.search(r"(?:No Op registered for|implementation for) (\w+)", str(err))
        reason = (f"op {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not implemented" if unknown
                  else f"op {match.group(1)} is not implemented" if match else first_line(err, scrub=True))
        raise RnnEdgeError(one_line(f"{where}, which onnxruntime cannot run: {reason}; "
                                     "replace that layer or its activation")) from None
    graph = functional_graph(model)
    io = interface(graph)
    vocab = token_inputs(proto)  # what an Embedding (a Gather) reads: ids below its vocabulary
    inputs = [TensorSpec(n, tuple(shape), str(t.dtype), vocab=vocab.get(n))
              for t, n, shape in zip(graph.inputs, io.input_names, io.input_shapes)]
    outputs = [TensorSpec(n, tuple(shape), str(t.dtype))
               for t, n, shape in zip(graph.outputs, io.output_names, io.output_shapes)]
    routes = {layer.name: "tf2onnx" for layer in graph.layers if not isinstance(layer, keras.layers.InputLayer)}
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return proto, Converted(proto, inputs, outputs, {}, layers=routes, opset=opset, ir_version=proto.ir_version)


def unknown_ops(graph: onnx.GraphProto) -> list[str]:
    """Op types of the standard ONNX domain that no ONNX opset defines (TensorFlow ops tf2onnx
    left in the graph, such as Erfc), bodies included, in order of first use."""
    found: list[str] = []
    for node in graph.node:
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type) and node.op_type not in found:
            found.append(node.op_type)
        for attr in node.attribute:
            for body in [attr.g] if attr.HasField("g") else list(attr.graphs):
                found += [op for op in unknown_ops(body) if op not in found]
    return found
