"""The `rnnedge` command line: parses arguments and calls the library; no logic of its own.

TensorFlow is imported only by the commands that need it (export, demo, zoo), so `rnnedge --help`,
`check`, `run` and `bench` start fast and work where TensorFlow is not installed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rnnedge import preflight
from rnnedge.errors import RnnEdgeError
from rnnedge.files import disk_error, new_folder
from rnnedge.interrupts import interrupted, interrupted_line, said_interrupted
from rnnedge.tables import ATOL, METRICS, OPSETS, RTOL, opset_checked


def _help_types():
    """--help's type column: a flag takes no value and an argument is named by its metavar, so neither
    shows one (typer would print <bool> and <str>); options show their metavar (DIR, LIST, N...)."""
    from typer.core import TyperArgument, TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich
    TyperArgument.display_type_rich = lambda self, ctx: None


_help_types()

app = typer.Typer(
    name="rnnedge",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Keras recurrent models to fused, verified ONNX: export, check, run, quantize, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool):
    if value:
        from rnnedge.tables import VERSION

        typer.echo(f"rnnedge {VERSION}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print rnnedge's version and exit.")] = False,
):
    """Keras recurrent models to fused, verified ONNX: export, check, run, quantize, bench."""


@contextlib.contextmanager
def user_errors():
    """A user's mistake prints one line and exits 1; anything else is a bug and keeps its traceback."""
    shown = warnings.formatwarning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # third-party noise, not the user's concern
            warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
            yield
    except BaseException as e:
        if interrupted() or isinstance(e, KeyboardInterrupt):  # whatever Ctrl-C turned into (an ImportError...)
            logging.getLogger("tensorflow").setLevel(logging.CRITICAL)  # no "never used" noise from TF at exit
            typer.echo(interrupted_line(), err=True)
            said_interrupted()
            raise typer.Exit(130) from None
        if isinstance(e, RnnEdgeError):
            typer.echo(f"error: {e.cli or e}", err=True)
            raise typer.Exit(1) from None
        if isinstance(e, OSError) and e.errno == errno.EPIPE:  # `rnnedge ... | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when stdout is flushed at exit
            raise typer.Exit(141) from None  # as a process ended by SIGPIPE
        if isinstance(e, MemoryError):
            typer.echo("error: out of memory: use smaller inputs (fewer rows, or --chunk for long sequences)", err=True)
            raise typer.Exit(1) from None
        if not isinstance(e, OSError) or e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        typer.echo(f"error: {disk_error(e.filename, e)}", err=True)
        raise typer.Exit(1) from None
    finally:
        warnings.formatwarning = shown  # a Python caller (and pytest) keeps its own format


