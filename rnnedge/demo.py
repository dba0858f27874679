"""`make demo`: train the reference zoo, export every model, check parity, benchmark; say where
everything went and end with the zoo's table."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rnnedge.files import write_text
from rnnedge.tables import BASELINES
from rnnedge.tables import VARIANTS as ALL_VARIANTS

RECURRENT_OPS = ("LSTM", "GRU", "RNN", "Loop", "Scan")


VARIANTS = tuple(v for v in ALL_VARIANTS if v != "fp32")
PLOT_MODEL, PLOT_TIMES = "events-gru", (16, 100, 400)  # the zoo model timed over sequence lengths


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
    streaming: bool
    size: int
    train_s: float
    export_s: float
    passed: bool
    variants: dict  # variant -> {"size", "metric", "gate"}


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
    from rnnedge.exporter.convert import UnsupportedLayerError
    from rnnedge.pipeline import export

    started = time.perf_counter()
    entry = zoo.load(name)
    trained = time.perf_counter() - started
    try:  # streamable wherever the model allows it (stream-capable exports still run whole sequences)
        result = export(entry, out / name, force=force, quantize=VARIANTS, streaming=True)
    except UnsupportedLayerError:  # Bidirectional, or a decoder whose state comes from its encoder
        result = export(entry, out / name, force=force, quantize=VARIANTS)
    m = result.manifest
    variants = {v: {"size": f["size"], "metric": f.get("metric"), "gate": f.get("gate", {}).get("passed", False),
                    "setting": f.get("setting", {}).get("name")}
                for v, f in m.variants.items() if v != "fp32"}
    return DemoRow(name, entry.cell, entry.metric, m.task["keras"], m.task["onnx"], m.task["baseline"],
                   result.parity.worst_abs, recurrent_ops(out / name / "model.onnx"), m.streaming,
                   m.variants["fp32"]["size"], trained, m.export_seconds or 0.0, result.passed, variants)


def _variant_cells(r: DemoRow) -> list[str]:
    cells = []
    for v in VARIANTS:
        f = r.variants.get(v)
        if f is None:
            cells += ["-", "-"]
            continue
        gate = "" if f["gate"] else " (gate: fail)"
        cells += [f"{f['size'] / 1024:.1f} KB", "-" if f["metric"] is None else f"{f['metric']:.4f}{gate}"]
    return cells


def table(rows: list[DemoRow]):
    """The zoo's table for the terminal: whole at any width (split into parts keyed by model where narrow)."""
    from rnnedge.bench.report import WholeTable

    t = WholeTable("rnnedge reference zoo: Keras vs fused ONNX (onnxruntime CPU)",
                   ("model", "cell", "metric", "Keras", "ONNX", "baseline", "max |diff|", "recurrent ops", "stream",
                    "size", "int8 size", "int8 metric", "fp16 size", "fp16 metric", "train s", "export s", "parity"),
                   left=(0, 1, 2, 7))
    for r in rows:
        t.add_row(r.model, r.cell, r.metric, f"{r.keras:.4f}", f"{r.onnx:.4f}", f"{r.baseline:.4f}",
                  f"{r.worst_abs:.1e}", r.ops, "yes" if r.streaming else "no", f"{r.size / 1024:.1f} KB",
                  *_variant_cells(r), f"{r.train_s:.1f}", f"{r.export_s:.1f}",
                  "[green]pass[/]" if r.passed else "[red]FAIL[/]")
    return t


def markdown(rows: list[DemoRow]) -> str:
    lines = ["| model | cell | metric | Keras | ONNX | baseline | max abs diff | recurrent ops | streams | size | "
             "int8 size | int8 metric | fp16 size | fp16 metric | int8 setting | export s |",
             "|---|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.cell} | {r.metric} | {r.keras:.4f} | {r.onnx:.4f} | {r.baseline:.4f} | "
                     f"{r.worst_abs:.1e} | {r.ops} | {'yes' if r.streaming else 'no'} | {r.size / 1024:.1f} KB | "
                     f"{' | '.join(_variant_cells(r))} | "
                     f"{r.variants.get('int8', {}).get('setting') or '-'} | {r.export_s:.1f} |")
    return "\n".join(lines) + "\n"


