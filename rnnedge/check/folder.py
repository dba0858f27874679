"""Replay an export folder's golden data on onnxruntime, whole and streamed in chunks, or on any
runner (a name and `run(feeds) -> outputs`), and compare with Keras."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnedge.check.compare import ParityReport, Tolerance, compare
from rnnedge.check.golden import read_golden
from rnnedge.manifest import GOLDEN, MODEL, is_time_axis
from rnnedge.runtime import load, run_chunked
from rnnedge.tables import PROVIDERS, RANGE_SHARE, label, tolerance_of

STREAM_CHUNKS = (1, 3)  # streaming exports are also checked fed 1 and 3 steps (times the time stride) at a time


def check_dir(folder: str | Path, provider: str = "cpu", *, variant: str = "fp32", tolerance: Tolerance | None = None,
              overrides: dict | None = None, fallback: bool = False, atol: float | None = None,
              rtol: float | None = None, verify: bool = True, precision: str | None = None,
              threads: int | None = None) -> ParityReport:
    """Replay golden.npz on onnxruntime (no TensorFlow needed) and compare with Keras' outputs.

    Tolerances: `tolerance` if given; else a quantized variant's own (its gate's limit per output,
    recorded by `rnnedge quantize`); else, on a provider that computes in fp16 or lower (QNN's HTP,
    OpenVINO asked for bf16/f16), the variants' gate: RANGE_SHARE of each output's range in the
    golden outputs; else the provider's (`tables.PROVIDERS`). `atol` / `rtol` replace one part of
    that default and keep the other (`rnnedge check --atol X`).
    `precision`: pinned on the provider (`load(precision=)`); the report carries it and the
    placement onnxruntime recorded (which node ran where, and why not on the provider).
    `verify`: refuse a model or golden file whose sha256 differs from the manifest's. `threads`: the
    session's intra-op threads on CPU (onnxruntime's default, every core, when None)."""
    model = load(folder, provider=provider, variant=variant, fallback=fallback, verify=verify, precision=precision,
                 explain=True, threads=threads)
    manifest = model.manifest
    if verify:
        manifest.verify(folder, [GOLDEN])
    own = manifest.variants.get(variant, {}).get("tolerance") if variant != "fp32" else None
    rule = ""
    if tolerance is None and own and atol is None and rtol is None:
        # a quantized variant is judged by its own gate's limits (atol per output), not fp32's 1e-5
        tolerance, overrides = Tolerance(max(own.values()), 0.0), {k: (float(v), 0.0) for k, v in own.items()}
    if tolerance is None and atol is None and rtol is None and below_fp32(model.provider, model.precision):
        limits = range_limits(folder, manifest)
        tolerance = Tolerance(max(limits.values(), default=0.0), 0.0)
        overrides = {k: (v, 0.0) for k, v in limits.items()}
        rule = (f"{label(model.provider)} computes in {model.precision}: max |diff| <= {RANGE_SHARE:.0%} of each "
                "output's range in Keras' golden outputs (the quantized variants' gate)")
    if tolerance is None:
        default_atol, default_rtol = tolerance_of(model.provider)
        tolerance = Tolerance(default_atol if atol is None else atol, default_rtol if rtol is None else rtol)
    if overrides is None:
        overrides = {k: tuple(v) for k, v in manifest.parity.get("overrides", {}).items()}
    cases = []
    where = time_axes(manifest)
    for name, inputs, expected in read_golden(folder):
        actual = model.run(**inputs)
        steps = case_steps(manifest, inputs)
        cases.append(compare(name, expected, dict(actual), tolerance, overrides, time_axes=where, steps=steps))
        if manifest.streaming:
            for chunk in manifest.parity.get("stream_chunks", STREAM_CHUNKS):
                chunk *= manifest.time_stride  # strided layers stream chunks that keep their stride in phase
                streamed = stream_in_chunks(model, inputs, chunk)
                if streamed is not None:
                    cases.append(compare(f"{name}, streamed in chunks of {chunk}", expected, streamed, tolerance,
                                         overrides, time_axes=where, steps=steps))
    return ParityReport(model.provider, tuple(cases), tolerance, dict(overrides), precision=model.precision,
                        placement=model.placement(), rule=rule)


def below_fp32(provider: str, precision: str) -> bool:
    """The provider computes in fp16 or lower: QNN's HTP, OpenVINO asked for bf16 or f16."""
    entry = PROVIDERS.get(provider)
    return bool(entry and entry.range_gate) or precision.lower() not in ("fp32", "f32")


def range_limits(folder, manifest) -> dict[str, float]:
    """Output -> RANGE_SHARE of its range over every golden case (1e-6 at least: a constant output)."""
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for _, _, expected in read_golden(folder):
        for name, value in expected.items():
            value = np.asarray(value, dtype=np.float64)
            if value.size and np.isfinite(value).all():
                low[name] = min(low.get(name, np.inf), float(value.min()))
                high[name] = max(high.get(name, -np.inf), float(value.max()))
    return {name: max(RANGE_SHARE * (high[name] - low[name]), 1e-6) for name in low}