def _tolerances(items: list[str]) -> dict:
    """NAME=ATOL[,RTOL] per-output tolerance overrides."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            parts = [float(v) for v in value.split(",")]
            out[name] = (parts[0], parts[1] if len(parts) > 1 else RTOL)
        except (ValueError, IndexError):
            raise RnnEdgeError(f"--tolerance {item!r}: expected OUTPUT=ATOL[,RTOL], e.g. dense=1e-4,1e-3") from None
    return out


def _report_line(report) -> str:
    status = "PASS" if report.passed else "FAIL"
    return f"{status}: {len(report.cases)} cases on {report.provider}, worst |diff| {report.worst_abs:.2e}"


def case_summary(report) -> list[str]:
    """One line per case: its length and its worst |diff| (which output, at which step)."""
    width = max((len(c.case) for c in report.cases), default=0)
    lines = []
    for case in report.cases:
        worst = max(case.outputs, key=lambda o: o.max_abs)
        steps = f"{case.steps:>5} step{'s' if case.steps != 1 else ' '}" if case.steps is not None else " " * 11
        at = f", step {worst.worst_step}" if worst.worst_step is not None else ""
        lines.append(f"  {'ok  ' if case else 'FAIL'} {case.case:<{width}}  {steps}  worst |diff| {worst.max_abs:.2e} "
                     f"({worst.name}{at})")
    return lines


def case_lines(report) -> list[str]:
    """One line per case and output: its length, the worst |diff| and the step where it is (0-based)."""
    width = max((len(c.case) for c in report.cases), default=0)
    names = max((len(o.name) for c in report.cases for o in c.outputs), default=0)
    lines = []
    for case in report.cases:
        steps = f"{case.steps:>5} step{'s' if case.steps != 1 else ' '}" if case.steps is not None else " " * 11
        for o in case.outputs:
            mark = "ok  " if o else "FAIL"
            at = f"at step {o.worst_step:<5}" if o.worst_step is not None else " " * 14
            lines.append(f"{mark} {case.case:<{width}}  {steps}  {o.name:<{names}}  max|diff| {o.max_abs:.2e} {at} "
                         f"mean {o.mean_abs:.2e}  rel {o.max_rel:.2e}  (atol {o.atol:g}, rtol {o.rtol:g})")
    return lines


def _outputs(folder: Path, paths, force: bool, inputs=()) -> None:
    """Check every output file a command was asked to write before it starts (`files.output_file`):
    never over the export's own files or the command's inputs, nothing replaced without --force."""
    from rnnedge.files import output_file
    from rnnedge.manifest import MANIFEST, Manifest

    keep = {p: "the input file" for p in inputs if p is not None}
    try:
        names = [MANIFEST, *Manifest.load(folder).file_names()]
    except RnnEdgeError:
        names = [MANIFEST]  # the command itself says what is wrong with the folder
    keep.update({folder / n: f"a file of the export {folder}" for n in names})
    for path in paths:
        if path is not None:
            output_file(path, force=force, keep=keep)


def _sizes(ctx, param, value: Optional[str]):
    """A LIST option of sizes ("1,8,32") checked while the command line is parsed: a mistake is a usage
    error (exit 2), like a value of the wrong type."""
    from rnnedge.bench.cases import int_list

    option = param.opts[0]
    try:
        int_list(value, option)
    except RnnEdgeError as e:
        raise typer.BadParameter(str(e).removeprefix(f"{option} "), ctx, param) from None
    return value


def _positive(ctx, param, value: float) -> float:
    """A number of seconds that must be above 0, checked while the command line is parsed (exit 2)."""
    if not value > 0:  # nan too
        raise typer.BadParameter(f"{value} is not above 0", ctx, param)
    return value


THREADS_MAX = 4 * (os.cpu_count() or 1)  # what session_options accepts

MetricChoice = Enum("MetricChoice", {name: name for name in METRICS}, type=str)  # --metric: tables.METRICS' names


@app.command()
def export(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="A .keras or .h5 file, a SavedModel folder (tf.keras 2), or zoo:NAME for a reference model.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Folder to write model.onnx, manifest.json, golden.npz.")],
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
    streaming: Annotated[bool, typer.Option("--streaming", help="Recurrent states become graph inputs/outputs for chunked streaming.")] = False,
    allow_loop: Annotated[bool, typer.Option("--allow-loop", help="Fall back to the plain tf2onnx graph (with Loops) for recurrent layers rnnedge cannot fuse.")] = False,
    unsafe: Annotated[bool, typer.Option("--unsafe", help="Load .keras files with safe_mode off (Lambda layers run code).")] = False,
    atol: Annotated[float, typer.Option(metavar="TOL", help="Absolute tolerance for parity.")] = ATOL,
    rtol: Annotated[float, typer.Option(metavar="TOL", help="Relative tolerance for parity.")] = RTOL,
    tolerance: Annotated[Optional[list[str]], typer.Option(metavar="OUTPUT=ATOL[,RTOL]", help="A tolerance for one output; repeatable.")] = None,
    quantize: Annotated[Optional[str], typer.Option(metavar="LIST", help="Also write quantized variants, e.g. int8,fp16.")] = None,
    data: Annotated[Optional[Path], typer.Option(metavar="FILE", help=".npz of inputs (by name), and optionally targets 'y': its sequences become parity cases (up to 8, at their length); also calibration and the accuracy gate.")] = None,
    metric: Annotated[Optional[MetricChoice], typer.Option(metavar="METRIC", help="Task metric for --data targets: accuracy, f1 or rmse.")] = None,
    opset: Annotated[int, typer.Option(metavar="N", help=f"ONNX opset, {min(OPSETS)} to {max(OPSETS)}.")] = 17,
    static: Annotated[Optional[str], typer.Option(metavar="AXES", help="Fix axes in the graph: batch=B,time=T (either or both; a streaming export's chunk length).")] = None,
):
    """Export a Keras recurrent model to fused ONNX and verify it against Keras."""
    with user_errors():
        opset_checked(opset)
        fixed = preflight.static_axes(static)
        new_folder(out, force=force)  # before TensorFlow loads: an --out that would be refused anyway
        _source_ready(model, "`rnnedge export`")
        _data_ready(data)
        if data is not None:  # a file that cannot fit the model is refused before TensorFlow loads
            arrays = preflight.data_headers(data)
            inputs = None if model.startswith("zoo:") else preflight.keras_inputs(model)
            if inputs:
                preflight.data_matches(data, arrays, inputs, fixed)
        if "fp16" in (quantize or ""):
            preflight.require("quantize", "--quantize fp16")
        from rnnedge.check import Tolerance
        from rnnedge.exporter import export as run_export

        result = run_export(model, out, force=force, streaming=streaming, allow_loop=allow_loop, unsafe=unsafe,
                            tolerance=Tolerance(atol, rtol), overrides=_tolerances(tolerance or []),
                            quantize=quantize or (), data=data, metric=metric.value if metric else None, opset=opset,
                            static=fixed)
        fused = sum(len(v) for v in result.manifest.fused_nodes.values())
        spliced = result.manifest.tf2onnx_layers
        via = f", {len(spliced)} layer(s) through tf2onnx ({_names(spliced)})" if spliced and not result.manifest.loop_layers else ""
        size = result.manifest.variants["fp32"]["size"]
        typer.echo(f"wrote {out}: {fused} fused recurrent node(s){_scanned(result.manifest)}{via}, {size} bytes, "
                   f"opset {result.manifest.opset}")
        import onnx

        graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
        for line in result.manifest.interface_lines({n.name: n.op_type for n in graph.node}):
            typer.echo(line)
        for line in case_summary(result.parity):
            typer.echo(line)
        truth = result.manifest.source.get("truth", {})
        against = f" against {truth['framework']} {truth['version']}" if truth.get("framework") == "tf_keras" else ""
        typer.echo(_report_line(result.parity) + against)
        if quantize:
            _print_variants(result.manifest)


def _source_ready(model: str, what: str) -> None:
    """A Keras source that can work (the export extra installed, the file or zoo name there), before TensorFlow loads."""
    if model.startswith("zoo:"):
        preflight.zoo_name(model[4:])
    else:
        preflight.keras_file(model)
    preflight.require("export", what)


def _data_ready(data: Optional[Path]) -> None:
    if data is not None and not data.is_file():
        raise RnnEdgeError(f"--data {data}: no such file; expected an .npz of inputs (by name) and targets 'y'")


def _scanned(manifest) -> str:
    """", N layer(s) as an exact Scan (names): no fused form for 'gelu'", or "" where none."""
    scans = manifest.scan_layers
    if not scans:
        return ""
    acts = dict.fromkeys(a for n in scans for a in re.findall(r"'([^']+)'", manifest.notes.get(n, "")))
    return f", {len(scans)} layer(s) as an exact Scan ({_names(scans)}: no fused form for {_names(list(acts))})"


def _names(names: list[str], shown: int = 6) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _print_variants(manifest, explain: bool = False):
    from rnnedge.quantize.report import explain_lines, variant_lines

    for line in variant_lines(manifest) + (explain_lines(manifest) if explain else []):
        typer.echo(line)


@app.command()
def quantize(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="A folder written by `rnnedge export`.")],
    variants: Annotated[str, typer.Option(metavar="LIST", help="Comma-separated variants: int8, fp16.")] = "int8,fp16",
    data: Annotated[Optional[Path], typer.Option(metavar="FILE", help=".npz of inputs (by name) and targets 'y' for calibration and the accuracy gate.")] = None,
    metric: Annotated[Optional[MetricChoice], typer.Option(metavar="METRIC", help="Task metric for --data targets: accuracy, f1 or rmse.")] = None,
    int8: Annotated[Optional[str], typer.Option("--int8", metavar="SETTING", help="Use this int8 setting instead of measuring them all: "
                                                "dynamic-7bit, dynamic-7bit-tensor, lstm-7bit, weight-only, "
                                                "static-7bit (needs --data).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Also print every int8 setting tried and each variant's gates.")] = False,
):
    """Add int8/fp16 variants to an export, with their size, error, metric, latency and gate."""
    with user_errors():
        _data_ready(data)
        if "fp16" in variants:
            preflight.require("quantize", "the fp16 variant")
        from rnnedge.manifest import Manifest
        from rnnedge.quantize import quantize_dir
        from rnnedge.quantize.int8 import setting_named

        if int8 is not None:
            setting_named(int8)  # an unknown name is refused before any work
        evaluate = None
        manifest = Manifest.load(folder)
        source = manifest.source.get("name", "")
        if data is None and source.startswith("zoo:"):
            evaluate = _zoo_evaluator(source[4:])
        quantize_dir(folder, variants, evaluate=evaluate, data=data, metric=metric.value if metric else None,
                     setting=int8)
        _print_variants(Manifest.load(folder), explain)


def _zoo_evaluator(name: str):
    """The zoo's test split and metric, when the export extra is installed (else no metric)."""
    try:
        from rnnedge import zoo
    except ImportError:
        typer.echo("note: TensorFlow is not installed, so the zoo's test split cannot be rebuilt: variants are judged "
                   "on Keras' golden outputs (pass --data with targets 'y' for a task metric)", err=True)
        return None
    entry = zoo.load(name)
    return lambda m: entry.score(m.run(*entry.x_test).data)


