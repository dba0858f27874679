"""Benchmark rows as a markdown table, a rich table for the terminal, and a latency plot."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rnnedge.bench.candidates import FLOOR, STREAM_PREFIX
from rnnedge.bench.results import BenchRow, parent_folder, ratio_keys
from rnnedge.errors import RnnEdgeError
from rnnedge.files import atomic_path
from rnnedge.tables import BASELINES, PROVIDERS, label


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 10 else f"{v:.2f}"


_COLUMNS = ("candidate", "provider", "batch", "time", "threads", "p50 ms", "p90 ms", "p99 ms", "seq/s", "steps/s",
            "max diff")


def _cells(r: BenchRow, keys: list[str]) -> list[str]:
    provider = label(r.provider)
    return [r.candidate, provider, str(r.batch), "-" if r.time is None else str(r.time), str(r.threads),
            _ms(r.p50_ms), _ms(r.p90_ms), _ms(r.p99_ms), _rate(r.seq_per_s), _rate(r.steps_per_s),
            "-" if r.error is None else f"{r.error:.1e}",
            *(ratio(r.ratios[k]) if k in r.ratios else "" for k in keys)]


def ratio(v: float) -> str:
    """'1.23x'; below 0.1 two significant digits ('0.0031x': Triton over a socket against the
    in-process runtime), never a '0.00x' that hides how far apart the two are."""
    return f"{v:.2f}x" if v >= 0.1 or v == 0 or v != v else f"{v:.2g}x"


def fastest(rows: Sequence[BenchRow]) -> list[str]:
    """Per case (batch x time) timed on several providers: the fastest candidate at p50, and how many
    times faster it is than each other one ('batch 32, 100 steps: fastest fp32@OpenVINO on OpenVINO, 0.41 ms p50
    (2.10x faster than fp32@CPU)')."""
    cases: dict[tuple, list[BenchRow]] = {}
    for r in rows:
        if r.candidate not in BASELINES:
            cases.setdefault((r.batch, r.time), []).append(r)
    lines = []
    for (batch, steps), group in cases.items():
        if len({r.provider for r in group}) < 2:
            continue
        best = min(group, key=lambda r: r.p50_ms)
        others = ", ".join(f"{r.p50_ms / best.p50_ms if best.p50_ms > 0 else float('inf'):.2f}x faster than "
                           f"{r.candidate}" for r in group if r is not best)
        when = f"batch {batch}" + (f", {steps} steps" if steps is not None else "")
        lines.append(f"{when}: fastest {best.candidate}, {_ms(best.p50_ms)} ms p50 "
                     f"({others})")
    noted = sorted({r.provider for r in rows if r.provider in PROVIDERS and PROVIDERS[r.provider].timing})
    lines += [f"{label(p)}: {PROVIDERS[p].timing}" for p in noted]
    return lines


def markdown(rows: Sequence[BenchRow]) -> str:
    """A GitHub markdown table; "vs X" columns are X's p50 / this p50 (above 1: faster than X)."""
    keys = ratio_keys(rows)
    head = [*_COLUMNS, *(f"vs {k}" for k in keys)]
    align = ["---" if i < 2 else "---:" for i in range(len(head))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cells(r, keys)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


class WholeTable:
    """A rich renderable table whose cells are never cut: each column is as wide as its widest cell
    (headers wrap between words), and where the columns do not fit the console's width (80 when
    piped) they are split into several tables, each repeating the `keys` columns (indices)."""

    def __init__(self, title: str | None, headers: Sequence[str], left: int | Sequence[int] = 1,
                 keys: Sequence[int] = (0,)):
        """`left`: the first N columns, or these indices, are left-aligned (text); the rest right (numbers)."""
        self.title, self.headers, self.keys = title, list(headers), keys
        self.left = set(range(left)) if isinstance(left, int) else set(left)
        self.rows: list[list[str]] = []

    def add_row(self, *cells: str) -> None:
        self.rows.append([str(c) for c in cells])

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def widths(self) -> list[int]:
        from rich.text import Text

        out = []
        for i, head in enumerate(self.headers):
            cells = [Text.from_markup(r[i]).cell_len for r in self.rows]
            out.append(max([*cells, *(len(w) for w in head.split())], default=1))
        return out

    def groups(self, width: int) -> list[list[int]]:
        """Column indices per table: the key columns, then as many others as fit in `width`."""
        widths = self.widths()
        keys = [i for i in self.keys if i < len(widths)]
        used = 1 + sum(widths[i] + 3 for i in keys)  # a border and two padding cells per column
        groups, current, size = [], [], used
        for i in (i for i in range(len(widths)) if i not in keys):
            if current and size + widths[i] + 3 > width:
                groups.append(sorted(keys + current))
                current, size = [], used
            current.append(i)
            size += widths[i] + 3
        return groups + [sorted(keys + current)] if current or not groups else groups

    def tables(self, width: int):
        from rich.table import Table

        widths = self.widths()
        for n, group in enumerate(self.groups(width)):
            table = Table(title=self.title if n == 0 else None, expand=False)
            for i in group:
                table.add_column(self.headers[i], justify="left" if i in self.left else "right", width=widths[i],
                                 overflow="fold")
            for row in self.rows:
                table.add_row(*(row[i] for i in group))
            yield table

    def __rich_console__(self, console, options):
        yield from self.tables(options.max_width)


def rich_table(rows: Sequence[BenchRow], title: str | None = None, model: str | None = None) -> WholeTable:
    """A table of the rows for the terminal (`WholeTable`: numbers never cut): the columns of
    `markdown`, less provider, threads and batch where every row has the same (the title says them)."""
    keys = ratio_keys(rows)
    columns = [*_COLUMNS, *(f"vs {k}" for k in keys)]
    same = {"provider": len({r.provider for r in rows}) == 1, "threads": len({r.threads for r in rows}) == 1,
            "batch": len({r.batch for r in rows}) == 1}
    keep = [i for i, c in enumerate(columns) if not same.get(c)]
    heads = [columns[i] for i in keep]
    table = WholeTable(title or _title(rows, model), heads, left=2 if 1 in keep else 1,
                       keys=[heads.index(c) for c in ("candidate", "batch", "time") if c in heads])
    for r in rows:
        cells = _cells(r, keys)
        table.add_row(*(cells[i] for i in keep))
    return table


def _title(rows: Sequence[BenchRow], model: str | None = None) -> str:
    def listed(values):
        values = list(dict.fromkeys(values))
        return ", ".join(str(v) for v in values)

    providers = listed(label(r.provider) for r in rows)
    return (f"rnnedge bench{' ' + model if model else ''}: {providers}, batch {listed(r.batch for r in rows)}, "
            f"{listed(r.threads for r in rows)} thread(s)")


def _label_ticks(axis, values):
    """Ticks at the measured values only, in plain numbers (log axes otherwise crowd 2x10^1...)."""
    from matplotlib.ticker import NullFormatter

    axis.set_ticks(values, [str(v) for v in values])
    axis.set_minor_formatter(NullFormatter())


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINES = ("-", "--", "-.", ":")
# One colour and marker per candidate, the same in every plot (matplotlib's tab10 by index): rnnedge's
# variants in blues and greens, baselines in warm colours; a streamed variant keeps its variant's.
_STYLE = {"fp32": (0, "o"), "int8": (2, "s"), "fp16": (9, "D"), "ort": (8, "v"),
          "tf2onnx": (1, "^"), "keras": (3, "P"), "litert": (4, "X"), "litert-int8": (6, "*"), FLOOR: (7, "v")}


def candidate_label(candidate: str) -> str:
    """How a plot names a candidate: rnnedge's own variants say so ("rnnedge fp32", "rnnedge fp32,
    streamed"), baselines keep their names ("tf2onnx", "keras"), the floor says what it is."""
    if candidate == FLOOR:
        return "floor (a trivial model)"
    variant = candidate.removeprefix(STREAM_PREFIX)
    if variant in _STYLE and variant not in BASELINES and variant != FLOOR:
        return f"rnnedge {variant}" + (", streamed" if candidate.startswith(STREAM_PREFIX) else "")
    return candidate


def _candidate_style(candidate: str, k: int) -> tuple[str, str]:
    """(colour, marker): the candidate's own from _STYLE, else by its place among the others."""
    colour, marker = _STYLE.get(candidate.removeprefix(STREAM_PREFIX), (k % 10, _MARKERS[k % len(_MARKERS)]))
    return f"C{colour}", marker


def _plain_log_axis(axis) -> None:
    """Ticks at 1, 2 and 5 times each power of ten, written as plain numbers (0.2, 0.5, 1, 2, 5 ms)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _plot_title(rows: Sequence[BenchRow], model: str | None) -> str:
    def listed(values):
        return ", ".join(str(v) for v in dict.fromkeys(values))

    threads = listed(r.threads for r in rows)
    what = f"batch {listed(r.batch for r in rows)}, {threads} thread{'s' if threads != '1' else ''}"
    return f"{model}: p50 latency, {what}" if model else f"p50 latency, {what}"


def plot(rows: Sequence[BenchRow], path: str | os.PathLike, model: str | None = None) -> Path:
    """p50 latency (ms) of every candidate (variants and baselines) against sequence length (against
    batch when one length was timed; bars when one case was), titled with `model`; every candidate
    has its own colour, marker and line style so overlapping lines stay visible, and the legend sits
    outside the axes. Log axes when values span more than 20x. PNG, SVG or PDF by suffix."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RnnEdgeError("plotting needs matplotlib: pip install 'rnnedge[plot]'") from None
    if not rows:
        raise RnnEdgeError("no benchmark rows to plot")
    path = Path(path)
    parent_folder(path)
    fig = Figure(figsize=(8.5, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    times = list(dict.fromkeys(r.time for r in rows))
    batches = list(dict.fromkeys(r.batch for r in rows))
    names = list(dict.fromkeys(r.candidate for r in rows))
    where = {r.candidate: label(r.provider) for r in rows}
    several = len(set(where.values())) > 1

    def name_of(candidate: str) -> str:  # "keras, TensorFlow" where the candidates run in several places
        return f"{candidate_label(candidate)}, {where[candidate]}" if several else candidate_label(candidate)

    def style(k: int) -> dict:  # hollow markers on every other line, so a line under another still shows
        colour, marker = _candidate_style(names[k], k)
        return dict(color=colour, marker=marker, markersize=6 if k % 2 else 7,
                    markerfacecolor="none" if k % 2 else colour, linewidth=1.6)

    stream = any(r.candidate == FLOOR or r.candidate.startswith(STREAM_PREFIX) for r in rows)
    steps = "steps per push" if stream else "sequence length (steps)"
    if len(times) > 1 and None not in times:
        groups = batches if len(batches) > 1 else [None]
        for k, name in enumerate(names):
            for j, b in enumerate(groups):  # one colour and marker per candidate; with batches, a line style each
                pts = sorted((r.time, r.p50_ms) for r in rows if r.candidate == name and b in (None, r.batch))
                text = name_of(name) if b is None else f"{name_of(name)}, batch {b}"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=text,
                        linestyle=_LINES[(j if b is not None else k) % len(_LINES)], **style(k))
        ax.set_xlabel(steps)
        ax.set_xscale("log" if max(times) / min(times) > 20 else "linear")
        _label_ticks(ax.xaxis, sorted(times))
    elif len(batches) > 1:
        for k, name in enumerate(names):
            pts = sorted((r.batch, r.p50_ms) for r in rows if r.candidate == name)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name_of(name),
                    linestyle=_LINES[k % len(_LINES)], **style(k))
        ax.set_xlabel("batch (sequences per call)")
        ax.set_xscale("log" if max(batches) / min(batches) > 20 else "linear")
        _label_ticks(ax.xaxis, sorted(batches))
    else:
        ax.bar([name_of(n) for n in names], [next(r.p50_ms for r in rows if r.candidate == n) for n in names],
               color=[_candidate_style(n, k)[0] for k, n in enumerate(names)])
        ax.tick_params(axis="x", labelrotation=20 if len(names) > 3 else 0)
        if times[0] is not None:
            each = f"{times[0]} step{'s' if times[0] != 1 else ''}{' per push' if stream else ''}"
            ax.set_xlabel(f"candidate ({each}; pass several --time values for latency against length)")
        else:
            ax.set_xlabel("candidate")
    values = [r.p50_ms for r in rows]
    if min(values) > 0 and max(values) / min(values) > 20:
        ax.set_yscale("log")
        _plain_log_axis(ax.yaxis)
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title(_plot_title(rows, model))
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  frameon=False)  # outside the axes: it never covers a line
    with atomic_path(path, result=True) as tmp:  # Ctrl-C or a full disk: no half-written figure
        fig.savefig(tmp, dpi=120, format=path.suffix[1:].lower())
    return path