def benchmark_zoo(out: Path, names: list[str], progress, runs: int = 100) -> list[tuple[str, list]]:
    """Time every exported zoo model (fp32, int8, fp16) interleaved with Keras, tf2onnx and LiteRT (fp32, int8)."""
    from rnnedge import bench, zoo

    results = []
    task = progress.add_task("benchmark", total=len(names) + (PLOT_MODEL in names))  # the sweep is a step too
    for name in names:
        progress.update(task, description=f"benchmark {name}")
        entry = zoo.load(name)
        fixed = entry.model.inputs[0].shape[1]  # Keras' own length where it fixes one (streaming exports free it)
        rows = bench.bench_dir(out / name, variants=_kept(out / name), baselines=tuple(BASELINES), source=entry,
                               times=None if fixed is None else (fixed,), runs=runs, warmup=max(5, runs // 10))
        results.append((name, rows))
        progress.advance(task)
    if PLOT_MODEL in names:
        progress.update(task, description=f"benchmark {PLOT_MODEL} over lengths")
        rows = bench.bench_dir(out / PLOT_MODEL, variants=_kept(out / PLOT_MODEL), baselines=tuple(BASELINES),
                               source=zoo.load(PLOT_MODEL), times=PLOT_TIMES, runs=runs, warmup=max(5, runs // 10))
        bench.plot(rows, out / f"bench-{PLOT_MODEL}.png", model=PLOT_MODEL)
        results.append((f"{PLOT_MODEL} (over lengths)", rows))
        progress.advance(task)
    return results


def _kept(folder: Path) -> tuple[str, ...]:
    """fp32 and the variants the export kept (an int8 no smaller than fp32 is not kept)."""
    from rnnedge.manifest import Manifest

    return ("fp32", *(v for v in VARIANTS if v in Manifest.load(folder).variants))


# tools/bench_triton.py and tools/bench_hop.py --write their figures between these markers; the demo keeps them.
TRITON_SECTION = ("<!-- triton: written by tools/bench_triton.py -->", "<!-- /triton -->")
HOP_SECTION = ("<!-- hop: written by tools/bench_hop.py -->", "<!-- /hop -->")


def keep_section(text: str, markers: tuple[str, str]) -> str:
    """The part of `text` between `markers` (markers included, with a blank line before), or ""."""
    start, end = text.find(markers[0]), text.find(markers[1])
    return "\n" + text[start:end + len(markers[1])] + "\n" if 0 <= start < end else ""


def replace_section(text: str, markers: tuple[str, str], body: str) -> str:
    """`text` with the marked section set to `body` (appended where there is none)."""
    section = f"{markers[0]}\n{body.rstrip()}\n{markers[1]}"
    start, end = text.find(markers[0]), text.find(markers[1])
    if 0 <= start < end:
        return text[:start] + section + text[end + len(markers[1]):]
    return text.rstrip() + "\n\n" + section + "\n"


def benchmarks_markdown(results) -> str:
    lines = ["# Benchmarks of the reference zoo, as measured by `make demo`", "",
             "onnxruntime CPU, one intra-op thread, batch 1, p50/p99 over interleaved runs (candidates of one model ",
             "alternate in one process, so drift cancels). The `vs` columns are speed-ups: the baseline's p50 ",
             "over this row's. Keras runs under `tf.function`; tf2onnx is the plain export of the same model in ",
             "onnxruntime; litert is the same model converted by TensorFlow Lite's converter for the case's fixed ",
             "shapes, in the LiteRT interpreter (XNNPACK, one thread), and litert-int8 the same with its "
             "dynamic-range ",
             "quantization (which leaves tensors under 1024 weights in float). Figures from a shared 2-core machine: ",
             "read the ratios, not the absolute times. `max abs diff` is each variant's worst error against Keras ",
             "on the export's golden data (from the manifest).", "",
             "| model | candidate | time | p50 ms | p99 ms | seq/s | max abs diff | vs keras | vs tf2onnx | "
             "vs litert | vs litert-int8 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rows in results:
        for r in rows:
            ratio = lambda k, r=r: f"{r.ratios[k]:.1f}x" if k in r.ratios else "-"  # noqa: E731
            lines.append(f"| {name} | {r.candidate} | {r.time if r.time is not None else '-'} | {r.p50_ms:.3f} | "
                         f"{r.p99_ms:.3f} | {r.seq_per_s:,.0f} | {'-' if r.error is None else f'{r.error:.1e}'} | "
                         f"{ratio('keras')} | {ratio('tf2onnx')} | {ratio('litert')} | {ratio('litert-int8')} |")
    if any(name == PLOT_MODEL for name, _ in results):
        lines += ["", f"![latency of {PLOT_MODEL} against sequence length](bench-{PLOT_MODEL}.png)"]
    return "\n".join(lines) + "\n"


class LineProgress:
    """What `Progress` shows, as one plain line per step, for output that is not a terminal (a log,
    CI, `make demo | tee`): rich draws nothing there until the end."""

    def __init__(self, console: Console):
        self.console = console
        self.tasks: dict[int, dict] = {}
        self.started = time.perf_counter()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, description: str, total: int) -> int:
        self.tasks[len(self.tasks)] = {"total": total, "done": 0}
        return len(self.tasks) - 1

    def update(self, task: int, description: str) -> None:
        t = self.tasks[task]
        self.console.print(f"[{t['done'] + 1}/{t['total']}] {description} "
                           f"({time.perf_counter() - self.started:.0f} s so far)", highlight=False, markup=False)

    def advance(self, task: int, n: int = 1) -> None:
        self.tasks[task]["done"] += n

    def refresh(self) -> None:
        pass


def summary_table(results):
    """One row per model for the terminal: rnnedge's fp32 latency and its speed-up over each baseline
    (the whole tables are in BENCHMARKS.md)."""
    from rnnedge.bench.report import WholeTable

    t = WholeTable("benchmark summary: rnnedge fp32 on onnxruntime CPU, 1 thread, batch 1 (p50; speed-up over each)",
                   ("model", "time", "p50 ms", *(f"vs {b}" for b in BASELINES)), left=(0,))
    for name, rows in results:
        for r in rows:
            if r.candidate == "fp32":
                t.add_row(name, "-" if r.time is None else str(r.time), f"{r.p50_ms:.3f}",
                          *(f"{r.ratios[b]:.1f}x" if b in r.ratios else "-" for b in BASELINES))
    return t


def run_demo(out: Path, *, force: bool = False, names: list[str] | None = None, console: Console | None = None,
             benchmark: bool = True) -> bool:
    """Train, export, check and quantize every zoo model (or `names`), then benchmark them; show
    progress (a line per step where the output is not a terminal), write ZOO.md and BENCHMARKS.md
    (every benchmark table), print a benchmark summary and the zoo's table; True if every parity
    check passes."""
    from rnnedge import zoo
    from rnnedge.errors import ParityError

    if console is None:
        console = Console()  # 80 columns when piped: the tables split into parts rather than cut numbers
    names = list(names or zoo.NAMES)
    rows, failed = [], []
    columns = (TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    progress = Progress(*columns, console=console) if console.is_terminal else LineProgress(console)
    with progress:
        task = progress.add_task("zoo", total=len(names))
        for name in names:
            progress.update(task, description=f"train + export {name}")
            try:
                rows.append(export_zoo_model(name, Path(out), force))
            except ParityError as e:
                failed.append(str(e))
            progress.advance(task)
        results = benchmark_zoo(Path(out), [r.model for r in rows], progress) if benchmark and rows else []
    out = Path(out)
    written = []
    if rows:
        write_text(out / "ZOO.md", "# Reference zoo, as exported by `make demo`\n\n" + markdown(rows))
        written.append(f"{out}/<model>/ ({len(rows)} export folder{'s' if len(rows) != 1 else ''})")
    if results:
        path = out / "BENCHMARKS.md"
        old = path.read_text() if path.is_file() else ""
        kept = keep_section(old, HOP_SECTION) + keep_section(old, TRITON_SECTION)
        write_text(path, benchmarks_markdown(results) + kept)
        console.print(summary_table([(n, r) for n, r in results if not n.endswith("(over lengths)")]))
        written.append(f"{out / 'BENCHMARKS.md'} (every benchmark table: variants and baselines per model)")
        if (out / f"bench-{PLOT_MODEL}.png").exists():
            written.append(f"{out / f'bench-{PLOT_MODEL}.png'} (latency of {PLOT_MODEL} against sequence length)")
    if rows:
        written.append(f"{out / 'ZOO.md'} (the table below)")
    for line in failed:
        console.print(f"[red]parity failed[/]: {line}")
    for line in written:
        console.print(f"wrote {line}", highlight=False)
    console.print(table(rows))  # last: the table to read first
    return not failed and all(r.passed for r in rows)
