"""Compare Keras' outputs with another runner's, output by output (states included): names, then
shapes, then values, every failure collected; results are truthy when they pass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from rnnedge.errors import RnnEdgeError
from rnnedge.tables import ATOL, CPU, RTOL, label


@dataclass(frozen=True)
class Tolerance:
    atol: float = ATOL
    rtol: float = RTOL

    def __post_init__(self):
        if not (0 <= self.atol < float("inf") and 0 <= self.rtol < float("inf")):  # NaN fails too
            raise RnnEdgeError(f"tolerances must be finite numbers >= 0, got atol={self.atol}, rtol={self.rtol}")


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
    worst_step: int | None = None  # where the output has a time axis: the step of the largest |diff| (from 1)
    per_step: tuple[float, ...] = field(default=(), repr=False)  # the worst |diff| at each step (not saved)

    def __bool__(self):
        return self.passed

    @property
    def where(self) -> str:
        return "" if self.worst_step is None else f" at step {self.worst_step}"


@dataclass(frozen=True)
class CaseParity:
    case: str
    outputs: tuple[OutputParity, ...]
    steps: int | None = None  # the case's sequence length, where its inputs have a time axis

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
    precision: str = "fp32"  # what the provider was pinned to compute in
    placement: object = field(default=None, repr=False)  # rnnedge.runtime.placement.Placement, where known
    rule: str = ""  # how the tolerance was chosen, where it is not atol + rtol * |expected|

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(self.cases)

    def __bool__(self):
        return self.passed

    @property
    def worst_abs(self) -> float:
        return max((o.max_abs for c in self.cases for o in c.outputs), default=float("nan"))

    def failures(self, worst_first: bool = False) -> list[str]:
        """One line per failing output (`worst_first`: largest |diff| first), with the step where it is largest."""
        failed = [(c, o) for c in self.cases for o in c.outputs if not o]
        if worst_first:
            failed.sort(key=lambda co: -co[1].max_abs)
        return [
            f"{c.case}: {o.name} " + (o.problem or f"max |diff| {o.max_abs:.2e}{o.where}"
                                      + (f" of {c.steps}" if o.worst_step is not None and c.steps else "")
                                      + f" > atol {o.atol:g} + rtol {o.rtol:g}")
            for c, o in failed
        ]

    def summary(self) -> str:
        """'PASS: 10 cases on CPUExecutionProvider, worst |diff| 1.70e-06' (or FAIL)."""
        pinned = f" in {self.precision}" if self.precision != "fp32" else ""
        placement = self.placement
        if placement is not None and placement.nodes and placement.provider != CPU:  # how much ran there
            pinned += f" ({label(placement.provider)} ran {len(placement.on_provider)} of {len(placement.nodes)} nodes)"
        return (f"{'PASS' if self.passed else 'FAIL'}: {len(self.cases)} cases on {self.provider}{pinned}, "
                f"worst |diff| {self.worst_abs:.2e}")

    def case_summaries(self) -> list[str]:
        """One line per case: its length and its worst |diff| (which output, at which step)."""
        width = max((len(c.case) for c in self.cases), default=0)
        lines = []
        for case in self.cases:
            worst = max(case.outputs, key=lambda o: o.max_abs)
            at = f", step {worst.worst_step}" if worst.worst_step is not None else ""
            lines.append(f"  {'ok  ' if case else 'FAIL'} {case.case:<{width}}  {_steps(case.steps)}  worst |diff| "
                         f"{worst.max_abs:.2e} ({worst.name}{at})")
        return lines

    def case_lines(self) -> list[str]:
        """One line per case and output: its length, the worst |diff| and the step where it is."""
        width = max((len(c.case) for c in self.cases), default=0)
        names = max((len(o.name) for c in self.cases for o in c.outputs), default=0)
        lines = []
        for case in self.cases:
            for o in case.outputs:
                at = f"at step {o.worst_step:<5}" if o.worst_step is not None else " " * 14
                lines.append(f"{'ok  ' if o else 'FAIL'} {case.case:<{width}}  {_steps(case.steps)}  "
                             f"{o.name:<{names}}  max|diff| {o.max_abs:.2e} {at} mean {o.mean_abs:.2e}  "
                             f"rel {o.max_rel:.2e}  (atol {o.atol:g}, rtol {o.rtol:g})")
        return lines

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("precision", "placement", "rule"):  # the export's own parity: CPU, fp32; a check records them
            del d[key]
        d["passed"], d["worst_abs"] = self.passed, self.worst_abs
        for case in d["cases"]:
            case["passed"] = all(o["passed"] for o in case["outputs"])
            for o in case["outputs"]:
                del o["per_step"]  # the plot's data, not the manifest's
        return d


def _steps(steps: int | None) -> str:
    return f"{steps:>5} step{'s' if steps != 1 else ' '}" if steps is not None else " " * 11


def parse_tolerances(items: list[str]) -> dict[str, tuple[float, float]]:
    """["NAME=ATOL[,RTOL]", ...] -> per-output tolerance overrides (rtol defaults to RTOL)."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            parts = [float(v) for v in value.split(",")]
            out[name] = (parts[0], parts[1] if len(parts) > 1 else RTOL)
        except (ValueError, IndexError):
            raise RnnEdgeError(f"--tolerance {item!r}: expected OUTPUT=ATOL[,RTOL], e.g. dense=1e-4,1e-3") from None
    return out


def tolerance_for(name: str, default: Tolerance, overrides: dict | None) -> Tolerance:
    over = (overrides or {}).get(name)
    if over is None:
        return default
    return over if isinstance(over, Tolerance) else Tolerance(*over)


def compare(case: str, expected: dict, actual: dict, default: Tolerance = Tolerance(), overrides: dict | None = None,
            *, time_axes: dict[str, int] | None = None, steps: int | None = None) -> CaseParity:
    """Compare every expected output: names first, then shapes, then values; collect every failure.
    `time_axes`: output -> the index of its time axis, for the step where its error is largest."""
    results = []
    for name, want in expected.items():
        tol = tolerance_for(name, default, overrides)
        got = actual.get(name)
        if got is None:
            results.append(OutputParity(name, np.inf, np.inf, np.inf, tol.atol, tol.rtol, False,
                                        "is missing from the ONNX outputs"))
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
        axis = (time_axes or {}).get(name)
        per_step = () if axis is None or axis >= d.ndim else \
            tuple(np.moveaxis(d, axis, 0).reshape(d.shape[axis], -1).max(axis=1).tolist())
        results.append(OutputParity(name, float(d.max()), float(d.mean()), float(rel.max()), tol.atol, tol.rtol, ok,
                                    "" if same_nonfinite else "has NaN or infinity where Keras has none",
                                    int(np.argmax(per_step)) + 1 if per_step else None, per_step))
    return CaseParity(case, tuple(results), steps)
