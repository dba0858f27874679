"""Walk a Keras 3 functional graph and emit ONNX, one converter per layer type (each declared
where it is defined; registry.py states the rules that route a call)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import keras
import onnx

from rnnedge.errors import RnnEdgeError

# each module imported here declares its converters
from rnnedge.exporter.convert import convlstm, layers, recurrent, registry, splice, temporal, temporal2d  # noqa: F401
from rnnedge.exporter.convert.context import Context, UnsupportedLayerError
from rnnedge.exporter.convert.graph import IR_VERSION, OPSET, GraphBuilder, Sym
from rnnedge.exporter.convert.interface import interface
from rnnedge.exporter.load.keras_api import graph_nodes, has_graph, producer, sequential_graph
from rnnedge.manifest import TensorSpec


@dataclass
class Converted:
    """An ONNX model and the description of its inputs and outputs for the manifest."""

    onnx_model: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    fused_nodes: dict[str, list[str]]
    keras_inputs: list[TensorSpec] | None = None  # the shapes Keras accepts (a streaming export frees the time axis)
    layers: dict[str, str] = dataclasses.field(default_factory=dict)  # layer -> "fused" | "scan" | "native" | "tf2onnx"
    scan_nodes: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # layer -> Scan node names
    notes: dict[str, str] = dataclasses.field(default_factory=dict)  # layer -> why it took its route
    time_stride: int = 1  # streamed chunks must be multiples of this many steps
    min_steps: int = 0  # steps the model's 'valid' windows consume: shorter inputs give no output
    opset: int = OPSET
    ir_version: int = IR_VERSION


def functional_graph(model):
    """The functional graph behind a Keras model (Sequential models keep one once built)."""
    if isinstance(model, keras.Sequential):
        graph = sequential_graph(model)
        if graph is None:
            raise RnnEdgeError(
                f"Sequential model '{model.name}' has no input shape: expected it to start with keras.Input(...) "
                "or to have been built; add an Input layer and export again"
            )
        return graph
    if not has_graph(model):
        raise RnnEdgeError(
            f"model '{model.name}' ({type(model).__name__}) is a subclassed model without a functional graph: "
            "expected a Sequential or functional keras.Model"
        )
    return model


def recurrent_layers(model) -> list:
    """The recurrent layers of a model, nested models included."""
    found = []
    for layer in model.layers:
        if registry.is_recurrent(layer):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(recurrent_layers(layer))
        elif isinstance(layer, keras.layers.TimeDistributed) and registry.is_recurrent(layer.layer):
            found.append(layer.layer)
    return found


def _check_dtype(op):
    policy = getattr(op, "dtype_policy", None)
    if getattr(policy, "compute_dtype", "float32") in ("float16", "bfloat16", "float64"):
        raise UnsupportedLayerError(op, f"it computes in {policy.compute_dtype} (dtype policy {policy.name!r}); "
                                        "rnnedge exports float32 models: rebuild or load it under the float32 policy")


def _route(ctx: Context, op, kwargs) -> registry.Route | None:
    """How `op` is converted (registry.route's rules 1 and 2), its note recorded; None for a nested
    functional model (converted layer by layer). A recurrent layer never goes to tf2onnx."""
    if isinstance(op, keras.Model) and has_graph(op):
        return None
    found = registry.route(op, kwargs.get("mask"))
    if found.refusal:
        raise UnsupportedLayerError(op, found.refusal)
    if found.converter is None and registry.is_recurrent(op):
        raise UnsupportedLayerError(op, f"layer type {type(op).__name__} is not supported by rnnedge's converter")
    if found.note:
        ctx.note(op, found.note)
    return found


def spliced(ctx: Context, op, kwargs) -> bool:
    """True where tf2onnx converts the operation (no converter of ours takes this call)."""
    found = _route(ctx, op, kwargs)
    return found is not None and found.converter is None


def _syms(args) -> list[Sym]:
    return [a for a in keras.tree.flatten(args) if isinstance(a, Sym)]


def convert_layer(ctx: Context, op, args, kwargs, outs) -> list[str]:
    """Convert one Keras operation applied to Syms; returns ONNX names of its flat outputs."""
    found = _route(ctx, op, kwargs)
    if found is None:  # a nested functional model
        graph = functional_graph(op)
        scope, ctx.scope = ctx.scope, f"{ctx.scope}{op.name}/"
        try:
            results = run_graph(ctx, graph, _syms(args))
        finally:
            ctx.scope = scope
        return [r.name for r in results]
    _check_dtype(op)
    syms = _syms(args)
    conv = found.converter
    if ctx.streaming:
        temporal.refuse_overlap(ctx, op, conv and conv.fn, syms)
    if conv is None:
        return splice.convert_run(ctx, [(op, args, kwargs)])
    if ctx.streaming and syms and syms[0].rank >= 2:  # rule 5: a layer over time that needs the whole sequence
        why = conv.stream_refusal(op, syms[0])
        if why:
            ctx.fail_stream(op, why)
    try:
        names = conv.fn(ctx, op, args, kwargs, outs)
    except UnsupportedLayerError as e:
        # Rule 4: a converter that declines an option of its own layer hands it to tf2onnx, and says so.
        if conv.recurrent or isinstance(e, splice.SpliceError) or e.layer_name != op.name or e.streaming:
            raise
        ctx.note(op, f"tf2onnx: {e.reason}")
        return splice.convert_run(ctx, [(op, args, kwargs)])
    if not conv.recurrent:
        ctx.route(op, "native")
    elif op.name in ctx.scans:
        ctx.route(op, "scan", recurrent.scan_note(op))
    else:
        ctx.route(op, "fused")
    rate = max((ctx.book.rates.get(s.name, 1) for s in syms), default=1)
    shortened = max((ctx.book.shortened.get(s.name, 0) for s in syms), default=0)
    for name in names:  # per-step layers keep their input's rate and length; strided and 'valid' ones set their own
        ctx.book.rates.setdefault(name, rate)
        if shortened:
            ctx.book.shortened.setdefault(name, shortened)
    _keep_time_axis(ctx, syms, names)
    return names


def _keep_time_axis(ctx: Context, syms: list[Sym], names: list[str]) -> None:
    """Outputs keep where their inputs hold time, where a layer moved it off axis 1 (a Permute sets its own)."""
    moved = [ctx.book.time_axis[s.name] for s in syms if s.name in ctx.book.time_axis]
    for name in names if moved else ():
        ctx.book.time_axis.setdefault(name, moved[0])


def run_graph(ctx: Context, graph, inputs: list[Sym]) -> list[Sym]:
    """Run the converters over a functional graph in dependency order (as Keras itself does).
    Consecutive operations that go to tf2onnx are held back and converted in one call."""
    values = {id(t): s for t, s in zip(graph.inputs, inputs)}
    nodes = [node for node in graph_nodes(graph) if node.operation and not node.is_input]
    readers: dict[int, list] = {}
    for node in nodes:
        masks = [m for m in keras.tree.flatten(list(_masks(node).values())) if m is not None]
        for t in [*node.arguments.keras_tensors, *masks]:
            readers.setdefault(id(t), []).append(id(node))
    graph_outputs = {id(t) for t in graph.outputs}
    held: list = []

    def flush():
        if not held:
            return
        members = {id(n) for n in held}
        calls, wanted, tensors = [], [], []
        for i, node in enumerate(held):
            calls.append((node.operation, *_arguments(ctx, node, values, held=True)))
            for j, t in enumerate(node.outputs):
                if id(t) in graph_outputs or any(r not in members for r in readers.get(id(t), [])):
                    wanted.append((i, j))
                    tensors.append(t)
        rates = ctx.book.rates
        rate = max((rates.get(s.name, 1) for _, args, kwargs in calls for s in _syms((args, kwargs))), default=1)
        names = splice.convert_run(ctx, calls, wanted)
        for t, name in zip(tensors, names):
            values[id(t)] = Sym(name, tuple(t.shape), str(t.dtype))
            ctx.book.rates.setdefault(name, rate)
        _keep_time_axis(ctx, [s for _, args, kwargs in calls for s in _syms((args, kwargs))], names)
        held.clear()

    for node in nodes:
        op = node.operation
        if spliced(ctx, op, {**node.arguments.kwargs, **_masks(node)}):
            _check_dtype(op)
            if ctx.streaming:
                temporal.refuse_overlap(ctx, op, None, _syms(node.arguments.fill_in(values)[0]))
            for j, t in enumerate(node.outputs):
                values[id(t)] = splice.Pending(len(held), j, tuple(t.shape), str(t.dtype))
            held.append(node)
            continue
        flush()
        names = convert_layer(ctx, op, *_arguments(ctx, node, values), node.outputs)
        if len(names) != len(node.outputs):
            raise AssertionError(f"{op.name}: {len(names)} outputs for {len(node.outputs)}")
        for t, name in zip(node.outputs, names):
            values[id(t)] = Sym(name, tuple(t.shape), str(t.dtype))
    flush()
    return [values[id(t)] for t in graph.outputs]


def _masks(node) -> dict:
    """Masks Keras passes the layer at run time (from its inputs) that its node does not record."""
    return splice.implicit_masks(node.operation, node.arguments.args, node.arguments.kwargs)


def _arguments(ctx: Context, node, values: dict, held: bool = False):
    """The node's call arguments with Keras tensors replaced by their converted values, masks included
    (`held`: for a run given to tf2onnx, which takes results of earlier calls in the run)."""
    args, kwargs = node.arguments.fill_in(values)
    for name, masks in _masks(node).items():
        kwargs[name] = keras.tree.map_structure(
            lambda m: None if m is None else _value(ctx, node, m, values, held), masks)
    return args, kwargs


def _value(ctx: Context, consumer, t, values: dict, held: bool):
    """The converted value of a mask tensor, converting the operations that compute it where no node
    of the graph reads it (so the graph walk did not reach them)."""
    if id(t) not in values:
        node = producer(t)
        if node is None:
            ctx.fail(consumer.operation, "Keras passes it a mask computed outside the model's graph, which rnnedge "
                                         "cannot follow")
        for source in node.arguments.keras_tensors:
            _value(ctx, consumer, source, values, False)
        names = convert_layer(ctx, node.operation, *_arguments(ctx, node, values), node.outputs)
        for out, name in zip(node.outputs, names):
            values[id(out)] = Sym(name, tuple(out.shape), str(out.dtype))
    if isinstance(values[id(t)], splice.Pending) and not held:
        ctx.fail(consumer.operation, "Keras passes it a mask computed by a layer tf2onnx converts in the same "
                                     "run, which rnnedge cannot follow")
    return values[id(t)]


def convert(model, *, streaming: bool = False, name: str | None = None, opset: int = OPSET) -> Converted:
    """Convert a Keras model to ONNX with one fused node per recurrent cell (and direction), at `opset`."""
    from rnnedge.tables import VERSION as __version__

    graph = functional_graph(model)
    over_time = any(len(t.shape) >= 3 for t in graph.inputs)  # convolutional and SVDF-style sequence models
    if not over_time and not recurrent_layers(graph) and not any(splice.recurrent_inside(x) for x in graph.layers):
        raise RnnEdgeError(
            f"model '{model.name}' has no recurrent layer (LSTM, GRU, SimpleRNN, RNN, Bidirectional) and no input "
            "over time ([batch, time, features]): rnnedge exports sequence models; use tf2onnx or keras' own ONNX "
            "export for others"
        )
    ctx = Context(GraphBuilder(name or model.name, opset), streaming=streaming, convert_layer=convert_layer)
    io = interface(graph, streaming=streaming)
    syms = []
    for i, (t, n, shape) in enumerate(zip(graph.inputs, io.input_names, io.input_shapes)):
        ctx.g.add_input(n, str(t.dtype), shape)
        ctx.graph_inputs[n] = i
        syms.append(Sym(n, tuple(t.shape), str(t.dtype)))
    ctx.g.reserve(*io.output_names)
    results = run_graph(ctx, graph, syms)
    if ctx.streaming:
        temporal.refuse_overlap(ctx, graph.layers[-1], None, results)

    outputs = []
    for t, r, n, shape in zip(graph.outputs, results, io.output_names, io.output_shapes):
        ctx.g.add_output(r.name, n, str(t.dtype), shape)
        outputs.append(TensorSpec(n, tuple(shape), str(t.dtype)))
    inputs = [
        TensorSpec(n, tuple(shape), str(t.dtype), **_facts(ctx.annotations.get(n, {})))
        for t, n, shape in zip(graph.inputs, io.input_names, io.input_shapes)
    ]
    keras_inputs = [dataclasses.replace(s, shape=tuple(k)) for s, k in zip(inputs, io.keras_shapes)]
    for io in ctx.book.states:
        ctx.g.add_output(ctx.book.state_outputs[io.output], io.output, "float32", list(io.shape))
        inputs.append(TensorSpec(io.input, io.shape, "float32", role="state", layer=io.layer))
        outputs.append(TensorSpec(io.output, io.shape, "float32", role="state", feeds=io.input, layer=io.layer))
    onnx_model = ctx.g.model("rnnedge", __version__)
    onnx.checker.check_model(onnx_model)
    keras_inputs += [s for s in inputs if s.role == "state"]
    return Converted(onnx_model, inputs, outputs, ctx.fused, keras_inputs, layers=ctx.routes, scan_nodes=ctx.scans,
                     notes=ctx.notes, time_stride=ctx.book.time_stride, min_steps=ctx.book.min_steps, opset=opset,
                     ir_version=onnx_model.ir_version)


def _facts(annotation: dict) -> dict:
    return {k: annotation[k] for k in ("vocab", "pad_value") if k in annotation}
