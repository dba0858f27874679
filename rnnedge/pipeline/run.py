"""`export`: the pipeline above the stages. It loads the source (exporter.load.source), converts it
(exporter.convert, or the --allow-loop fallback), fixes the interface's axes (convert.interface), shapes it for a
target, takes Keras' outputs as the truth (exporter.truth), writes the golden cases, checks the ONNX
file against them (check), quantizes it if asked (quantize), and writes it all to a temporary
sibling folder that is moved into place only when complete."""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx

from rnnedge.check import ParityReport, Tolerance, check_dir, write_golden
from rnnedge.errors import ParityError, RnnEdgeError
from rnnedge.exporter.convert import (
    OPSET,
    SpliceError,
    UnsupportedLayerError,
    convert,
    fix_axes,
    fix_widths,
    observed_widths,
    share_time,
)
from rnnedge.exporter.fallback import fallback_graph, loop_layers, loop_nodes, loops_refused
from rnnedge.exporter.load.source import load_source, versions
from rnnedge.exporter.load.tfgraph import signature_layer
from rnnedge.exporter.truth import keras_outputs, keras_truth, stateful_layers, zoo_case
from rnnedge.files import atomic_path, discard_dir, new_folder, recover_dir, replace_dir, temp_dir
from rnnedge.manifest import MANIFEST, MODEL, Manifest
from rnnedge.pipeline.target import check_on_target, shaped_for, static_for, target_checked, target_line
from rnnedge.quantize import parse_variants, quantize_dir
from rnnedge.quantize.folder import zoo_scorer
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

    def lines(self) -> list[str]:
        """What `rnnedge export` prints: what was written (fused nodes, Scans, tf2onnx layers, size,
        opset), the interface, each case's parity, the verdict (against which framework)."""
        m = self.manifest
        fused = sum(len(v) for v in m.fused_nodes.values())
        spliced = m.tf2onnx_layers
        graph = onnx.load(str(self.folder / MODEL), load_external_data=False).graph
        via = f", {len(spliced)} layer(s) through tf2onnx ({_names(spliced)})" if spliced and not m.loop_layers else ""
        if m.loop_layers or m.source.get("whole_graph"):  # --allow-loop: tf2onnx's graph of the whole model
            own = sum(n.op_type in ("LSTM", "GRU", "RNN") for n in graph.node)  # tf2onnx fuses some patterns
            loops = f"Loops for {_names(m.loop_layers)}" if m.loop_layers else "no Loop"
            via = f", tf2onnx's whole graph ({own} recurrent node(s) of its own, {loops})"
        truth = m.source.get("truth", {})
        other = truth.get("framework") not in (None, "keras")  # tf_keras, or TensorFlow running a plain SavedModel
        against = f" against {truth['framework']} {truth['version']}" if other else ""
        unrolled = [name for name, route in m.layers.items() if route == "unrolled"]
        via += f", {len(unrolled)} layer(s) unrolled for --target ({_names(unrolled)})" if unrolled else ""
        if truth.get("rebuild"):  # a Keras 2 file tf_keras could not load (or tf_keras missing)
            against = f" (checked against rnnedge's rebuild, not tf_keras: {truth['rebuild']})"
        return [f"wrote {self.folder}: {fused} fused recurrent node(s){_scanned(m)}{via}, "
                f"{m.variants['fp32']['size']} bytes, opset {m.opset}",
                *m.interface_lines({n.name: n.op_type for n in graph.node}),
                *self.parity.case_summaries(), self.parity.summary() + against,
                *([target_line(m.target)] if m.target else [])]


def _scanned(manifest) -> str:
    """", N layer(s) as an exact Scan (names): no fused form for 'gelu'", or "" where none."""
    scans = manifest.scan_layers
    if not scans:
        return ""
    acts = dict.fromkeys(a for n in scans for a in re.findall(r"'([^']+)'", manifest.notes.get(n, "")))
    return f", {len(scans)} layer(s) as an exact Scan ({_names(scans)}: no fused form for {_names(list(acts))})"


