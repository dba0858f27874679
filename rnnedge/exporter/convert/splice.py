"""Layers and Keras ops with no native converter, converted by tf2onnx and spliced into the graph.

Takes a run of Keras calls (operation, arguments holding `Sym`s or `Pending` results of earlier
calls in the run) that holds no recurrent layer; gives the ONNX names of the results asked for.
The run is traced as one `tf.function` (a `tf.TensorSpec` per input, None for dynamic axes),
converted by tf2onnx at rnnedge's opset, and copied into the GraphBuilder under a fresh prefix:
its inputs wired to the Syms, its weights kept once (by dtype, dims and bytes).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import keras
import numpy as np
import onnx

from rnnedge.errors import one_line
from rnnedge.exporter.convert import registry
from rnnedge.exporter.convert.context import Context, UnsupportedLayerError
from rnnedge.exporter.convert.graph import Sym
from rnnedge.exporter.load.keras_api import call_parameters, call_spec, mask_of, sublayers, takes_training
from rnnedge.tables import ATOL, RTOL

# tf2onnx writes at most this opset; at a higher one its nodes are kept as written (the ops it uses
# changed only in the types they accept from 19 to 21), and the export's parity check runs them
TF2ONNX_OPSET = 18

DOMAINS = ("", "ai.onnx", "ai.onnx.ml")  # what onnxruntime and other runtimes all implement


class SpliceError(UnsupportedLayerError):
    """A layer that neither rnnedge's own converters nor tf2onnx can convert."""

    def __init__(self, layer, reason: str):
        super().__init__(layer, reason)
        self.args = (f"layer '{self.layer_name}' ({self.layer_type}): rnnedge has no converter of its own for it "
                     f"and tf2onnx could not convert it ({reason}); "
                     "replace it with layers rnnedge or tf2onnx converts",)


@dataclass(frozen=True)
class Pending:
    """Result `index` of call `call` in the run being spliced (not yet in the ONNX graph)."""

    call: int
    index: int
    shape: tuple
    dtype: str


def recurrent_inside(op):
    """The first recurrent layer a layer runs inside its own call (itself included), or None."""
    if not isinstance(op, keras.layers.Layer):
        return None
    return next((sub for sub in sublayers(op) if registry.is_recurrent(sub)), None)


def implicit_masks(op, args, kwargs) -> dict:
    """The mask arguments Keras fills in when it runs the layer (from the masks attached to its input
    tensors) but the functional node does not record: Keras keeps the caller's own kwargs in the node.
    Returns {argument: structure of mask KerasTensors}, empty where there is none."""
    if not isinstance(op, keras.layers.Layer):
        return {}
    if not any(n == "mask" or n.endswith("_mask") for n in call_parameters(op)):
        return {}
    spec = call_spec(op, args, kwargs)
    tensors = spec.tensor_arguments_dict
    if len(tensors) == 1:
        wanted = {"mask": next(iter(tensors.values()))} if "mask" in spec.argument_names else {}
    else:
        wanted = {f"{k}_mask": v for k, v in tensors.items() if f"{k}_mask" in spec.argument_names}
    found = {}
    for name, value in wanted.items():
        if spec.arguments_dict.get(name) is None:
            masks = keras.tree.map_structure(mask_of, value)
            if any(m is not None for m in keras.tree.flatten(masks)):
                found[name] = masks
    return found


def convert_run(ctx: Context, calls: list[tuple], wanted: list[tuple[int, int]] | None = None) -> list[str]:
    """ONNX names of results `wanted` ((call, index) pairs; every result of every call if None).
    A run tf2onnx refuses as a whole is converted one call at a time, so a refusal names its layer."""
    for op, _, _ in calls:
        sub = recurrent_inside(op)
        if sub is not None:
            raise UnsupportedLayerError(op, f"it runs recurrent layer '{sub.name}' ({type(sub).__name__}) inside its "
                                            "own call, where rnnedge cannot fuse it; call that layer in the "
                                            "functional graph instead")
    if ctx.streaming:
        _refuse_time_mixing(calls)
    try:
        names = _splice(ctx, calls, wanted)
    except SpliceError:
        if len(calls) == 1:
            raise
        names = None
    if names is None:
        results: list[list[str]] = []
        for op, args, kwargs in calls:
            resolve = lambda v: Sym(results[v.call][v.index], v.shape, v.dtype) if isinstance(v, Pending) else v  # noqa: E731
            args, kwargs = keras.tree.map_structure(resolve, (args, kwargs))
            results.append(_splice(ctx, [(op, args, kwargs)], None))
        names = [n for r in results for n in r] if wanted is None else [results[c][i] for c, i in wanted]
    for op, _, _ in calls:
        ctx.route(op, "tf2onnx")
    return names