def record_check(folder: str | Path, report: ParityReport, verified: bool = True) -> str:
    """Record a check on a provider in the folder's manifest (`providers`, keyed by provider and
    precision), under the folder's lock as `rnnedge quantize` changes it: precision, max |diff| per
    output, the tolerance, pass, the placement summary, onnxruntime's and the plugin's versions.
    `verified`: the files were checked against the manifest (else their recorded checksums stay).
    Returns the key it wrote."""
    from rnnedge.files import changing
    from rnnedge.manifest import Manifest
    from rnnedge.runtime.providers import provider_versions

    folder = Path(folder)
    worst: dict[str, float] = {}
    for case in report.cases:
        for o in case.outputs:
            worst[o.name] = max(worst.get(o.name, 0.0), float(o.max_abs))
    placement = report.placement
    entry = {
        "provider": report.provider, "precision": report.precision, "passed": report.passed,
        "cases": len(report.cases), "max_abs_error": worst,
        "tolerance": {"atol": report.tolerance.atol, "rtol": report.tolerance.rtol,
                      "per_output": {k: list(v) for k, v in report.overrides.items()}},
        "rule": report.rule or "atol + rtol * |expected|",
        "placement": {"summary": placement.summary(), **placement.to_dict()} if placement is not None else None,
        "versions": provider_versions(report.provider),
    }
    key = f"{report.provider} {report.precision}"
    with changing(folder):
        manifest = Manifest.load(folder)
        manifest.providers[key] = entry
        manifest.save(folder, () if verified else (MODEL, GOLDEN))
    return key


def _time_index(spec, manifest) -> int | None:
    """Where `spec`'s time axis is: a named one, or dimension 1 of a sequence (rank 3, or token ids)
    where `--static time=T` fixed it to T."""
    fixed = manifest.static.get("time")
    for i, d in enumerate(spec.shape[1:], 1):
        sequence = len(spec.shape) >= 3 or spec.dtype.startswith("int")
        if is_time_axis(d) or (fixed and i == 1 and d == fixed and sequence):
            return i
    return None


def time_axes(manifest) -> dict[str, int]:
    """Output -> the index of its time axis, for outputs that have one (sequences, not states)."""
    return {s.name: i for s in manifest.outputs if s.role == "data"
            for i in [_time_index(s, manifest)] if i is not None}


def case_steps(manifest, inputs: dict) -> int | None:
    """A case's sequence length: the longest time axis among its data inputs (None without one)."""
    lengths = [inputs[s.name].shape[i] for s in manifest.data_inputs if s.name in inputs
               for i in [_time_index(s, manifest)] if i is not None and i < inputs[s.name].ndim]
    return max(lengths, default=None)


def check_runner(runner, folder: str | Path, tolerance: Tolerance | None = None, verify: bool = True) -> ParityReport:
    """Replay golden.npz on any runner (`runner.name`, `runner.run(feeds) -> {output: array}`: the
    tf2onnx graph, Keras, LiteRT, a server) and compare its data outputs with Keras'. A runner
    takes the data inputs only: cases that start from a non-zero state are left out.
    `verify`: refuse a golden file whose sha256 differs from the manifest's."""
    from rnnedge.manifest import Manifest

    manifest = Manifest.load(folder)
    if verify:
        manifest.verify(folder, [GOLDEN])
    tolerance = tolerance or Tolerance(*tolerance_of(getattr(runner, "provider", "CPUExecutionProvider")))
    data = [s.name for s in manifest.data_inputs]
    states = [s.name for s in manifest.state_inputs]
    outputs = [s.name for s in manifest.data_outputs]
    cases = []
    for name, inputs, expected in read_golden(folder):
        if any(inputs[s].any() for s in states if s in inputs):
            continue
        actual = runner.run({n: inputs[n] for n in data})
        cases.append(compare(name, {k: expected[k] for k in outputs}, actual, tolerance,
                             time_axes=time_axes(manifest), steps=case_steps(manifest, inputs)))
    return ParityReport(runner.name, tuple(cases), tolerance, {})


def stream_in_chunks(model, inputs: dict, chunk: int) -> dict | None:
    """Outputs of a streaming model fed `chunk` steps at a time with its state carried: sequence
    outputs concatenated in time, other outputs from the last chunk, states at the end.
    None where the case cannot be streamed (inputs without a time axis or with time axes of
    their own, or too few steps)."""
    manifest = model.manifest
    data = manifest.data_inputs
    if not data or any(len(s.shape) < 2 or not is_time_axis(s.shape[1]) for s in data):
        return None
    if len({s.shape[1] for s in data}) > 1:  # inputs with time axes of their own: no common chunking
        return None
    steps = inputs[data[0].name].shape[1]
    if steps <= chunk or steps % manifest.time_stride:  # too short, or a length the stream cannot take
        return None
    outputs, state = run_chunked(model, inputs, chunk)
    return {**outputs, **{o.name: state[o.feeds] for o in manifest.state_outputs}}
