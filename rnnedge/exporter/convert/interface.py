"""The export's interface, owned here alone: `interface` decides the graph's input and output names
and shapes (dynamic axes named) from the Keras graph; `fix_axes` (--static), `share_time` (inputs
Keras will not take at lengths of their own) and `fix_widths` (the output sizes Keras computes)
rewrite it, in the specs and in the ONNX graph's declared inputs and outputs together. The pipeline
calls the rewrites; the converter and Keras' truth only read."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import onnx

from rnnedge.errors import RnnEdgeError
from rnnedge.exporter.load.keras_api import input_name
from rnnedge.manifest import BATCH, TIME, is_time_axis


def _axis_names(shape, time_name: str) -> list:
    dims = []
    for i, d in enumerate(shape):
        if d is not None:
            dims.append(int(d))
        else:
            dims.append("batch" if i == 0 else time_name if i == 1 else f"{time_name}_dim{i}")
    return dims


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for n in names:
        n = re.sub(r"[^A-Za-z0-9_./:-]", "_", n) or "output"
        if n in seen:
            seen[n] += 1
            n = f"{n}_{seen[n]}"
        else:
            seen[n] = 0
        result.append(n)
    return result


@dataclass(frozen=True)
class Interface:
    """The names and shapes (dynamic axes named) of an export's graph inputs and outputs."""

    input_names: list[str]
    output_names: list[str]
    input_shapes: list[list]  # as the ONNX graph declares them
    keras_shapes: list[list]  # as Keras accepts them (a streaming export frees a fixed time axis)
    output_shapes: list[list]


def interface(graph, *, streaming: bool = False) -> Interface:
    """Inputs follow `graph.inputs`, outputs Keras' flattened outputs; one "time" axis, or one
    "<input>_time" axis per input where several inputs have their own."""
    input_names = _unique([input_name(t) for t in graph.inputs])
    output_names = _unique(list(getattr(graph, "output_names", None)
                                or [f"output_{i}" for i in range(len(graph.outputs))]))
    # A stream takes chunks of any length, so a streaming export frees a fixed time axis too.
    free_time = lambda t: len(t.shape) >= 3 and (t.shape[1] is None or streaming)  # noqa: E731
    dynamic_time = [t for t in graph.inputs if len(t.shape) > 1 and t.shape[1] is None or free_time(t)]
    fixed_steps = {t.shape[1] for t in graph.inputs if free_time(t) and t.shape[1] is not None}
    input_shapes, keras_shapes = [], []
    for t, n in zip(graph.inputs, input_names):
        time_name = "time" if len(dynamic_time) <= 1 else f"{n}_time"
        keras_shapes.append(_axis_names(t.shape, time_name))
        input_shapes.append(_axis_names((t.shape[0], None, *t.shape[2:]) if free_time(t) else t.shape, time_name))
    output_shapes = []
    for t, n in zip(graph.outputs, output_names):
        steps_fixed = len(t.shape) >= 3 and t.shape[1] in fixed_steps
        output_shapes.append(_axis_names((t.shape[0], None, *t.shape[2:]) if steps_fixed else t.shape,
                                         "time" if len(dynamic_time) == 1 else f"{n}_time"))
    return Interface(input_names, output_names, input_shapes, keras_shapes, output_shapes)


def fix_axes(converted, proto: onnx.ModelProto, static: dict[str, int]):
    """The named batch and time axes of every input and output (states too) fixed to `static`'s
    sizes, in the specs and in the graph's declared inputs and outputs."""
    sizes = {**({BATCH: static["batch"]} if "batch" in static else {})}
    fixed_batch = {s.shape[0] for s in converted.inputs if s.shape and isinstance(s.shape[0], int)}
    if "batch" in static and fixed_batch and fixed_batch != {static["batch"]}:
        raise RnnEdgeError(f"--static batch={static['batch']}: this model is stateful with a fixed batch of "
                           f"{fixed_batch.pop()}; leave batch out of --static")
    if "time" in static:
        specs = converted.inputs + converted.outputs
        sizes.update((d, static["time"]) for s in specs for d in s.shape if is_time_axis(d))
        if not any(is_time_axis(d) for s in converted.inputs for d in s.shape):
            raise RnnEdgeError(f"--static time={static['time']}: the model's inputs have no dynamic time axis "
                               "(their length is fixed already); leave time out of --static")

    def fix(specs):
        return [dataclasses.replace(s, shape=tuple(sizes.get(d, d) for d in s.shape)) for s in specs or []]

    for value in [*proto.graph.input, *proto.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in sizes:
                dim.dim_value = sizes[dim.dim_param]  # clears dim_param (one of the two)
    keras_inputs = fix(converted.keras_inputs) if converted.keras_inputs else None
    return dataclasses.replace(converted, inputs=fix(converted.inputs), outputs=fix(converted.outputs),
                               keras_inputs=keras_inputs), proto


def own_time_axes(converted) -> set[str]:
    """The time axes inputs have of their own ("<input>_time"), which `share_time` would join."""
    return {d for s in converted.inputs for d in s.shape if is_time_axis(d) and d != TIME}


def share_time(converted, axes: set[str], proto: onnx.ModelProto | None = None):
    """The inputs' own time `axes` declared as one shared "time" axis (where Keras refuses them at
    different lengths, the model joins them step by step), in the specs and, given `proto`, in its
    declared inputs and outputs. Returns the new specs' Converted (and `proto` where given)."""
    def shared(specs):
        return [dataclasses.replace(s, shape=tuple(TIME if d in axes else d for d in s.shape)) for s in specs]

    converted = dataclasses.replace(converted, inputs=shared(converted.inputs), outputs=shared(converted.outputs),
                                    keras_inputs=shared(converted.keras_inputs or converted.inputs))
    if proto is None:
        return converted
    for value in [*proto.graph.input, *proto.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in axes:
                dim.dim_param = TIME
    return converted, proto


def observed_widths(converted, cases) -> dict[str, tuple]:
    """{output: the fixed sizes Keras computes} where they differ from those it reports: for a
    Bidirectional layer whose backward layer has other units, Keras reports twice the forward
    width. Named (dynamic) axes are left alone."""
    fixed = {}
    for spec in converted.outputs:
        seen = [out[spec.name].shape for _, _, out in cases if spec.name in out]
        if not seen or any(len(s) != len(spec.shape) for s in seen):
            continue
        shape = tuple(d if not isinstance(d, int) or len({s[i] for s in seen}) != 1 else seen[0][i]
                      for i, d in enumerate(spec.shape))
        if shape != tuple(spec.shape):
            fixed[spec.name] = shape
    return fixed


def fix_widths(converted, proto: onnx.ModelProto, fixed: dict[str, tuple]):
    """The outputs' shapes set to `fixed` (observed_widths), in the specs and the graph's outputs."""
    if not fixed:
        return converted, proto
    for value in proto.graph.output:
        if value.name in fixed:
            for dim, size in zip(value.type.tensor_type.shape.dim, fixed[value.name]):
                if isinstance(size, int):
                    dim.dim_value = size
    outputs = [dataclasses.replace(s, shape=fixed.get(s.name, s.shape)) for s in converted.outputs]
    return dataclasses.replace(converted, outputs=outputs), proto