def _refuse_time_mixing(calls, steps: int = 6, part: int = 3) -> None:
    """A streaming export runs each chunk alone: refuse an operation whose output at a step
    depends on other steps (a chunk's head and its tail, run alone, must give the whole run's
    values), or that cannot run on fewer steps. Probed in Keras on random data, axis 1 of inputs
    of rank >= 3 being time."""
    inputs = _inputs(calls)
    timed = [s for s in inputs if s.rank >= 3]
    if not timed:
        return
    rng = np.random.default_rng(0)

    def sample(s: Sym, t: int):
        shape = [1 if d is None else d for d in s.shape]
        if s.rank >= 3:
            shape[1] = t
        return rng.normal(size=shape).astype(s.dtype) if s.dtype.startswith("float") else np.ones(shape, s.dtype)

    full = {s.name: sample(s, steps) for s in inputs}
    head = {n: (x[:, :part] if x.ndim >= 3 else x) for n, x in full.items()}
    tail = {n: (x[:, part:] if x.ndim >= 3 else x) for n, x in full.items()}
    why = "its output at a step depends on other steps"
    try:
        whole, first, rest = _eager(calls, full), _eager(calls, head), _eager(calls, tail)
        same = all(a.ndim >= 2 and a.shape[1] == steps and b.shape[1] == part and c.shape[1] == steps - part
                   and np.allclose(a[:, :part], b, atol=ATOL, rtol=RTOL)
                   and np.allclose(a[:, part:], c, atol=ATOL, rtol=RTOL) for a, b, c in zip(whole, first, rest))
    except Exception as e:  # noqa: BLE001 - e.g. a Reshape to a fixed number of steps
        same, why = False, f"it cannot run on a chunk of {part} steps ({one_line(f'{type(e).__name__}: {e}', 120)})"
    if not same and why.startswith("its output"):
        ahead = _look_ahead(calls, full, steps)
        if ahead:
            why = (f"its output at a step changes with the {ahead} step(s) after it in a probe of {steps} steps (it "
                   "looks ahead, to the sequence's end where it reads all of it: attention over the whole sequence "
                   "does); give it only past steps (a causal convolution: ZeroPadding1D((k-1)*d, 0) then "
                   "padding='valid', or a recurrent layer)")
    if not same:
        raise UnsupportedLayerError(calls[0][0], f"{why}, so it cannot run chunk by chunk",
                                    advice="export without --streaming")


def _look_ahead(calls, full: dict, steps: int) -> int:
    """How many steps ahead the calls' outputs read, probed by changing the inputs' last step: the
    first output step that changes is that many steps before it (0: they read no step ahead)."""
    try:
        changed = {n: x.copy() for n, x in full.items()}
        for x in changed.values():
            if x.ndim >= 3 and x.dtype.kind == "f":
                x[:, -1] += 1.0
        before, after = _eager(calls, full), _eager(calls, changed)
        first = min((int(np.argmax(np.any(np.abs(a - b) > ATOL, axis=tuple(i for i in range(a.ndim) if i != 1))))
                     for a, b in zip(before, after) if a.ndim >= 2 and a.shape[1] == steps
                     and np.any(np.abs(a[:, :-1] - b[:, :-1]) > ATOL)), default=steps - 1)
    except Exception:  # noqa: BLE001 - the probe only sharpens the message
        return 0
    return steps - 1 - first


def _call_all(calls, env: dict) -> list[list]:
    """Each call's flat results, Syms replaced by env[name] and earlier results wired in; layers
    run in inference mode."""
    results: list[list] = []
    for op, args, kwargs in calls:
        value = lambda v: (env[v.name] if isinstance(v, Sym)  # noqa: E731
                           else results[v.call][v.index] if isinstance(v, Pending) else v)
        args, kwargs = keras.tree.map_structure(value, (args, kwargs))
        if takes_training(op) and kwargs.get("training") is None:
            kwargs = {**kwargs, "training": False}
        results.append(keras.tree.flatten(op(*args, **kwargs)))
    return results


def _eager(calls, env: dict) -> list[np.ndarray]:
    return [np.asarray(keras.ops.convert_to_numpy(t)) for r in _call_all(calls, env) for t in r]


def _splice(ctx: Context, calls, wanted) -> list[str]:
    inputs = _inputs(calls)
    return _copy(ctx, _tf2onnx(calls, inputs, wanted, ctx.g.opset), calls[0][0], inputs)


def _inputs(calls) -> list[Sym]:
    found: dict[str, Sym] = {}
    for _, args, kwargs in calls:
        for leaf in keras.tree.flatten((args, kwargs)):
            if isinstance(leaf, Sym):
                found.setdefault(leaf.name, leaf)
    return list(found.values())


