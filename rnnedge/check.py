"""Parity: compare Keras' outputs with onnxruntime's, output by output (states included).

Runs with numpy and onnxruntime only: `rnnedge check DIR` replays `golden.npz` (inputs and
Keras' outputs saved at export time) on any execution provider, where TensorFlow is absent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import GOLDEN, is_time_axis
from rnnedge.runtime import load, run_chunked

ATOL, RTOL = 1e-5, 1e-4
STREAM_CHUNKS = (1, 3)  # streaming exports are also checked fed 1 and 3 steps at a time
# Execution providers that compute differently (cuDNN, TensorRT kernels) get looser defaults.
PROVIDER_TOLERANCE = {
    "CPUExecutionProvider": (ATOL, RTOL),
    "CUDAExecutionProvider": (1e-4, 1e-3),
    "TensorrtExecutionProvider": (1e-3, 1e-2),
}


@dataclass(frozen=True)
class Tolerance:
    atol: float = ATOL
    rtol: float = RTOL

    def __post_init__(self):
        if self.atol < 0 or self.rtol < 0:
            raise RnnEdgeError(f"tolerances must be >= 0, got atol={self.atol}, rtol={self.rtol}")


@dataclass(frozen=True)
class OutputParity:
    """How one output compares; truthy when it passes (|a - e| <= atol + rtol * |e| everywhere)."""

    name: str
    max_abs: float
    mean_abs: float
    max_rel: float
    atol: float
    rtol: float
    passed: bool
    problem: str = ""

    def __bool__(self):
        return self.passed


@dataclass(frozen=True)
class CaseParity:
    case: str
    outputs: tuple[OutputParity, ...]

    @property
    def passed(self) -> bool:
        return all(self.outputs)

    def __bool__(self):
        return self.passed


@dataclass(frozen=True)
class ParityReport:
    provider: str
    cases: tuple[CaseParity, ...]
    tolerance: Tolerance = field(default_factory=Tolerance)
    overrides: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(self.cases)

    def __bool__(self):
        return self.passed

    @property
    def worst_abs(self) -> float:
        return max((o.max_abs for c in self.cases for o in c.outputs), default=float("nan"))

    def failures(self) -> list[str]:
        return [
            f"{c.case}: {o.name} " + (o.problem or f"max |diff| {o.max_abs:.2e} > atol {o.atol:g} + rtol {o.rtol:g}")
            for c in self.cases
            for o in c.outputs
            if not o
        ]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["passed"], d["worst_abs"] = self.passed, self.worst_abs
        for case in d["cases"]:
            case["passed"] = all(o["passed"] for o in case["outputs"])
        return d


def tolerance_for(name: str, default: Tolerance, overrides: dict | None) -> Tolerance:
    over = (overrides or {}).get(name)
    if over is None:
        return default
    return over if isinstance(over, Tolerance) else Tolerance(*over)


def compare(case: str, expected: dict, actual: dict, default: Tolerance = Tolerance(), overrides: dict | None = None) -> CaseParity:
    """Compare every expected output: names first, then shapes, then values; collect every failure."""
    results = []
    for name, want in expected.items():
        tol = tolerance_for(name, default, overrides)
        got = actual.get(name)
        if got is None:
            results.append(OutputParity(name, np.inf, np.inf, np.inf, tol.atol, tol.rtol, False, "is missing from the ONNX outputs"))
            continue
        want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
        if want.shape != got.shape:
            results.append(OutputParity(name, np.inf, np.inf, np.inf, tol.atol, tol.rtol, False,
                                        f"has shape {got.shape}, Keras gives {want.shape}"))
            continue
        diff = np.abs(got - want)
        if diff.size == 0:
            results.append(OutputParity(name, 0.0, 0.0, 0.0, tol.atol, tol.rtol, True))
            continue
        finite = np.isfinite(diff)
        same_nonfinite = bool(np.all((~finite) <= (np.isnan(got) & np.isnan(want)) | (got == want)))
        d = np.where(finite, diff, 0.0)
        rel = d / np.maximum(np.abs(want), 1e-12)
        ok = same_nonfinite and bool(np.all(d <= tol.atol + tol.rtol * np.abs(np.where(finite, want, 0.0))))
        results.append(OutputParity(name, float(d.max()), float(d.mean()), float(rel.max()), tol.atol, tol.rtol, ok,
                                    "" if same_nonfinite else "has NaN or infinity where Keras has none"))
    return CaseParity(case, tuple(results))


def read_golden(folder: str | Path) -> list[tuple[str, dict, dict]]:
    """[(case name, inputs, expected outputs)] from golden.npz."""
    path = Path(folder) / GOLDEN
    if not path.is_file():
        raise RnnEdgeError(f"{folder} has no {GOLDEN}: expected a folder written by `rnnedge export`")
    cases: dict[str, tuple[dict, dict]] = {}
    names: dict[str, str] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            case, kind, name = key.split("/", 2)
            if kind == "name":
                names[case] = str(data[key])
                continue
            cases.setdefault(case, ({}, {}))[0 if kind == "in" else 1][name] = data[key]
    order = sorted(cases, key=lambda c: int(c.removeprefix("case")))
    return [(names.get(c, c), *cases[c]) for c in order]


def write_golden(folder: str | Path, cases: list[tuple[str, dict, dict]]) -> Path:
    arrays = {}
    for i, (name, inputs, outputs) in enumerate(cases):
        arrays[f"case{i}/name/_"] = np.array(name)
        arrays.update({f"case{i}/in/{k}": v for k, v in inputs.items()})
        arrays.update({f"case{i}/out/{k}": v for k, v in outputs.items()})
    path = Path(folder) / GOLDEN
    np.savez_compressed(path, **arrays)
    return path


def check_dir(folder: str | Path, provider: str = "cpu", *, variant: str = "fp32", tolerance: Tolerance | None = None,
              overrides: dict | None = None, fallback: bool = False) -> ParityReport:
    """Replay golden.npz on onnxruntime (no TensorFlow needed) and compare with Keras' outputs.

    Tolerances: `tolerance` if given; else a quantized variant's own (its gate's limit per output,
    recorded by `rnnedge quantize`); else the provider's (PROVIDER_TOLERANCE)."""
    model = load(folder, provider=provider, variant=variant, fallback=fallback)
    manifest = model.manifest
    own = manifest.variants.get(variant, {}).get("tolerance") if variant != "fp32" else None
    if tolerance is None and own:
        # a quantized variant is judged by its own gate's limits (atol per output), not fp32's 1e-5
        tolerance, overrides = Tolerance(max(own.values()), 0.0), {k: (float(v), 0.0) for k, v in own.items()}
    if tolerance is None:
        tolerance = Tolerance(*PROVIDER_TOLERANCE.get(model.provider, (ATOL, RTOL)))
    if overrides is None:
        overrides = {k: tuple(v) for k, v in manifest.parity.get("overrides", {}).items()}
    cases = []
    for name, inputs, expected in read_golden(folder):
        actual = model.run(**inputs)
        cases.append(compare(name, expected, dict(actual), tolerance, overrides))
        if manifest.streaming:
            for chunk in manifest.parity.get("stream_chunks", STREAM_CHUNKS):
                streamed = stream_in_chunks(model, inputs, chunk)
                if streamed is not None:
                    cases.append(compare(f"{name}, streamed in chunks of {chunk}", expected, streamed, tolerance, overrides))
    return ParityReport(model.provider, tuple(cases), tolerance, dict(overrides))


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
    if inputs[data[0].name].shape[1] <= chunk:
        return None
    outputs, state = run_chunked(model, inputs, chunk)
    return {**outputs, **{o.name: state[o.feeds] for o in manifest.state_outputs}}
