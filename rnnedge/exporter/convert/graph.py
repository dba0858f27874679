"""A small ONNX graph builder: named values, constants, nodes, and the symbolic tensors
that flow between Keras layer converters."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from rnnedge.tables import ONNX_TYPES, OPSETS

OPSET = 17  # the default; `--opset` picks any of tables.OPSETS
IR_VERSION = OPSETS[OPSET]  # what opset 17 needs; onnxruntime >= 1.14 loads it
# ops whose `axes` attribute became an input at opset 18 (ReduceSum and Squeeze/Unsqueeze did at 13)
AXES_INPUT_FROM_18 = {"ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2",
                      "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}



@dataclass(frozen=True)
class Sym:
    """A value in the ONNX graph under construction, with its Keras shape (None = dynamic)."""

    name: str
    shape: tuple
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)


class GraphBuilder:
    def __init__(self, name: str, opset: int = OPSET, parent: GraphBuilder | None = None):
        self.name = name
        self.parent = parent  # the graph a Scan/Loop body is nested in
        self.opset = parent.opset if parent is not None else opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._used: set[str] = set()
        self._consts: dict[tuple, str] = {}
        self._tensors: dict[tuple, str] = {}  # (dtype, dims, sha256) -> name, for spliced initializers
        self.opsets: dict[str, int] = {"": self.opset}  # domain -> version (spliced graphs may add ai.onnx.ml)
        if parent is not None:
            self._used = parent._used  # names stay unique across the model: a body never shadows an outer name

    def body(self, name: str) -> GraphBuilder:
        """A builder for a Scan/Loop body nested in this graph (at its opset). Its names are unique across
        the model; its constants are its own initializers, so the body reads nothing from outside but its
        inputs (tools that rewrite the outer graph, such as quantizers, cannot break it)."""
        return GraphBuilder(name, parent=self)

    def fresh(self, hint: str) -> str:
        base = hint.replace(" ", "_") or "t"
        name, i = base, 1
        while name in self._used:
            name = f"{base}_{i}"
            i += 1
        self._used.add(name)
        return name

    def reserve(self, *names: str):
        """Keep names (graph outputs chosen up front) from being given to intermediate values."""
        self._used.update(names)

    def const(self, value, hint: str = "const", dtype=None) -> str:
        array = np.asarray(value, dtype=dtype)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        small = array.size <= 16
        key = (array.dtype.str, array.shape, array.tobytes()) if small else None
        if key is not None and key in self._consts:
            return self._consts[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(array.copy(order="C"), name))
        if key is not None:
            self._consts[key] = name
        return name

    def add_tensor(self, tensor: onnx.TensorProto, hint: str) -> str:
        """An initializer copied from another graph; one with the same dtype, dims and bytes as one
        added before is kept once (a layer spliced twice shares its weights)."""
        array = numpy_helper.to_array(tensor)
        key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(array.tobytes()).hexdigest())
        if key not in self._tensors:
            copy = onnx.TensorProto()
            copy.CopyFrom(tensor)
            copy.name = self.fresh(hint)
            self.initializers.append(copy)
            self._tensors[key] = copy.name
        return self._tensors[key]

    def op(self, op_type: str, inputs, hint: str | None = None, outputs: int = 1, **attrs):
        """Add a node; returns its output name (or a list of names when outputs > 1). An `axes`
        attribute of a Reduce op becomes its input where the opset wants it so (18 on)."""
        if op_type in AXES_INPUT_FROM_18 and self.opset >= 18 and attrs.get("axes") is not None:
            inputs = [*inputs, self.const(np.array(attrs.pop("axes"), np.int64), "axes")]
        names = [self.fresh(f"{hint or op_type}" + (f"/out{i}" if outputs > 1 else "")) for i in range(outputs)]
        node = helper.make_node(
            op_type,
            [i if i is not None else "" for i in inputs],
            names,
            name=self.fresh(f"{hint or op_type}/{op_type}"),
            **{k: v for k, v in attrs.items() if v is not None},
        )
        self.nodes.append(node)
        return names if outputs > 1 else names[0]

    def add_input(self, name: str, dtype: str, shape) -> str:
        self._used.add(name)
        self.inputs.append(helper.make_tensor_value_info(name, ONNX_TYPES[dtype], list(shape)))
        return name

    def add_output(self, source: str, name: str, dtype: str, shape) -> str:
        if source != name:
            self.nodes.append(helper.make_node("Identity", [source], [name], name=self.fresh(f"{name}/Identity")))
        self.outputs.append(helper.make_tensor_value_info(name, ONNX_TYPES[dtype], list(shape)))
        return name

    def prune(self):
        """Drop nodes and initializers nothing reads, and the trailing optional outputs of recurrent
        nodes nobody reads. (An unread leading Y stays named: blanking it saves nothing measurable,
        and onnxconverter-common's fp16 pass takes an empty output for a cycle.)"""
        needed = {o.name for o in self.outputs}
        kept = []
        for node in reversed(self.nodes):
            if any(o in needed for o in node.output if o):
                kept.append(node)
                needed.update(_reads(node))
        for node in kept:
            if node.op_type in ("LSTM", "GRU", "RNN"):
                outputs = list(node.output)
                while len(outputs) > 1 and outputs[-1] not in needed:
                    outputs.pop()
                del node.output[:]
                node.output.extend(outputs)
        self.nodes = kept[::-1]
        self.initializers = [t for t in self.initializers if t.name in needed]

    def model(self, producer: str, version: str) -> onnx.ModelProto:
        self.prune()
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid(d, v) for d, v in self.opsets.items()],
            producer_name=producer,
            producer_version=version,
        )
        model.ir_version = OPSETS[self.opset]
        return model

    def graph(self, inputs: list[tuple[str, str]], outputs: list[tuple[str, str]]) -> onnx.GraphProto:
        """This builder's nodes and constants as a body graph; `inputs` and `outputs` are (name, dtype),
        shapes left open."""
        info = lambda pairs: [helper.make_tensor_value_info(n, ONNX_TYPES[d], None) for n, d in pairs]  # noqa: E731
        return helper.make_graph(self.nodes, self.name, info(inputs), info(outputs), self.initializers)

    # Shape helpers used by several converters.
    def dims(self, x: str, start: int, end: int) -> str:
        """Shape(x)[start:end] as an int64 1-D tensor."""
        if self.opset >= 15:
            return self.op("Shape", [x], start=start, end=end)
        return self.op("Slice", [self.op("Shape", [x]), self.const(np.array([start], np.int64), "start"),
                                 self.const(np.array([end], np.int64), "end")])  # Shape's start/end are from 15

    def unsqueeze(self, x: str, axes) -> str:
        return self.op("Unsqueeze", [x, self.const(np.array(axes, np.int64), "axes")])

    def squeeze(self, x: str, axes) -> str:
        return self.op("Squeeze", [x, self.const(np.array(axes, np.int64), "axes")])

    def transpose(self, x: str, perm) -> str:
        return self.op("Transpose", [x], perm=list(perm))


def _reads(node: onnx.NodeProto) -> set[str]:
    """The names a node reads: its inputs, and those the nodes of its bodies (Scan, Loop, If) read."""
    names = {i for i in node.input if i}
    for attr in node.attribute:
        for body in [attr.g] if attr.HasField("g") else list(attr.graphs):
            for inner in body.node:
                names |= _reads(inner)
    return names