def _tf2onnx(calls, inputs: list[Sym], wanted, opset: int) -> onnx.ModelProto:
    import tensorflow as tf
    import tf2onnx

    specs = [tf.TensorSpec(s.shape, tf.as_dtype(s.dtype), name=f"in{i}") for i, s in enumerate(inputs)]

    def run(*tensors):
        results = _call_all(calls, {s.name: t for s, t in zip(inputs, tensors)})
        return [t for r in results for t in r] if wanted is None else [results[c][i] for c, i in wanted]

    layer = calls[0][0]
    errors = _Errors()
    logger = logging.getLogger("tf2onnx")  # with a handler of ours, its warnings are not printed either
    logger.addHandler(errors)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn = tf.function(run, input_signature=specs)
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=specs, opset=min(opset, TF2ONNX_OPSET))
    except Exception as e:  # tracing the user's layer or tf2onnx failed: that is the layer's refusal
        raise SpliceError(layer, one_line(f"{type(e).__name__}: {e}")) from None
    finally:
        logger.removeHandler(errors)
    _freeze_captures(proto, fn.get_concrete_function(*specs), len(inputs))
    unknown = sorted({n.op_type for n in _all_nodes(proto.graph) if n.domain in ("", "ai.onnx")
                      and not onnx.defs.has(n.op_type, "")})
    if unknown:
        said = next((m for m in errors.messages if "is not supported" in m or "Unsupported ops" in m), None)
        raise SpliceError(layer, one_line(said or f"it left TensorFlow op(s) {', '.join(unknown)} unconverted"))
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in _all_nodes(proto.graph) if n.domain not in DOMAINS})
    if foreign:
        raise SpliceError(layer, f"it emitted {', '.join(foreign)}, "
                                 "outside the standard ONNX domains rnnedge exports use")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise SpliceError(layer, one_line(f"its graph is not valid ONNX: {e}")) from None
    return proto


def _freeze_captures(proto: onnx.ModelProto, concrete, count: int) -> None:
    """Tensors the traced function captured (not variables: an adapted Normalization keeps its
    statistics as plain tensors) come out of tf2onnx as extra graph inputs: make them initializers."""
    own = {f"in{i}" for i in range(count)}
    extra = [v for v in proto.graph.input if v.name.split(":")[0] not in own
             and v.name not in {t.name for t in proto.graph.initializer}]
    if not extra:
        return
    values = {internal.name: external for external, internal in concrete.graph.captures}
    for value in extra:
        if value.name not in values:
            continue  # left for _copy to report
        array = np.asarray(values[value.name].numpy())
        proto.graph.initializer.append(onnx.numpy_helper.from_array(array, value.name))
        proto.graph.input.remove(value)


def _copy(ctx: Context, proto: onnx.ModelProto, first, inputs: list[Sym]) -> list[str]:
    """Copy tf2onnx's graph into ctx.g under a fresh prefix; returns the names of its outputs."""
    g = ctx.g
    prefix = g.fresh(f"{first.name}/tf2onnx")
    names = {}
    # By name, not position: tf2onnx drops an input the graph does not read, and lists constants it
    # captured (an adapted Normalization's statistics) as inputs with an initializer of the same name.
    constants = {t.name for t in proto.graph.initializer}
    for value in proto.graph.input:
        if value.name in constants:
            continue
        index = value.name.split(":")[0]
        if not (index.startswith("in") and index[2:].isdigit() and int(index[2:]) < len(inputs)):
            raise AssertionError(f"tf2onnx input {value.name} is none of in0..in{len(inputs) - 1}")
        names[value.name] = inputs[int(index[2:])].name
    for tensor in proto.graph.initializer:
        names[tensor.name] = g.add_tensor(tensor, f"{prefix}/{_short(tensor.name)}")

    def rename(name: str) -> str:
        if not name:
            return name
        if name not in names:
            names[name] = g.fresh(f"{prefix}/{_short(name)}")
        return names[name]

    versions = {o.domain: o.version for o in proto.opset_import}
    for node in proto.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        _rename_node(copy, rename)
        copy.name = g.fresh(f"{prefix}/{node.name or node.op_type}")
        g.nodes.append(copy)
    for node in _all_nodes(proto.graph):
        if node.domain not in ("", "ai.onnx"):
            g.opsets[node.domain] = max(g.opsets.get(node.domain, 0), versions[node.domain])
    return [rename(o.name) for o in proto.graph.output]


def _rename_node(node: onnx.NodeProto, rename):
    node.input[:] = [rename(i) for i in node.input]
    node.output[:] = [rename(o) for o in node.output]
    for attr in node.attribute:
        for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            _rename_graph(sub, rename)


def _rename_graph(graph: onnx.GraphProto, rename):
    """A subgraph (If/Loop body): every name through the same map, so outer references still match."""
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = rename(value.name)
    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
    for node in graph.node:
        _rename_node(node, rename)


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                yield from _all_nodes(sub)


def _short(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


class _Errors(logging.Handler):
    """tf2onnx logs why an op is not converted (and carries on): keep those lines for the refusal."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())