def _names(names: list[str], shown: int = 6) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


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
    target: str | None = None,
    custom=None,
) -> ExportResult:
    """Export a Keras model (Keras 3 or tf_keras object, .keras / .h5 path, SavedModel folder or
    `zoo:NAME`) to `out` and verify it against the framework that trained it.

    `opset`: the ONNX opset to write (tables.OPSETS). `static`: {"batch": B, "time": T} (either or
    both) fixes those axes in the graph and the manifest (a streaming export's chunk length), and
    every golden case has those sizes. `target` ("qnn"): what that accelerator runs (exporter/target.py),
    checked on it where its provider is installed. `data`: an .npz of the model's inputs (and
    targets 'y'): up to DATA_ROWS of its sequences become golden cases, and quantization uses it.
    `custom`: the user's classes for loading the file (a .py path, a dotted module path, a module or
    a list of classes; the CLI's `--custom`).
    Raises RnnEdgeError for bad input (nothing written) and ParityError when ONNX and Keras
    disagree (the folder is written, its manifest marked failed).
    """
    opset_checked(opset)
    target_checked(target)
    variants = parse_variants(quantize) if quantize else []
    out = Path(out)
    new_folder(out, force=force, marker=MANIFEST)
    recover_dir(out)
    new_folder(out, force=force, marker=MANIFEST)  # recover_dir may have put back an export left aside
    tmp = temp_dir(out)  # first: a disk that cannot take it is refused before any work, and the lock is held
    try:
        found = load_source(source, unsafe=unsafe, allow_loop=allow_loop, custom=custom)
        model, entry = found.model, found.entry
        started = time.perf_counter()
        looped: list[str] = []
        try:
            if found.whole_graph:  # a plain tf.Module: nothing to fuse, tf2onnx converts all of it
                if streaming:
                    raise RnnEdgeError(f"{found.name}: --streaming needs recurrent layers rnnedge fuses; a plain "
                                       "tf.Module's graph (--allow-loop) cannot carry state across calls")
                proto, converted = fallback_graph(model, f"{found.name}: tf2onnx's graph of its signature", opset)
                looped = [signature_layer(model).name] if loop_nodes(proto) else []
                if looped and not allow_loop:
                    raise RnnEdgeError(loops_refused(found, len(loop_nodes(proto))))
            else:
                converted = convert(model, streaming=streaming, opset=opset)
                proto = converted.onnx_model
        except UnsupportedLayerError as e:
            if not allow_loop or isinstance(e, SpliceError):  # tf2onnx refused that layer already
                raise
            if streaming or stateful_layers(model):
                raise RnnEdgeError(f"{e}; --allow-loop cannot keep state across calls "
                                   "(stateful or --streaming)") from None
            where = f"layer '{e.layer_name}' ({e.layer_type}): --allow-loop fell back to tf2onnx's graph"
            proto, converted = fallback_graph(model, where, opset)
            looped = loop_layers(proto, model)
            warnings.warn(f"{e.layer_name}: {e.reason}; fell back to the plain tf2onnx graph, where "
                          f"{', '.join(looped) or 'no layer'} stayed as Loop", stacklevel=2)

        if target:
            batch = next((s.shape[0] for s in converted.inputs if s.shape and isinstance(s.shape[0], int)), None)
            static = static_for(target, dict(static or {}), batch)
        if static:
            converted, proto = fix_axes(converted, proto, static)
        if target:
            converted, proto = shaped_for(target, converted, proto)
        cases, shared = keras_truth(model, converted, seed, found.truth, data)
        if shared:  # Keras took the inputs at one length only: one shared time axis
            converted, proto = share_time(converted, shared, proto)
        converted, proto = fix_widths(converted, proto, observed_widths(converted, cases))
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
            source={"name": found.name, "sha256": found.sha256, "keras_name": model.name, **found.origin,
                    **_where(found.name), **({"custom": _custom_record(custom)} if _custom_record(custom) else {})},
            versions=versions(),
            fused_nodes=converted.fused_nodes,
            loop_layers=looped,
            layers=converted.layers,
            scan_nodes=converted.scan_nodes,
            notes=converted.notes,
            streaming=any(s.role == "state" for s in converted.inputs),
            time_stride=converted.time_stride,
            min_steps=converted.min_steps,
            variants={"fp32": {"file": MODEL, "size": (tmp / MODEL).stat().st_size}},
            static=dict(static or {}),
        )
        # A stateful layer's masked step before the call's first valid one outputs zeros in Keras
        # (each call starts its "previous output" afresh), so such a model fed in chunks is Keras
        # called chunk by chunk, not Keras on the whole sequence: no chunked comparison for it.
        # A fixed chunk length (--static time) takes whole cases only.
        chunks = {} if not (stateful_layers(model) and any(s.pad_value is not None for s in converted.inputs)
                            or "time" in (static or {})) else {"stream_chunks": []}
        manifest.parity = {"passed": False, "overrides": {k: list(v) for k, v in (overrides or {}).items()}, **chunks}
        manifest.save(tmp)
        report = check_dir(tmp, "cpu", tolerance=tolerance, overrides=overrides or {})
        manifest.parity = {**report.to_dict(), "overrides": {k: list(v) for k, v in (overrides or {}).items()},
                           **chunks, "provider_tolerances": {p: {"atol": a, "rtol": r}
                                                             for p, (a, r) in PROVIDER_TOLERANCE.items()}}
        if target and report.passed:
            manifest.target = check_on_target(target, tmp)
        if entry is not None:
            manifest.task = task_metrics(entry, tmp, static or {})
        manifest.export_seconds = round(time.perf_counter() - started, 3)
        manifest.save(tmp)
        if variants and report.passed:
            evaluate = zoo_scorer(entry, static or {}) if entry is not None else None
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
    if manifest.target.get("checked") and not manifest.target.get("passed"):
        raise ParityError(f"{out}: {target_line(manifest.target)}; files kept for inspection")
    return ExportResult(out, manifest, report)