@app.command()
def check(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="A folder written by `rnnedge export`.")],
    provider: Annotated[str, typer.Option(metavar="NAME", help="Execution provider: auto, cpu, cuda, tensorrt.")] = "auto",
    variant: Annotated[str, typer.Option(metavar="NAME", help="Model variant: fp32, int8, fp16.")] = "fp32",
    atol: Annotated[Optional[float], typer.Option(metavar="TOL", help="Absolute tolerance (default: the provider's).")] = None,
    rtol: Annotated[Optional[float], typer.Option(metavar="TOL", help="Relative tolerance (default: the provider's).")] = None,
    fallback: Annotated[bool, typer.Option("--fallback", help="Run on CPU if the provider is not available.")] = False,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip checking the files' sha256 against manifest.json.")] = False,
    plot_out: Annotated[Optional[Path], typer.Option("--plot", metavar="PNG", help="Write a PNG: the worst |diff| against the time step per output, a line per case length.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the --plot file if it exists.")] = False,
):
    """Re-verify parity from golden.npz with onnxruntime alone (no TensorFlow needed)."""
    with user_errors():
        if plot_out is not None:
            _outputs(folder, [plot_out], force)
            if plot_out.suffix.lower() not in (".png", ".svg", ".pdf"):
                raise RnnEdgeError(f"--plot {plot_out}: expected a .png, .svg or .pdf file name")
            preflight.require("plot", "--plot")
        from rnnedge.check import check_dir
        from rnnedge.manifest import Manifest

        report = check_dir(folder, provider, variant=variant, atol=atol, rtol=rtol, fallback=fallback, verify=not no_verify)
        for line in case_lines(report):
            typer.echo(line)
        typer.echo(_report_line(report))
        if plot_out is not None:
            from rnnedge.check.plot import plot_errors

            plot_errors(report, plot_out, title=f"{folder.name}: worst |diff| against the time step, {report.provider}")
            typer.echo(f"wrote {plot_out}")
        passed = report.passed
        if variant == "fp32" and "ort" in Manifest.load(folder).variants:  # `rnnedge ort` wrote model.ort: replay it too
            ort_report = check_dir(folder, provider, variant="ort", atol=atol, rtol=rtol, fallback=fallback, verify=not no_verify)
            for failure in ort_report.failures():
                typer.echo(f"FAIL model.ort: {failure}")
            typer.echo("ort (model.ort): " + _report_line(ort_report))
            passed = passed and ort_report.passed
        if not passed:
            raise typer.Exit(1)


