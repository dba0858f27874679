"""`export`: the Keras model converted, checked against Keras, quantized if asked, written to a
temporary sibling folder and moved into place only when complete."""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import onnx

from rnnedge.check import ParityReport, Tolerance, check_dir, write_golden
from rnnedge.errors import ParityError, RnnEdgeError
from rnnedge.exporter.baselines import _loop_layers, tf2onnx_export
from rnnedge.exporter.convert import UnsupportedLayerError, convert, functional_graph
from rnnedge.exporter.convert.core import Converted, interface
from rnnedge.exporter.convert.graph import OPSET
from rnnedge.exporter.convert.splice import TF2ONNX_OPSET, SpliceError
from rnnedge.exporter.source import load_keras, versions
from rnnedge.exporter.truth import _keras_truth, _stateful_layers, keras_outputs, zoo_case
from rnnedge.files import atomic_path, discard_dir, recover_dir, replace_dir, temp_dir
from rnnedge.manifest import BATCH, MANIFEST, MODEL, Manifest, TensorSpec, is_time_axis
from rnnedge.quantize import parse_variants, quantize_dir
from rnnedge.runtime import load
from rnnedge.tables import PROVIDER_TOLERANCE, opset_checked


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    manifest: Manifest
    parity: ParityReport

    @property
    def passed(self) -> bool:
        return self.parity.passed


def export(
    source,
    out: str | Path,
    *,
    force: bool = False,
    streaming: bool = False,
    allow_loop: bool = False,
    unsafe: bool = False,
    tolerance: Tolerance = Tolerance(),
    overrides: dict | None = None,
    seed: int = 0,
    quantize=(),
    data: str | Path | None = None,
    metric: str | None = None,
    opset: int = OPSET,
    static: dict[str, int] | None = None,
) -> ExportResult:
    """Export a Keras model (object, .keras path or `zoo:NAME`) to `out` and verify it against Keras.

    `opset`: the ONNX opset to write (tables.OPSETS). `static`: {"batch": B, "time": T} (either or
    both) fixes those axes in the graph and the manifest (a streaming export's chunk length), and
    every golden case has those sizes. `data`: an .npz of the model's inputs (and
    targets 'y'): up to DATA_ROWS of its sequences become golden cases, and quantization uses it.
    Raises RnnEdgeError for bad input (nothing written) and ParityError when ONNX and Keras
    disagree (the folder is written, its manifest marked failed).
    """
    opset_checked(opset)
    variants = parse_variants(quantize) if quantize else []
    out = Path(out)
    _refuse_out(out)
    recover_dir(out)
    if out.exists() and not out.is_dir():
        raise RnnEdgeError(f"{out} exists and is not a folder; choose another --out")
    if out.exists() and not force:
        raise RnnEdgeError(f"{out} already exists; pass --force to overwrite it")
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise RnnEdgeError(f"{out} is not an export folder (no manifest.json): --force replaces only exports; "
                           "move it away yourself, or choose another --out")
    tmp = temp_dir(out)  # first: a disk that cannot take it is refused before any work, and the lock is held
    try:
        model, source_name, sha256, entry = load_keras(source, unsafe=unsafe)
        started = time.perf_counter()
        loop_layers: list[str] = []
        try:
            converted = convert(model, streaming=streaming, opset=opset)
            proto = converted.onnx_model
        except UnsupportedLayerError as e:
            if not allow_loop or isinstance(e, SpliceError):  # tf2onnx refused that layer already
                raise
            if streaming or _stateful_layers(model):
                raise RnnEdgeError(f"{e}; --allow-loop cannot keep state across calls (stateful or --streaming)") from None
            proto, converted = _fallback(model, opset)
            loop_layers = _loop_layers(proto, model)
            warnings.warn(f"{e.layer_name}: {e.reason}; fell back to the plain tf2onnx graph, where "
                          f"{', '.join(loop_layers) or 'no layer'} stayed as Loop", stacklevel=2)

        if static:
            converted, proto = _fix_axes(converted, proto, static)
        cases, converted, proto = _keras_truth(model, converted, proto, seed, data)
        with atomic_path(tmp / MODEL) as path:
            onnx.save(proto, str(path))
        if entry is not None and not static:  # the zoo's rows have their own batch and length
            name, feeds = zoo_case(entry, converted)
            cases.append((name, feeds, keras_outputs(model, converted, feeds)))
        write_golden(tmp, cases)
        manifest = Manifest(
            inputs=converted.inputs,
            outputs=converted.outputs,
            opset=converted.opset,
            ir_version=proto.ir_version,
            source={"name": source_name, "sha256": sha256, "keras_name": model.name},
            versions=versions(),
            fused_nodes=converted.fused_nodes,
            loop_layers=loop_layers,
            layers=converted.layers,
            streaming=any(s.role == "state" for s in converted.inputs),
            variants={"fp32": {"file": MODEL, "size": (tmp / MODEL).stat().st_size}},
            static=dict(static or {}),
        )
        # A stateful layer's masked step before the call's first valid one outputs zeros in Keras
        # (each call starts its "previous output" afresh), so such a model fed in chunks is Keras
        # called chunk by chunk, not Keras on the whole sequence: no chunked comparison for it.
        # A fixed chunk length (--static time) takes whole cases only.
        chunks = {} if not (_stateful_layers(model) and any(s.pad_value is not None for s in converted.inputs)
                            or "time" in (static or {})) else {"stream_chunks": []}
        manifest.parity = {"passed": False, "overrides": {k: list(v) for k, v in (overrides or {}).items()}, **chunks}
        manifest.save(tmp)
        report = check_dir(tmp, "cpu", tolerance=tolerance, overrides=overrides or {})
        manifest.parity = {**report.to_dict(), "overrides": {k: list(v) for k, v in (overrides or {}).items()}, **chunks,
                           "provider_tolerances": {p: {"atol": a, "rtol": r} for p, (a, r) in PROVIDER_TOLERANCE.items()}}
        if entry is not None:
            manifest.task = task_metrics(entry, tmp)
        manifest.export_seconds = round(time.perf_counter() - started, 3)
        manifest.save(tmp)
        if variants and report.passed:
            evaluate = (lambda m: entry.score(m.run(*entry.x_test).data)) if entry is not None else None
            quantize_dir(tmp, variants, evaluate=evaluate, data=data, metric=metric)
            manifest = Manifest.load(tmp)
        replace_dir(tmp, out, force=force)
    except BaseException:
        discard_dir(tmp)
        raise
    if not report.passed:
        worst = "; ".join(report.failures(worst_first=True)[:3])
        raise ParityError(f"{out}: ONNX does not match Keras (worst first: {worst}); "
                          f"files kept for inspection, manifest marked failed")
    return ExportResult(out, manifest, report)


