"""`export --target P`: an export shaped for one accelerator, refused in one line where the model
cannot meet it, and checked on the accelerator where its provider is installed.

For `qnn` (Qualcomm's HTP NPU): static shapes (batch 1 unless `--static` says otherwise, a fixed
time length), no sequence_lens computed from a mask, and only ops QNN has: QNN has no ONNX `RNN`
op, so each SimpleRNN node is unrolled over the fixed time axis into MatMul/Add/activation (the
input projection of every step is one MatMul). What remains is judged by the provider table
(runtime.targets) before the slow work; after the export, the file runs on QNN with CPU fallback
disabled (every node on the NPU, onnxruntime's own verdict) and its outputs are judged against
Keras' golden outputs by the fp16 variants' gate (share of each output's range).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from rnnedge.check import read_golden
from rnnedge.errors import RnnEdgeError
from rnnedge.exporter.convert import Converted
from rnnedge.manifest import MODEL, is_time_axis
from rnnedge.preflight import EXPORT_TARGETS
from rnnedge.quantize.gate import golden_gate, output_kinds
from rnnedge.runtime.qnn import QNN_PIP, qnn_installed, qnn_session
from rnnedge.runtime.targets import judge, nodes_of, target_line

__all__ = ["check_on_target", "shaped_for", "static_for", "target_checked", "target_line"]

_LOWERED = {"Tanh": "Tanh", "Relu": "Relu", "Sigmoid": "Sigmoid"}  # RNN activations the unrolled form computes


def target_checked(target: str | None) -> str | None:
    """A target rnnedge shapes exports for (preflight.EXPORT_TARGETS), or None."""
    if target is not None and target not in EXPORT_TARGETS:
        raise RnnEdgeError(f"--target {target}: expected one of {', '.join(EXPORT_TARGETS)} (`rnnedge targets DIR` "
                           "says what other providers run)")
    return target


def static_for(target: str | None, static: dict[str, int], fixed_batch: int | None = None) -> dict[str, int]:
    """The axes `target` needs fixed: batch 1 (unless `--static` or the model fixes another)."""
    if target is None:
        return static
    return {**({"batch": 1} if fixed_batch is None else {}), **static}


def shaped_for(target: str, converted: Converted, proto: onnx.ModelProto) -> tuple[Converted, onnx.ModelProto]:
    """The converted model made what `target` runs: refused in one line (the layer, the reason, the fix)
    where it cannot be; SimpleRNN nodes unrolled."""
    if any(is_time_axis(d) or not isinstance(d, int) for s in converted.inputs for d in s.shape):
        raise RnnEdgeError(f"--target {target} needs fixed shapes: the inputs keep a dynamic axis "
                           f"({_dynamic(converted)}); add --static time=T (the length the device is fed)")
    layer_of = {n: layer for nodes in (converted.fused_nodes, converted.scan_nodes)
                for layer, names in nodes.items() for n in names}
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in onnx.shape_inference.infer_shapes(proto).graph.value_info}
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in proto.graph.input})
    fused, layers, notes = dict(converted.fused_nodes), dict(converted.layers), dict(converted.notes)
    nodes = []
    for node in proto.graph.node:
        lowerable = node.op_type == "RNN" and not (len(node.input) > 4 and node.input[4])
        if not lowerable:
            nodes.append(node)
            continue
        layer = layer_of.get(node.name, node.name)
        nodes += _unrolled(node, proto.graph, shapes.get(node.input[0]), layer)
        fused[layer] = [n for n in fused.get(layer, []) if n != node.name]
        if not fused[layer]:
            del fused[layer]
        layers[layer] = "unrolled"
        notes[layer] = (f"unrolled for --target {target}: QNN has no RNN op (MatMul/Add/activation per step over "
                        "the fixed time axis)")
    if len(nodes) != len(proto.graph.node) or layers != converted.layers:
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
        _prune_initializers(proto)
        onnx.checker.check_model(proto)
    verdict = judge(nodes_of(proto, layer_of), [target])[0]
    off = [f for f in verdict.findings if f.restriction.falls_back]
    if off:
        f = off[0]
        layer = f"layer '{f.node.layer}' ({f.node.op})" if f.node.layer else f"node {f.node.name} ({f.node.op})"
        raise RnnEdgeError(f"--target {target}: {layer} cannot run there: {f.restriction.reason}; "
                           f"fix: {f.restriction.fix}")
    return dataclasses.replace(converted, fused_nodes=fused, layers=layers, notes=notes), proto


def _dynamic(converted: Converted) -> str:
    return ", ".join(f"{s.name}: [{', '.join(str(d) for d in s.shape)}]" for s in converted.inputs
                     if any(not isinstance(d, int) for d in s.shape))


def _unrolled(node, graph: onnx.GraphProto, x_shape, layer: str) -> list[onnx.NodeProto]:
    """An ONNX RNN node (layout 0) as ops over its fixed time axis: per direction one MatMul for every
    step's input projection, then per step h = act(xw[t] + h @ R^T). Y [T, D, B, H] and Y_h [D, B, H]."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if int(attrs.get("layout", 0)) != 0 or "clip" in attrs or "activation_alpha" in attrs:
        raise RnnEdgeError(f"--target qnn: layer '{layer}' (SimpleRNN) has attributes the unrolled form does not "
                           "compute (layout 1, clip or activation alpha); export it without --target")
    if not x_shape or x_shape[0] is None:
        raise RnnEdgeError(f"--target qnn: layer '{layer}' (SimpleRNN) has no fixed time length; add --static time=T")
    steps = x_shape[0]
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", ["Tanh"] * len(dirs))]
    for a in acts:
        if a not in _LOWERED:
            raise RnnEdgeError(f"--target qnn: layer '{layer}' (SimpleRNN) uses activation {a}, which the unrolled "
                               "form does not compute; use tanh, relu or sigmoid")
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    W, R = inits[node.input[1]], inits[node.input[2]]
    hidden = W.shape[1]
    B = inits[node.input[3]] if len(node.input) > 3 and node.input[3] else np.zeros((len(dirs), 2 * hidden), np.float32)
    h0 = node.input[5] if len(node.input) > 5 and node.input[5] else None
    out: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    base = f"{node.name}/unrolled"

    def const(value, name):
        new_inits.append(numpy_helper.from_array(np.asarray(value), f"{base}/{name}"))
        return f"{base}/{name}"

    def op(kind, inputs, name, **kw):
        out.append(helper.make_node(kind, inputs, [f"{base}/{name}"], name=f"{base}/{name}", **kw))
        return f"{base}/{name}"

    ys, finals = [], []
    for d, way in enumerate(dirs):
        xw = op("MatMul", [node.input[0], const(W[d].T.astype(np.float32), f"W{d}")], f"xw{d}")
        xw = op("Add", [xw, const((B[d, :hidden] + B[d, hidden:]).astype(np.float32), f"b{d}")], f"xwb{d}")
        rt = const(R[d].T.astype(np.float32), f"R{d}")
        h = op("Gather", [h0, const(np.int64(d), f"d{d}")], f"init{d}", axis=0) if h0 else None
        per_step: dict[int, str] = {}
        order = range(steps) if way == "forward" else range(steps - 1, -1, -1)
        for t in order:
            x_t = op("Gather", [xw, const(np.int64(t), f"t{d}_{t}")], f"x{d}_{t}", axis=0)
            pre = x_t if h is None else op("Add", [x_t, op("MatMul", [h, rt], f"hr{d}_{t}")], f"pre{d}_{t}")
            h = op(_LOWERED[acts[d]], [pre], f"h{d}_{t}")
            per_step[t] = h
        axes0 = const(np.array([0], np.int64), f"axes0_{d}")
        ys.append(op("Concat", [op("Unsqueeze", [per_step[t], axes0], f"y{d}_{t}") for t in range(steps)],
                     f"Y{d}", axis=0))
        finals.append(op("Unsqueeze", [h, axes0], f"Yh{d}"))
    axes1 = const(np.array([1], np.int64), "axes1")
    y_outs = [op("Unsqueeze", [y, axes1], f"Yd{d}") for d, y in enumerate(ys)]
    wanted = list(node.output) + [""] * (2 - len(node.output))
    if wanted[0]:
        out.append(helper.make_node("Concat", y_outs, [wanted[0]], name=f"{base}/Y", axis=1))
    if wanted[1]:
        out.append(helper.make_node("Concat", finals, [wanted[1]], name=f"{base}/Y_h", axis=0))
    graph.initializer.extend(new_inits)
    return out