@app.command()
def run(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="A folder written by `rnnedge export`.")],
    input: Annotated[Path, typer.Option("--input", "-i", metavar="FILE", help="Inputs: .npy (one input), .npz (by name) or .csv.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="Write outputs to .npz, .npy or .csv; - writes JSON to standard output.")] = None,
    chunk: Annotated[Optional[int], typer.Option(metavar="N", min=1, help="Stream the input in chunks of N steps, state carried.")] = None,
    provider: Annotated[str, typer.Option(metavar="NAME", help="Execution provider: auto, cpu, cuda, tensorrt.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(metavar="N", min=1, max=THREADS_MAX, help="Intra-op threads (CPU).")] = None,
    fallback: Annotated[bool, typer.Option("--fallback", help="Fall back to CPU if the provider is not available.")] = False,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip checking the files' sha256 against manifest.json.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace --output if it exists.")] = False,
):
    """Run an exported model on inputs from a file (numpy + onnxruntime only)."""
    with user_errors():
        from rnnedge.runtime import run_file
        from rnnedge.runtime.files import outputs_json, preview

        stdout = output is not None and str(output) == "-"
        _outputs(folder, [None if stdout else output], force, inputs=[input])
        if output is not None and not stdout and output.suffix.lower() not in (".npz", ".npy", ".csv"):
            raise RnnEdgeError(f"--output {output}: expected a .npz, .npy or .csv file name, or - for JSON on "
                               "standard output")
        outputs = run_file(folder, input, None if stdout else output, chunk=chunk, provider=provider, threads=threads,
                           fallback=fallback, verify=not no_verify)
        if stdout:  # only the JSON on standard output, for a pipe
            typer.echo(outputs_json(outputs))
            return
        for name, value in outputs.items():
            typer.echo(f"{name}: shape {tuple(value.shape)} {value.dtype}")
            typer.echo(preview(value))
        typer.echo(f"provider: {outputs.provider}" + (f"; wrote {output}" if output else ""))


@app.command()
def bench(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="A folder written by `rnnedge export`.")],
    provider: Annotated[str, typer.Option(metavar="NAME", help="Execution provider: cpu, cuda, tensorrt.")] = "cpu",
    batch: Annotated[Optional[str], typer.Option(metavar="LIST", callback=_sizes, help="Batch sizes, e.g. 1,8,32.")] = None,
    time_: Annotated[Optional[str], typer.Option("--time", metavar="LIST", callback=_sizes, help="Sequence lengths, e.g. 16,100,400 (steps per push with --stream).")] = None,
    threads: Annotated[int, typer.Option(metavar="N", min=1, max=THREADS_MAX, help="Intra-op threads.")] = 1,
    variants: Annotated[str, typer.Option(metavar="LIST", help="Variants to time, e.g. fp32,int8,fp16.")] = "fp32",
    stream: Annotated[bool, typer.Option("--stream", help="Per-step latency of a streaming export, against a trivial-model floor.")] = False,
    baseline: Annotated[Optional[str], typer.Option(metavar="LIST", help="Baselines: keras, tf2onnx, litert, litert-int8 (need the export extra).")] = None,
    source: Annotated[Optional[str], typer.Option(metavar="MODEL", help="The Keras model for baselines (.keras or zoo:NAME); default: the manifest's source.")] = None,
    runs: Annotated[int, typer.Option(metavar="N", min=1, help="Timed runs per case.")] = 200,
    warmup: Annotated[int, typer.Option(metavar="N", min=0, help="Warm-up runs dropped.")] = 20,
    json_out: Annotated[Optional[Path], typer.Option("--json", metavar="FILE", help="Write the rows as JSON.")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", metavar="FILE", help="Write the rows as CSV.")] = None,
    plot_out: Annotated[Optional[Path], typer.Option("--plot", metavar="PNG", help="Write a PNG: latency of every candidate against sequence length (16, 100 and 400 steps unless --time says).")] = None,
    triton: Annotated[Optional[str], typer.Option(metavar="URL", help="Load-test a local Triton server (grpc://127.0.0.1:PORT or http://...) beside the in-process runtime.")] = None,
    triton_model: Annotated[Optional[str], typer.Option(metavar="NAME", help="The model's name on the server (default: the folder's name).")] = None,
    concurrency: Annotated[str, typer.Option(metavar="LIST", callback=_sizes, help="With --triton: concurrent sequences, e.g. 1,8,32.")] = "1,8,32",
    sequences: Annotated[int, typer.Option(metavar="N", min=1, help="With --triton: sequences per concurrency level.")] = 64,
    chunks: Annotated[int, typer.Option(metavar="N", min=1, help="With --triton: requests (chunks) per sequence.")] = 8,
    seconds: Annotated[float, typer.Option(metavar="SECONDS", callback=_positive, help="With --triton: time budget per concurrency level and candidate.")] = 20.0,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip checking the files' sha256 against manifest.json.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace --json, --csv or --plot files that exist.")] = False,
):
    """Latency percentiles and throughput, interleaved with baselines in one process."""
    with user_errors():
        _outputs(folder, [json_out, csv_out, plot_out], force)
        if plot_out is not None:
            if plot_out.suffix.lower() not in (".png", ".svg", ".pdf"):
                raise RnnEdgeError(f"--plot {plot_out}: expected a .png, .svg or .pdf file name")
            preflight.require("plot", "--plot")
        if baseline:
            if source is not None and not source.startswith("zoo:"):
                preflight.keras_file(source)
            preflight.require("export", f"--baseline {baseline}")
        if triton is not None:
            preflight.require("serve", "--triton")
        from rich.console import Console
        from rich.progress import Progress

        from rnnedge import bench as b

        if triton is not None:
            from rnnedge.serve.loadtest import load_test

            steps = b.int_list(time_, "--time") or (1,)
            with Progress(transient=True) as progress:
                rows, reports = load_test(folder, triton, model=triton_model, concurrency=b.int_list(concurrency, "--concurrency"),
                                          sequences=sequences, chunks=chunks, steps=steps[0], seconds=seconds,
                                          threads=threads, progress=progress)
            Console().print(b.rich_table(rows, title=f"rnnedge bench --triton {triton}: per chunk of {steps[0]} step(s), "
                                                      f"{chunks} chunks per sequence"))
            for r in reports:
                typer.echo(r.line())
            for path, write in ((json_out, b.write_json), (csv_out, b.write_csv)):
                if path:
                    write(rows, path)
                    typer.echo(f"wrote {path}")
            if not all(r.ok for r in reports):
                raise typer.Exit(1)
            return
        times = b.int_list(time_, "--time")
        if times is None and plot_out is not None:  # a plot draws latency against length: sweep where the model lets it
            from rnnedge.manifest import Manifest

            times = b.sweep_times(Manifest.load(folder), stream)
        with Progress(auto_refresh=False, transient=True) as progress:  # no refresh thread while timing
            rows = b.bench_dir(folder, provider=provider, batches=b.int_list(batch, "--batch"),
                               times=times, threads=threads, variants=b.name_list(variants),
                               baselines=b.name_list(baseline), stream=stream, runs=runs, warmup=warmup,
                               source=source, progress=progress, verify=not no_verify)
        Console().print(b.rich_table(rows, model=folder.name))
        for path, write in ((json_out, b.write_json), (csv_out, b.write_csv),
                            (plot_out, lambda rows, path: b.plot(rows, path, model=folder.name))):
            if path:
                write(rows, path)
                typer.echo(f"wrote {path}")


class Backend(str, Enum):
    onnxruntime = "onnxruntime"
    python = "python"


@app.command()
def triton(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="A folder written by `rnnedge export`.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="REPO", help="The Triton model repository to write REPO/<name> into.")],
    name: Annotated[Optional[str], typer.Option(metavar="NAME", help="The model's name (default: the folder's name).")] = None,
    max_batch: Annotated[int, typer.Option(metavar="N", min=0, help="Triton's max_batch_size.")] = 32,
    instances: Annotated[int, typer.Option(metavar="N", min=1, help="Model instances.")] = 1,
    backend: Annotated[Backend, typer.Option(metavar="BACKEND", help="onnxruntime (model.onnx) or python (rnnedge's runtime in model.py).")] = Backend.onnxruntime,
    gpu: Annotated[bool, typer.Option("--gpu", help="GPU instances (KIND_GPU).")] = False,
    tensorrt: Annotated[bool, typer.Option("--tensorrt", help="With --gpu: onnxruntime's TensorRT accelerator.")] = False,
    idle_seconds: Annotated[float, typer.Option(metavar="SECONDS", callback=_positive, help="Release a sequence after this long without a request.")] = 60.0,
    max_sequences: Annotated[int, typer.Option(metavar="N", min=1, help="Python backend: sequences open at once per instance.")] = 1024,
    threads: Annotated[int, typer.Option(metavar="N", min=1, max=THREADS_MAX, help="onnxruntime intra-op threads per instance.")] = 1,
    queue_delay_ms: Annotated[float, typer.Option(metavar="MS", min=0, help="Wait this long for other sequences' requests to batch with the first.")] = 0.0,
    force: Annotated[bool, typer.Option("--force", help="Replace REPO/<name> if it exists.")] = False,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Skip checking the copied files' sha256 against manifest.json.")] = False,
):
    """Write a Triton model repository entry (config.pbtxt checked against Triton's schema)."""
    with user_errors():
        preflight.require("serve", "`rnnedge triton` (its configs are checked against Triton's schema)")
        from rnnedge.serve.triton import write_repository

        target = write_repository(folder, out, name=name, backend=backend.value, max_batch=max_batch,
                                  instances=instances, gpu=gpu, tensorrt=tensorrt, idle_seconds=idle_seconds,
                                  max_sequences=max_sequences, threads=threads, queue_delay_ms=queue_delay_ms, force=force,
                                  verify=not no_verify)
        typer.echo(f"wrote {target} ({backend.value} backend); serve it with `rnnedge serve {out}`")


@app.command()
def serve(
    repo: Annotated[Path, typer.Argument(metavar="REPO", help="A model repository written by `rnnedge triton`.")],
    http_port: Annotated[int, typer.Option(metavar="N", min=1, max=65535, help="HTTP port on 127.0.0.1.")] = 8000,
    grpc_port: Annotated[int, typer.Option(metavar="N", min=1, max=65535, help="gRPC port on 127.0.0.1.")] = 8001,
    timeout: Annotated[float, typer.Option(metavar="SECONDS", callback=_positive, help="Seconds to wait for the models to be ready.")] = 60.0,
):
    """Run the nvidia-pytriton wheel's tritonserver on REPO in the foreground (127.0.0.1 only; Ctrl-C stops it)."""
    with user_errors():
        import signal
        import time

        from rnnedge.serve.server import local_server

        def stop(*_):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)  # `kill PID` stops the server too, not only Ctrl-C
        with local_server(repo, http_port=http_port, grpc_port=grpc_port, timeout=timeout) as server:
            typer.echo(f"serving {repo}: http://{server.http_url}  grpc://{server.grpc_url}  (Ctrl-C stops)")
            try:
                while server.alive():
                    time.sleep(0.5)
            except KeyboardInterrupt:
                typer.echo("stopping")
                return
            raise RnnEdgeError(f"tritonserver exited: {server.log_tail(1)}")


@app.command()
def ort(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="A folder written by `rnnedge export`.")],
    force: Annotated[bool, typer.Option("--force", help="Convert again if model.ort exists.")] = False,
):
    """Write model.ort (onnxruntime's ORT format) and required_operators.config for minimal/mobile builds."""
    with user_errors():
        from rnnedge.serve.ort import write_ort

        entry = write_ort(folder, force=force)
        worst = max(entry["max_abs_error"].values(), default=0.0)
        status = "PASS" if entry["gate"]["passed"] else "FAIL"
        typer.echo(f"wrote {folder / entry['file']} ({entry['size']:,} bytes) and {folder / entry['required_operators']}")
        typer.echo(f"{status}: golden.npz on the .ort file, worst |diff| {worst:.2e}; run it with "
                   f"rnnedge.load(DIR, variant=\"ort\")")
        if not entry["gate"]["passed"]:
            raise typer.Exit(1)