def task_metrics(entry, folder: Path, static: dict | None = None) -> dict:
    """The zoo model's task metric computed from Keras' and from onnxruntime's outputs (None, with
    a note, where `--static` fixed a length the zoo's test split does not have)."""
    score = zoo_scorer(entry, static or {})
    task = {"metric": entry.metric, "keras": float(entry.keras_score),
            "onnx": float(score(load(folder, provider="cpu"))) if score else None,
            "baseline": float(entry.baseline), "higher_is_better": entry.higher_is_better, "cell": entry.cell,
            "task": entry.task}
    if score is None:
        task["note"] = (f"the zoo's test split has {entry.x_test[0].shape[1]} steps and --static fixed time="
                        f"{static['time']}: the task metric was computed in Keras only")
    return task


def _custom_record(custom) -> list[str]:
    """The --custom modules as the manifest records them (a file's absolute path, a module's name),
    so that reloading the source (bench's Keras baseline) imports them again."""
    items = custom if isinstance(custom, (list, tuple)) else [custom] if custom is not None else []
    out = []
    for item in items:
        if isinstance(item, (str, Path)):
            out.append(str(Path(item).resolve()) if str(item).endswith(".py") or Path(item).exists() else str(item))
        elif hasattr(item, "__name__") and hasattr(item, "__spec__"):  # a module
            out.append(item.__name__)
    return out


def _where(name: str) -> dict:
    """{"path": the source file's absolute path} where it is one, so that `rnnedge bench --baseline`
    finds it from any folder; {} for zoo:NAME and model objects."""
    path = Path(name)
    return {"path": str(path.resolve())} if not name.startswith("zoo:") and path.exists() else {}
