"""The error against the time step: for each output with a time axis, the worst |diff| at each
step, one line per case length (cases of one length merged by their worst), on log axes, with
the tolerance beside it; for each output without one, the worst |diff| against the case length.
matplotlib (the `plot` extra) only, imported when called."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rnnedge.check.compare import ParityReport
from rnnedge.errors import RnnEdgeError
from rnnedge.files import atomic_path


def error_curves(report: ParityReport) -> dict[str, dict[int, np.ndarray]]:
    """output -> {case length: the worst |diff| at each step over the cases of that length}."""
    curves: dict[str, dict[int, np.ndarray]] = {}
    for case in report.cases:
        for o in case.outputs:
            if not o.per_step:
                continue
            steps = np.asarray(o.per_step)
            by_length = curves.setdefault(o.name, {})
            seen = by_length.get(len(steps))
            by_length[len(steps)] = steps if seen is None else np.maximum(seen, steps)
    return curves


def length_errors(report: ParityReport) -> dict[str, dict[int, float]]:
    """For outputs without a time axis (a last step, a class): output -> {case length: the worst
    |diff| over the cases of that length}; cases without a length are left out."""
    points: dict[str, dict[int, float]] = {}
    for case in report.cases:
        for o in case.outputs:
            if o.per_step or case.steps is None or not np.isfinite(o.max_abs):
                continue
            by_length = points.setdefault(o.name, {})
            by_length[case.steps] = max(by_length.get(case.steps, 0.0), float(o.max_abs))
    return points


def plot_errors(report: ParityReport, path: str | os.PathLike, title: str = "") -> Path:
    """Write the error-against-step figure for `report` (PNG, SVG or PDF by suffix): one panel per
    output, steps counted from 1 on a log axis, the worst step of each length marked, atol dashed.
    An output without a time axis (the last step's, a class) gets its worst |diff| against the
    case's length instead. Values far below the tolerance (saturated outputs agree to 1e-13) and
    exact zeros (a log axis has no 0) sit on the axis' floor, 1e-4 of atol, so the decades that
    matter fill the panel."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    except ImportError:
        raise RnnEdgeError("--plot needs matplotlib: pip install 'rnnedge[plot]'") from None
    curves, points = error_curves(report), length_errors(report)
    if not curves and not points:
        raise RnnEdgeError("no case has a time axis: there is no error against the time step or the sequence length "
                           "to plot")
    path = Path(path)
    lengths = sorted({n for by_length in curves.values() for n in by_length} | {n for p in points.values() for n in p})
    colour = {n: f"C{k % 10}" for k, n in enumerate(lengths)}  # one colour per length in every panel
    atol = {o.name: o.atol for c in report.cases for o in c.outputs}
    fig = Figure(figsize=(8.5, 1.0 + 2.9 * (len(curves) + len(points))), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(curves) + len(points), 1, squeeze=False, sharex=True)[:, 0]
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    floors = {}
    for ax, (name, by_length) in zip(axes[len(curves):], points.items()):  # outputs without a time axis
        floors[name] = floor = min([atol[name] * 1e-4, *(v / 10 for v in by_length.values() if v > 0)])
        x = sorted(by_length)
        ax.plot(x, [max(by_length[n], floor) for n in x], color="0.2", marker="o", linewidth=1,
                label="worst of the cases of each length")
        ax.set_xlabel("the case's length (steps): this output has no time axis")
    for ax, (name, by_length) in zip(axes, curves.items()):
        floors[name] = floor = min([atol[name] * 1e-4, *(c.max() / 10 for c in by_length.values() if c.max() > 0)])
        for n in lengths:
            if n not in by_length:
                continue
            y = np.maximum(by_length[n], floor)  # exact zeros too: on the floor, not left out
            x = np.arange(1, n + 1)
            worst = int(np.argmax(by_length[n]))
            ax.plot(x, y, color=colour[n], linewidth=1.3 if n > 1 else 0, marker="o" if n == 1 else None,
                    label=f"{n} step{'s' if n != 1 else ''} (worst {by_length[n][worst]:.1e} at step {worst + 1})")
            ax.plot([x[worst]], [y[worst]], "o", color=colour[n], markersize=5)
    for ax, name in zip(axes, [*curves, *points]):
        ax.axhline(atol[name], color="0.35", linestyle="--", linewidth=1, label=f"atol {atol[name]:g}")
        ax.set_yscale("log")
        ax.set_ylim(bottom=floors[name] / 1.5)
        ax.set_xscale("log")
        ax.set_ylabel("worst |diff|")
        ax.set_title(name, fontsize="medium", loc="left")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    if not points:
        axes[-1].set_xlabel("time step (from 1)")
    axes[-1].set_xlim(0.8, max(lengths) * 1.25)
    fig.suptitle(title or f"worst |diff| against the time step (or the length), {report.provider}")
    with atomic_path(path, result=True) as tmp:  # Ctrl-C or a full disk: no half-written figure
        fig.savefig(tmp, dpi=120, format=Path(path).suffix[1:].lower())
    return path