def task_metrics(entry, folder: Path) -> dict:
    """The zoo model's task metric computed from Keras' and from onnxruntime's outputs."""
    model = load(folder, provider="cpu")
    outputs = model.run(*entry.x_test)
    return {"metric": entry.metric, "keras": float(entry.keras_score), "onnx": float(entry.score(outputs.data)),
            "baseline": float(entry.baseline), "higher_is_better": entry.higher_is_better, "cell": entry.cell,
            "task": entry.task}


def _fallback(model, opset: int):
    """tf2onnx's graph, described with the same input/output specs as a fused export would have."""
    proto = tf2onnx_export(model, opset=min(opset, TF2ONNX_OPSET))
    graph = functional_graph(model)
    io = interface(graph)
    inputs = [TensorSpec(n, tuple(shape), str(t.dtype)) for t, n, shape in zip(graph.inputs, io.input_names, io.input_shapes)]
    outputs = [TensorSpec(n, tuple(shape), str(t.dtype)) for t, n, shape in zip(graph.outputs, io.output_names, io.output_shapes)]
    routes = {layer.name: "tf2onnx" for layer in graph.layers if not isinstance(layer, keras.layers.InputLayer)}
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return proto, Converted(proto, inputs, outputs, {}, layers=routes, opset=opset, ir_version=proto.ir_version)


def _fix_axes(converted: Converted, proto, static: dict[str, int]):
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


def _refuse_out(out: Path) -> None:
    """--out must name a folder of its own: not '.', '..', '/', nor a folder holding the current one."""
    resolved = out.resolve()
    if out.name in ("", ".", "..") or resolved == Path(resolved.anchor) or Path.cwd().is_relative_to(resolved):
        raise RnnEdgeError(f"--out {out}: expected a new folder for the export (e.g. --out exported/model), "
                           "not the current folder or one above it")