@app.command()
def view(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="A folder written by `rnnedge export`.")],
    variant: Annotated[str, typer.Option(metavar="NAME", help="Model variant: fp32, int8, fp16.")] = "fp32",
    port: Annotated[int, typer.Option(metavar="N", help="Port on 127.0.0.1.")] = 8080,
    browse: Annotated[bool, typer.Option("--browse/--no-browse", help="Open the page in a web browser.")] = True,
):
    """Open the exported graph in Netron, served on 127.0.0.1 (Ctrl-C stops)."""
    with user_errors():
        preflight.require("view", "`rnnedge view`")
        from rnnedge.manifest import MODEL, Manifest

        variants = {"fp32": {"file": MODEL}, **Manifest.load(folder).variants}
        if variant not in variants:
            raise RnnEdgeError(f"{folder} has no {variant} variant (it has {', '.join(variants)}): pass --variant "
                               "one of those, or add it with `rnnedge quantize`")
        path = folder / variants[variant]["file"]
        if not path.is_file():
            raise RnnEdgeError(f"{path} is missing: the export folder is incomplete; re-export the model")
        import netron

        host, bound = netron.start(str(path), address=("127.0.0.1", port), browse=browse)
        typer.echo(f"serving {path} in Netron at http://{host}:{bound} (Ctrl-C stops)")
        try:
            netron.wait()
        except KeyboardInterrupt:
            netron.stop()
            typer.echo("stopped")


