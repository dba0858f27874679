"""A model's input signature: what the runtime derives from the manifest and the model file's
graph, in one place. Its inputs and outputs in graph order, their roles (data or state), dims,
dtypes and time axes (`Slot`s), the time stride and `min_steps` of strided or 'valid' layers, which
state output feeds which state input, which outputs carry a time axis; and the checks every
input passes against it (`gather`: arguments -> arrays by name, `prepare`: every check).

`Model` runs whole sequences over a session and a signature; `Stream` streams chunks over a
session and a signature. Neither reaches into the other.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import Manifest, TensorSpec, is_time_axis
from rnnedge.runtime.inputs import (
    NONFINITE_ADVICE,
    Slot,
    as_array,
    check_kind,
    check_shape,
    check_values,
    fmt_shape,
    nth,
    raise_problems,
)
from rnnedge.tables import NUMPY_DTYPES, ORT_DTYPES


class Signature:
    """The inputs and outputs of one export's model file, as the manifest and the graph give them.

    inputs / outputs: the manifest's TensorSpecs (data first, then state) in graph order.
    slots: input name -> its checks; data_slots, state_slots; output_names, data_output_names;
    time_outputs: the data outputs with a time axis; time_stride, min_steps, static: from the export.
    nonfinite_advice: what a caller that meets non-finite inputs can do (a server's or a file's
    caller cannot pass allow_nonfinite); settable.
    """

    def __init__(self, folder: Path, manifest: Manifest, graph_in, graph_out, path: Path):
        self.folder = Path(folder)
        self.path = Path(path)
        self.inputs: list[TensorSpec] = list(manifest.inputs)
        self.outputs: list[TensorSpec] = list(manifest.outputs)
        self.nonfinite_advice = NONFINITE_ADVICE
        names_in = [t.name for t in self.inputs]
        names_out = [t.name for t in self.outputs]
        if [i.name for i in graph_in] != names_in or [o.name for o in graph_out] != names_out:
            raise RnnEdgeError(
                f"{self.folder}: manifest.json lists inputs {names_in} and outputs {names_out} but the model "
                f"file has {[i.name for i in graph_in]} and {[o.name for o in graph_out]}; re-export the model")
        _check_against_graph(manifest, graph_in, graph_out, self.path.name)
        ort_types = {i.name: i.type for i in graph_in}
        legacy = manifest.format < 2
        self.static: dict[str, int] = dict(manifest.static)
        self.min_steps = manifest.min_steps
        self.time_stride = int(manifest.time_stride)
        self.slots = {t.name: Slot(t, ort_types.get(t.name), legacy, self.static.get("time"), self.min_steps)
                      for t in self.inputs}
        self.data_slots = [self.slots[t.name] for t in manifest.data_inputs]
        self.state_slots = [self.slots[t.name] for t in manifest.state_inputs]
        self.output_names = names_out
        self.data_output_names = [t.name for t in manifest.data_outputs]
        # state output name -> the state input it feeds (as the manifest says; `state_feeds` checks it)
        self.feeds = {t.name: t.feeds for t in manifest.state_outputs}
        fixed = self.static.get("time")
        self.time_outputs = {t.name for t in manifest.data_outputs if len(t.shape) > 1 and (
            is_time_axis(t.shape[1]) or fixed and len(t.shape) >= 3 and t.shape[1] == fixed)}
        # bidirectional layers, as the manifest names them (fused or Scan): a reason not to stream
        layers = {**manifest.fused_nodes, **manifest.scan_nodes}
        self.bidirectional = [k for k in layers if "bidirectional" in k.lower()]

    # -- arguments -----------------------------------------------------------------------------

    def gather(self, arrays: tuple, named: dict, *, allow_state: bool) -> dict[str, Any]:
        """Positional arrays -> data inputs in order, plus named ones; name errors raised together."""
        if len(arrays) == 1 and not named and isinstance(arrays[0], Mapping):
            arrays, named = (), dict(arrays[0])
        errors: list[str] = []
        given: dict[str, Any] = {}
        data = self.data_slots
        if len(arrays) > len(data):
            errors.append(f"got {len(arrays)} positional arrays but the model takes {len(data)} data input(s) "
                          f"({', '.join(s.name for s in data)})")
        for slot, value in zip(data, arrays):
            given[slot.name] = value
        for name, value in named.items():
            slot = self.slots.get(name)
            if slot is None:
                close = difflib.get_close_matches(name, list(self.slots), n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                errors.append(f"unknown input '{name}': {hint}this model takes {self._describe_inputs()}")
            elif slot.spec.role == "state" and not allow_state:
                errors.append(f"input '{name}' is recurrent state kept by the stream: do not pass it to push(); "
                              "use stream.reset() or stream.load_state()")
            elif name in given:
                errors.append(f"input '{name}' given both positionally and by name")
            else:
                given[name] = value
        for i, slot in enumerate(data, 1):
            if slot.name not in given:
                errors.append(f"missing input '{slot.name}' {slot.describe()}: pass it as the {nth(i)} array "
                              f"or by name ({slot.name}=...)")
        if errors:
            raise_problems(errors)
        return given

    def _describe_inputs(self) -> str:
        data = ", ".join(s.name for s in self.data_slots)
        state = ", ".join(s.name for s in self.state_slots)
        return f"{data} (data)" + (f" and {state} (state, optional)" if state else "")

    def prepare(self, given: dict[str, Any], allow_nonfinite: bool, axes: dict[str, tuple[int, str]],
                one_step: frozenset = frozenset()) -> dict[str, np.ndarray]:
        """Shapes then values; returns arrays ready for onnxruntime. `axes` may hold pre-bound axes;
        `one_step`: inputs a stream was given without their time axis (added back)."""
        errors: list[str] = []
        arrays: dict[str, np.ndarray] = {}
        for name, value in given.items():
            slot = self.slots[name]
            a = value if type(value) is np.ndarray else as_array(name, value, errors)
            if a is None or (a.dtype != slot.dtype and not check_kind(slot, a, errors)):
                continue
            check_shape(slot, a, axes, errors, name in one_step)
            arrays[name] = a
        if errors:
            if self.static and any("must be" in e for e in errors):
                fixed = ",".join(f"{k}={v}" for k, v in self.static.items())
                errors[-1] += f" (exported with --static {fixed}: give those sizes, or re-export without --static)"
            raise_problems(errors)
        feeds: dict[str, np.ndarray] = {}
        for name, a in arrays.items():
            checked = check_values(self.slots[name], a, allow_nonfinite, errors, self.nonfinite_advice)
            if checked is not None:
                feeds[name] = checked
        if errors:
            raise_problems(errors)
        return feeds

    def state_shape(self, slot: Slot, axes: Mapping[str, tuple[int, str]]) -> tuple[int, ...]:
        shape = []
        for d in slot.spec.shape:
            if isinstance(d, str):
                if d not in axes:
                    raise RnnEdgeError(f"state input '{slot.name}' {fmt_shape(slot.spec.shape)} has axis '{d}' "
                                       f"that no data input sets: pass {slot.name}=... explicitly")
                d = axes[d][0]
            shape.append(d)
        return tuple(shape)

    # -- streaming -----------------------------------------------------------------------------

    def state_feeds(self) -> dict[str, str]:
        """State input -> the state output that feeds it; a manifest that does not pair them is refused."""
        feeds_from: dict[str, str] = {}
        for out, feeds in self.feeds.items():
            if feeds not in self.slots or self.slots[feeds].spec.role != "state":
                raise RnnEdgeError(f"manifest.json: state output '{out}' feeds {feeds!r}, which is not a "
                                   "state input; re-export the model")
            feeds_from[feeds] = out
        unfed = [s.name for s in self.state_slots if s.name not in feeds_from]
        if unfed:
            raise RnnEdgeError(f"manifest.json: no state output feeds state input(s) {', '.join(unfed)}; "
                               "re-export the model with `rnnedge export --streaming`")
        return feeds_from

    def why_not_streamable(self) -> str:
        """Why this model has no state to carry, as one line."""
        reason = self._recurrent_directions()
        if reason:
            return (f"the export {self.folder} cannot stream: {reason}, which needs the whole sequence at once; "
                    "only forward-direction recurrent layers can stream, use model.run on whole sequences")
        return (f"the export {self.folder} has no state inputs: re-export it with `rnnedge export --streaming` "
                "to stream it, or use model.run on whole sequences")

    def _recurrent_directions(self) -> str | None:
        """A bidirectional or reversed recurrent layer, from the manifest or else the graph."""
        if self.bidirectional:
            return f"its layer {self.bidirectional[0]!r} is bidirectional"
        try:
            import onnx  # only on this error path: onnx is slow to import
        except ImportError:
            return None
        try:
            graph = onnx.load(str(self.path), load_external_data=False).graph
        except Exception:  # noqa: BLE001 - the explanation is a nicety
            return None
        for node in graph.node:
            if node.op_type in ("LSTM", "GRU", "RNN"):
                for attr in node.attribute:
                    if attr.name == "direction" and attr.s in (b"bidirectional", b"reverse"):
                        label = f" {node.name!r}" if node.name else ""
                        return f"its {node.op_type} node{label} runs {attr.s.decode()}"
            if node.op_type == "Scan":  # a recurrent layer exported as a Scan: reversed scan inputs
                for attr in node.attribute:
                    if attr.name == "scan_input_directions" and any(attr.ints):
                        return f"its Scan node{f' {node.name!r}' if node.name else ''} runs reverse"
        return None


_KINDS = {"f": "float", "i": "int", "u": "int", "b": "bool"}


def _kind(np_type) -> str | None:
    return _KINDS.get(np.dtype(np_type).kind) if np_type is not None else None


def _check_against_graph(manifest: Manifest, graph_in, graph_out, file: str) -> None:
    """The manifest's data inputs/outputs against the model file's: element kind, rank and the
    sizes both fix. A hand-edited manifest would otherwise shape inputs wrongly or pass checks
    it should fail. Kinds, not exact types: an fp16 variant may take float16 where the manifest
    says float32; named axes are not compared (the graph's names may differ)."""
    for side, specs, graph, verb in (("input", manifest.data_inputs, graph_in, "takes"),
                                     ("output", manifest.data_outputs, graph_out, "gives")):
        by_name = {g.name: g for g in graph}
        for spec in specs:
            g = by_name.get(spec.name)
            if g is not None and not _agrees(spec, g):
                ort_type = ORT_DTYPES.get(g.type)
                found = f"{_fmt_dims(g.shape)} {np.dtype(ort_type) if ort_type is not None else g.type}"
                raise RnnEdgeError(f"manifest.json says {side} '{spec.name}' is {_fmt_dims(spec.shape)} {spec.dtype}, "
                                   f"{file} {verb} {found}: the manifest was edited; re-export the model")


def _agrees(spec: TensorSpec, g) -> bool:
    shape = list(g.shape) if g.shape is not None else None
    if _kind(NUMPY_DTYPES.get(spec.dtype)) != _kind(ORT_DTYPES.get(g.type)):
        return False
    if shape is None:
        return True  # a graph without shape information: nothing more to compare
    if len(shape) != len(spec.shape):
        return False
    return all(not (isinstance(m, int) and isinstance(d, int)) or m == d for m, d in zip(spec.shape, shape))


def _fmt_dims(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in (shape or [])) + "]"
