"""`make demo`: train the reference zoo, export every model, check parity, print one table."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

RECURRENT_OPS = ("LSTM", "GRU", "RNN", "Loop", "Scan")


@dataclass(frozen=True)
class DemoRow:
    model: str
    cell: str
    metric: str
    keras: float
    onnx: float
    baseline: float
    worst_abs: float
    ops: str
    size: int
    train_s: float
    export_s: float
    passed: bool


def recurrent_ops(path: Path) -> str:
    """'2 LSTM' style summary of the recurrent ops in an ONNX file."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(path).graph.node:
        if node.op_type in RECURRENT_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return ", ".join(f"{n} {op}" for op, n in counts.items()) or "none"


def export_zoo_model(name: str, out: Path, force: bool) -> DemoRow:
    from rnnedge import zoo
    from rnnedge.exporter import export

    started = time.perf_counter()
    entry = zoo.load(name)
    trained = time.perf_counter() - started
    result = export(entry, out / name, force=force)
    m = result.manifest
    return DemoRow(name, entry.cell, entry.metric, m.task["keras"], m.task["onnx"], m.task["baseline"],
                   result.parity.worst_abs, recurrent_ops(out / name / "model.onnx"),
                   m.variants["fp32"]["size"], trained, m.export_seconds or 0.0, result.passed)


def table(rows: list[DemoRow]) -> Table:
    t = Table(title="rnnedge reference zoo: Keras vs fused ONNX (onnxruntime CPU)")
    for col in ("model", "cell", "metric", "Keras", "ONNX", "baseline", "max |diff|", "recurrent ops", "size",
                "train s", "export s", "parity"):
        t.add_column(col, justify="left" if col in ("model", "cell", "metric", "recurrent ops") else "right")
    for r in rows:
        t.add_row(r.model, r.cell, r.metric, f"{r.keras:.4f}", f"{r.onnx:.4f}", f"{r.baseline:.4f}", f"{r.worst_abs:.1e}",
                  r.ops, f"{r.size / 1024:.1f} KB", f"{r.train_s:.1f}", f"{r.export_s:.1f}",
                  "[green]pass[/]" if r.passed else "[red]FAIL[/]")
    return t


def markdown(rows: list[DemoRow]) -> str:
    lines = ["| model | cell | metric | Keras | ONNX | baseline | max abs diff | recurrent ops | size | export s |",
             "|---|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.cell} | {r.metric} | {r.keras:.4f} | {r.onnx:.4f} | {r.baseline:.4f} | "
                     f"{r.worst_abs:.1e} | {r.ops} | {r.size / 1024:.1f} KB | {r.export_s:.1f} |")
    return "\n".join(lines) + "\n"


def run_demo(out: Path, *, force: bool = False, names: list[str] | None = None, console: Console | None = None) -> bool:
    """Train, export and check every zoo model (or `names`); print the table; True if all pass."""
    from rnnedge import zoo
    from rnnedge.errors import ParityError

    console = console or Console()
    names = list(names or zoo.NAMES)
    rows, failed = [], []
    columns = (TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("zoo", total=len(names))
        for name in names:
            progress.update(task, description=f"train + export {name}")
            try:
                rows.append(export_zoo_model(name, Path(out), force))
            except ParityError as e:
                failed.append(str(e))
            progress.advance(task)
    console.print(table(rows))
    if rows:
        (Path(out) / "ZOO.md").write_text("# Reference zoo, as exported by `make demo`\n\n" + markdown(rows))
    for line in failed:
        console.print(f"[red]parity failed[/]: {line}")
    return not failed and all(r.passed for r in rows)