@app.command()
def zoo():
    """List the reference zoo's models."""
    with user_errors():
        from rnnedge.tables import ZOO  # the names only: no Keras, no training

        for name in ZOO:
            typer.echo(name)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(metavar="DIR", help="Folder for the exported zoo (`make exported` writes the committed exported/).")] = Path("demo-out"),
    force: Annotated[bool, typer.Option("--force", help="Replace existing exports.")] = False,
    models: Annotated[Optional[list[str]], typer.Option("--model", metavar="NAME", help="Only these zoo models; repeatable.")] = None,
    benchmark: Annotated[bool, typer.Option("--benchmark/--no-benchmark", help="Benchmark the exports against Keras, tf2onnx and LiteRT.")] = True,
):
    """Train the reference zoo, export, check parity, quantize and benchmark; print the tables."""
    with user_errors():
        for name in models or ():
            preflight.zoo_name(name)
        preflight.require("export", "`rnnedge demo`")
        preflight.require("quantize", "`rnnedge demo` (its fp16 variants)")
        if benchmark:
            preflight.require("plot", "`rnnedge demo` (its latency plot; or pass --no-benchmark)")
        from rnnedge.demo import run_demo

        ok = run_demo(out, force=force, names=models or None, benchmark=benchmark)
        if not ok:
            raise typer.Exit(1)


def main():  # pragma: no cover - console entry point
    sys.exit(app())
