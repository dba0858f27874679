"""Open an export folder (`load`) and run whole sequences through it (`Model.run`)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import MODEL, Manifest, TensorSpec
from rnnedge.runtime.inputs import (
    NONFINITE_ADVICE,
    Outputs,
    Slot,
    as_array,
    check_kind,
    check_shape,
    check_values,
    fmt_shape,
    nth,
    ort_run,
    raise_problems,
)
from rnnedge.runtime.placement import Placement, placement_of
from rnnedge.runtime.providers import (
    TRT_SHAPES,
    make_session,
    normalize_provider,
    precision_options,
    provider_options_for,
    resolve_providers,
    session_options,
)
from rnnedge.runtime.stream import Stream
from rnnedge.tables import NUMPY_DTYPES, ORT_DTYPES


def _model_file(folder: Path, manifest: Manifest, variant: str) -> Path:
    if variant in manifest.variants:
        entry = manifest.variants[variant]
        name = entry.get("file") if isinstance(entry, Mapping) else None
        if not name:
            raise RnnEdgeError(f"manifest.json variant {variant!r} names no file; re-export the model")
    elif variant == "fp32":
        name = MODEL
    else:
        have = ", ".join(sorted({"fp32", *manifest.variants}))
        raise RnnEdgeError(f"{folder} has no {variant!r} variant (it has: {have}); "
                           f"make it with `rnnedge quantize {folder}` or pick one of those")
    path = folder / name
    if not path.is_file():
        raise RnnEdgeError(f"{path} is missing: the export folder is incomplete; re-export the model")
    return path


def load(
    folder: str | os.PathLike,
    provider: str | Sequence[str] = "auto",
    *,
    variant: str = "fp32",
    threads: int | None = None,
    provider_options: Mapping[str, Any] | None = None,
    fallback: bool = False,
    trt_shapes: Mapping[str, tuple[int, int, int]] | None = None,
    verify: bool = True,
    precision: str | None = None,
    explain: bool = False,
) -> Model:
    """Open an export folder for inference (numpy + onnxruntime only).

    provider: "auto" (TensorRT, then CUDA, then CPU, among those installed), a name ("cpu",
        "cuda", "tensorrt", "openvino", "qnn", case-insensitive, or onnxruntime's full name), or a
        list of them in order of preference. Plugin providers (OpenVINO, QNN: wheels beside
        onnxruntime) are registered by name. A provider that is not installed, finds no device, or
        does not start, raises RnnEdgeError (with its pip line) unless `fallback=True`, which warns
        and runs on CPU.
    variant: "fp32" (model.onnx) or a key of the manifest's `variants` ("int8", "fp16").
    threads: intra-op threads on CPU (None: onnxruntime's default, all cores; 1 is fastest
        for batch-1 recurrent models).
    provider_options: a flat dict for the first provider (e.g. {"device_id": 1}), or a dict of
        provider name -> options.
    trt_shapes: TensorRT shape ranges per named dynamic axis, (min, opt, max); merged over
        `TRT_SHAPES` = {"batch": (1, 1, 32), "time": (1, 100, 1000)}.
    verify: check the model file's size and sha256 against the manifest first, refusing a changed
        or swapped file in one line (exports made before rnnedge recorded them are not checked).
    precision: the precision the first provider computes in, pinned in its options: OpenVINO "f32"
        (its default here, whatever the CPU), "bf16" or "f16"; QNN "fp16" (HTP). None: the table's default.
    explain: start the session with onnxruntime's verbose log captured, so that `model.placement()`
        gives each refused node's reason (slower to start; nothing reaches the terminal).
    """
    folder = Path(folder)
    manifest = Manifest.load(folder)
    path = _model_file(folder, manifest, variant)
    if verify:
        manifest.verify(folder, [path.name])
    so = session_options(threads)
    auto = isinstance(provider, str) and provider.strip().lower() == "auto"
    names = [provider] if isinstance(provider, str) else list(provider or [])
    first = normalize_provider(names[0]) if names and not auto else None
    if precision is not None and first is not None:
        precision_options(first, precision)  # refused before anything starts, even where it falls back
    chosen = resolve_providers(provider, fallback)
    pinned = precision if chosen[0] == first else None
    shapes = {**TRT_SHAPES, **dict(trt_shapes or {})}
    options = provider_options_for(chosen, provider_options, folder, manifest, shapes, pinned)
    log: list[str] | None = [] if explain else None
    session = make_session(path, so, chosen, options, fallback, auto, log=log)
    model = Model(folder, manifest, session, variant=variant, path=path)
    model.precision = precision_options(model.provider, pinned)[0]
    model.session_log = "".join(log or [])
    return model


class Model:
    """A loaded export folder: `run` whole sequences, `stream` them chunk by chunk.

    inputs / outputs: the manifest's TensorSpecs (data first, then state) in graph order.
    provider: the execution provider that actually runs (first of the session's providers).
    session: the onnxruntime InferenceSession, for anything this class does not cover.

    What a stream builds on (`Stream` uses nothing else of a Model): `slots` (input name -> its
    checks), `data_slots`, `state_slots`; `output_names`, `data_output_names`; `gather` (arguments
    -> arrays by name), `prepare` (every check, arrays ready for onnxruntime), `state_shape` (a
    state's shape for bound axes) and `why_not_streamable`.
    """

    # what a caller that meets non-finite inputs can do (a server's clients cannot pass allow_nonfinite)
    nonfinite_advice = NONFINITE_ADVICE

    def __init__(self, folder: Path, manifest: Manifest, session: ort.InferenceSession, *, variant: str = "fp32",
                 path: Path | None = None):
        self.folder = Path(folder)
        self.path = Path(path) if path is not None else self.folder / MODEL
        self.manifest = manifest
        self.session = session
        self.variant = variant
        self.inputs: list[TensorSpec] = list(manifest.inputs)
        self.outputs: list[TensorSpec] = list(manifest.outputs)
        self.provider: str = session.get_providers()[0]
        self.precision: str = "fp32"  # what the provider was pinned to compute in (`load(precision=)`)
        self.session_log: str = ""  # onnxruntime's verbose log at the session's start (`load(explain=True)`)
        graph_in = session.get_inputs()
        graph_out = session.get_outputs()
        names_in = [t.name for t in self.inputs]
        names_out = [t.name for t in self.outputs]
        if [i.name for i in graph_in] != names_in or [o.name for o in graph_out] != names_out:
            raise RnnEdgeError(
                f"{self.folder}: manifest.json lists inputs {names_in} and outputs {names_out} but the model "
                f"file has {[i.name for i in graph_in]} and {[o.name for o in graph_out]}; re-export the model")
        _check_against_graph(manifest, graph_in, graph_out, self.path.name)
        ort_types = {i.name: i.type for i in graph_in}
        legacy = manifest.format < 2
        self.slots = {t.name: Slot(t, ort_types.get(t.name), legacy, manifest.static.get("time"), manifest.min_steps)
                      for t in self.inputs}
        self.data_slots = [self.slots[t.name] for t in manifest.data_inputs]
        self.state_slots = [self.slots[t.name] for t in manifest.state_inputs]
        self.output_names = names_out
        self.data_output_names = [t.name for t in manifest.data_outputs]

    def placement(self) -> Placement:
        """Which provider runs each node, as onnxruntime recorded it, with each node's Keras layer and,
        for nodes the provider refused, its reason (from the log `load(explain=True)` captured)."""
        return placement_of(self.session, self.manifest.fused_nodes, self.manifest.layers, self.session_log)

    @property
    def name(self) -> str:
        return str(self.manifest.source.get("name") or self.folder.name)

    def __repr__(self) -> str:
        ins = ", ".join(f"{t.name}{fmt_shape(t.shape)}" for t in self.inputs)
        return f"<rnnedge.Model {self.name!r} ({self.variant}) on {self.provider}: {ins}>"

    # -- argument handling -------------------------------------------------------------------

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
            if self.manifest.static and any("must be" in e for e in errors):
                fixed = ",".join(f"{k}={v}" for k, v in self.manifest.static.items())
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

    # -- running ------------------------------------------------------------------------------

    def run(self, *arrays, allow_nonfinite: bool = False, **named) -> Outputs:
        """Run whole sequences: positional arrays are the data inputs in order, or pass them by name.

        State inputs (streaming exports) may be passed by name; those left out start at zero.
        A single dict positional argument is taken as name -> array. Returns every output,
        state outputs included, as `Outputs` in graph order.
        """
        given = self.gather(arrays, named, allow_state=True)
        axes: dict[str, tuple[int, str]] = {}
        feeds = self.prepare(given, allow_nonfinite, axes)
        for slot in self.state_slots:
            if slot.name not in feeds:
                feeds[slot.name] = np.zeros(self.state_shape(slot, axes), slot.dtype)
        for name, a in feeds.items():
            if not a.flags.c_contiguous:
                feeds[name] = np.ascontiguousarray(a)
        values = ort_run(self, lambda: self.session.run(self.output_names, feeds), feeds)
        return Outputs(zip(self.output_names, values), self.provider, self.data_output_names)

    __call__ = run

    def stream(self, batch: int = 1, *, allow_nonfinite: bool = False) -> Stream:
        """A stream of `batch` independent sequences whose state is carried between `push` calls."""
        return Stream(self, batch, allow_nonfinite=allow_nonfinite)

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
        layers = [k for k in {**self.manifest.fused_nodes, **self.manifest.scan_nodes} if "bidirectional" in k.lower()]
        if layers:
            return f"its layer {layers[0]!r} is bidirectional"
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