def _prune_initializers(proto: onnx.ModelProto) -> None:
    """Drop initializers no node reads any more (the lowered nodes' W, R, B); subgraphs (a Scan's body)
    may read outer initializers by name, so their nodes count too."""
    used = {o.name for o in proto.graph.output}

    def read(graph):
        for n in graph.node:
            used.update(n.input)
            for a in n.attribute:
                for body in [a.g] if a.HasField("g") else list(a.graphs):
                    read(body)

    read(proto.graph)
    keep = [t for t in proto.graph.initializer if t.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)


def check_on_target(target: str, folder: Path) -> dict:
    """Run the exported file on the target's provider and judge it: placement (every node there, or
    onnxruntime refuses the session) and the golden gate against Keras. Where the provider is not
    installed, says so (nothing is claimed)."""
    if not qnn_installed():
        return {"provider": target, "checked": False, "why": f"the QNN provider is not installed: {QNN_PIP}"}
    import onnxruntime_qnn

    record = {"provider": target, "checked": True, "backend": "HTP simulator" if _x86() else "HTP",
              "precision": "fp16", "onnxruntime_qnn": getattr(onnxruntime_qnn, "__version__", "")}
    try:
        session = qnn_session(str(folder / MODEL), all_on_qnn=True)
    except Exception as err:  # noqa: BLE001 - onnxruntime's exception types are not importable across versions
        line = (str(err).splitlines() or [type(err).__name__])[0]
        return {**record, "placement": "not every node on QNN", "passed": False, "why": line[:300]}
    names = {i.name for i in session.get_inputs()}
    pairs = []
    for _, inputs, expected in read_golden(folder):
        got = session.run(None, {k: v for k, v in inputs.items() if k in names})
        pairs.append((expected, dict(zip([o.name for o in session.get_outputs()], got))))
    gate = golden_gate(pairs, output_kinds(onnx.load(str(folder / MODEL), load_external_data=False)))
    return {**record, "placement": "every node on QNN", "gate": gate, "passed": gate["passed"]}


def _x86() -> bool:
    import platform

    return platform.machine().lower() in ("x86_64", "amd64")
