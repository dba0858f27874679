"""The `rnnedge` command line: parses arguments and calls the library; no logic of its own.

TensorFlow is imported only by the commands that need it (export, demo, zoo), so `rnnedge --help`,
`check`, `run` and `bench` start fast and work where TensorFlow is not installed. A user's mistake
is one line (`error: ...`, exit 1; usage mistakes exit 2), worded for the command line where the
library made it (`RnnEdgeError.cli`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rnnedge import preflight
from rnnedge.errors import RnnEdgeError
from rnnedge.files import disk_error
from rnnedge.interrupts import interrupted, interrupted_line, said_interrupted
from rnnedge.tables import ATOL, METRICS, OPSETS, RTOL, VERSION, ZOO, opset_checked

app = typer.Typer(
    name="rnnedge",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Keras recurrent models to fused, verified ONNX: export, check, run, quantize, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: options by their metavar, flags without a type column
)


def _version(value: bool):
    if value:
        typer.echo(f"rnnedge {VERSION}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print rnnedge's version and exit.")] = False):
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
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
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


def _say(lines) -> None:
    for line in lines:
        typer.echo(line)


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


Backend = Enum("Backend", {"onnxruntime": "onnxruntime", "python": "python"}, type=str)  # `rnnedge triton --backend`


# Options several commands share, declared once.
Folder = Annotated[Path, typer.Argument(metavar="DIR", help="A folder written by `rnnedge export`.")]
Force = Annotated[bool, typer.Option("--force", help="Replace what the command writes if it exists.")]
NoVerify = Annotated[bool, typer.Option("--no-verify", help="Skip checking the files' sha256 against manifest.json.")]
Provider = Annotated[str, typer.Option(metavar="NAME", help="Execution provider: auto, cpu, cuda, tensorrt.")]
Fallback = Annotated[bool, typer.Option("--fallback", help="Run on CPU if the provider is not available.")]
Threads = Annotated[int, typer.Option(metavar="N", min=1, max=THREADS_MAX, help="onnxruntime intra-op threads.")]
Variant = Annotated[str, typer.Option(metavar="NAME", help="Model variant: fp32, int8, fp16.")]
Metric = Annotated[Optional[MetricChoice], typer.Option(metavar="METRIC", help="Task metric for --data targets: "
                                                                                "accuracy, f1 or rmse.")]
Data = Annotated[Optional[Path], typer.Option(metavar="FILE", help=".npz of inputs (by name) and targets 'y' for "
                                                                   "calibration and the accuracy gate.")]


@app.command()
def export(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="A .keras/.h5 file, a SavedModel folder or zoo:NAME.")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Folder for model.onnx, manifest, golden.")],
    force: Force = False,
    streaming: Annotated[bool, typer.Option("--streaming", help="States as graph inputs/outputs, to stream in chunks.")
                         ] = False,
    allow_loop: Annotated[bool, typer.Option("--allow-loop", help="tf2onnx's graph (Loops) where rnnedge cannot fuse.")
                          ] = False,
    unsafe: Annotated[bool, typer.Option("--unsafe", help="Load with safe_mode off (Lambda layers run code).")] = False,
    atol: Annotated[float, typer.Option(metavar="TOL", help="Absolute tolerance for parity.")] = ATOL,
    rtol: Annotated[float, typer.Option(metavar="TOL", help="Relative tolerance for parity.")] = RTOL,
    tolerance: Annotated[Optional[list[str]], typer.Option(metavar="OUTPUT=ATOL[,RTOL]",
                                                           help="A tolerance for one output; repeatable.")] = None,
    quantize: Annotated[Optional[str], typer.Option(metavar="LIST", help="Also variants, e.g. int8,fp16.")] = None,
    data: Annotated[Optional[Path], typer.Option(metavar="FILE", help=".npz of inputs (by name) and targets 'y': "
                                                 "parity cases (up to 8), calibration, the accuracy gate.")] = None,
    metric: Metric = None,
    opset: Annotated[int, typer.Option(metavar="N", help=f"ONNX opset, {min(OPSETS)} to {max(OPSETS)}.")] = 17,
    static: Annotated[Optional[str], typer.Option(metavar="AXES", help="Fix axes: batch=B,time=T (either or both).")
                      ] = None,
):
    """Export a Keras recurrent model to fused ONNX and verify it against Keras."""
    with user_errors():
        opset_checked(opset)
        fixed = preflight.static_axes(static)
        preflight.export_ready(model, out, force=force, data=data, static=fixed, quantize=quantize)
        from rnnedge.check import Tolerance, parse_tolerances
        from rnnedge.exporter import export as run_export

        result = run_export(model, out, force=force, streaming=streaming, allow_loop=allow_loop, unsafe=unsafe,
                            tolerance=Tolerance(atol, rtol), overrides=parse_tolerances(tolerance or []),
                            quantize=quantize or (), data=data, metric=metric.value if metric else None, opset=opset,
                            static=fixed)
        _say(result.lines())
        if quantize:
            _print_variants(result.manifest)


def _print_variants(manifest, explain: bool = False):
    from rnnedge.quantize.report import explain_lines, variant_lines

    _say(variant_lines(manifest) + (explain_lines(manifest) if explain else []))


@app.command()
def quantize(
    folder: Folder,
    variants: Annotated[str, typer.Option(metavar="LIST", help="Comma-separated variants: int8, fp16.")] = "int8,fp16",
    data: Data = None,
    metric: Metric = None,
    int8: Annotated[Optional[str], typer.Option("--int8", metavar="SETTING", help="This int8 setting, not the best: "
                                                "dynamic-7bit(-tensor), lstm-7bit, weight-only, static-7bit.")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Print every int8 setting tried and the gates.")] = False,
):
    """Add int8/fp16 variants to an export, with their size, error, metric, latency and gate."""
    with user_errors():
        preflight.data_file(data)
        if "fp16" in variants:
            preflight.require("quantize", "the fp16 variant")
        from rnnedge.manifest import Manifest
        from rnnedge.quantize import quantize_dir
        from rnnedge.quantize.folder import zoo_evaluator
        from rnnedge.quantize.int8 import setting_named

        if int8 is not None:
            setting_named(int8)  # an unknown name is refused before any work
        evaluate, note = zoo_evaluator(Manifest.load(folder).source.get("name", "")) if data is None else (None, None)
        if note:
            typer.echo(note, err=True)
        quantize_dir(folder, variants, evaluate=evaluate, data=data, metric=metric.value if metric else None,
                     setting=int8)
        _print_variants(Manifest.load(folder), explain)


@app.command()
def check(
    folder: Folder,
    provider: Provider = "auto",
    variant: Variant = "fp32",
    atol: Annotated[Optional[float], typer.Option(metavar="TOL", help="Absolute tolerance (the provider's).")] = None,
    rtol: Annotated[Optional[float], typer.Option(metavar="TOL", help="Relative tolerance (the provider's).")] = None,
    fallback: Fallback = False,
    no_verify: NoVerify = False,
    plot_out: Annotated[Optional[Path], typer.Option("--plot", metavar="PNG", help="Plot the worst |diff| per step.")
                        ] = None,
    force: Force = False,
):
    """Re-verify parity from golden.npz with onnxruntime alone (no TensorFlow needed)."""
    with user_errors():
        preflight.outputs_writable(folder, [plot_out], force=force)
        preflight.plot_file(plot_out)
        from rnnedge.check import check_dir
        from rnnedge.manifest import Manifest

        replay = dict(atol=atol, rtol=rtol, fallback=fallback, verify=not no_verify)
        report = check_dir(folder, provider, variant=variant, **replay)
        _say(report.case_lines() + [report.summary()])
        if plot_out is not None:
            from rnnedge.check.plot import plot_errors

            plot_errors(report, plot_out, title=f"{folder.name}: worst |diff| against the time step, {report.provider}")
            typer.echo(f"wrote {plot_out}")
        passed = report.passed
        if variant == "fp32" and "ort" in Manifest.load(folder).variants:  # `rnnedge ort` wrote model.ort: replay it
            ort_report = check_dir(folder, provider, variant="ort", **replay)
            _say([f"FAIL model.ort: {failure}" for failure in ort_report.failures()])
            typer.echo("ort (model.ort): " + ort_report.summary())
            passed = passed and ort_report.passed
        if not passed:
            raise typer.Exit(1)


@app.command()
def run(
    folder: Folder,
    input: Annotated[Path, typer.Option("--input", "-i", metavar="FILE", help="Inputs: .npy, .npz (by name), .csv.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="Outputs to .npz, .npy, "
                                                   ".csv; - for JSON on standard output.")] = None,
    chunk: Annotated[Optional[int], typer.Option(metavar="N", min=1, help="Stream N steps at a time.")] = None,
    provider: Provider = "auto",
    threads: Annotated[Optional[int], typer.Option(metavar="N", min=1, max=THREADS_MAX, help="CPU threads.")] = None,
    fallback: Fallback = False,
    no_verify: NoVerify = False,
    force: Force = False,
):
    """Run an exported model on inputs from a file (numpy + onnxruntime only)."""
    with user_errors():
        from rnnedge.runtime import run_file
        from rnnedge.runtime.datafiles import outputs_json, preview

        stdout = preflight.run_output(folder, input, output, force=force)
        outputs = run_file(folder, input, None if stdout else output, chunk=chunk, provider=provider, threads=threads,
                           fallback=fallback, verify=not no_verify)
        if stdout:  # only the JSON on standard output, for a pipe
            typer.echo(outputs_json(outputs))
            return
        for name, value in outputs.items():
            _say([f"{name}: shape {tuple(value.shape)} {value.dtype}", preview(value)])
        typer.echo(f"provider: {outputs.provider}" + (f"; wrote {output}" if output else ""))


@app.command()
def bench(
    folder: Folder,
    provider: Annotated[str, typer.Option(metavar="NAME", help="Execution provider: cpu, cuda, tensorrt.")] = "cpu",
    batch: Annotated[Optional[str], typer.Option(metavar="LIST", callback=_sizes, help="Batch sizes, e.g. 1,8,32.")
                     ] = None,
    time_: Annotated[Optional[str], typer.Option("--time", metavar="LIST", callback=_sizes, help="Lengths, e.g. "
                                                 "16,100,400 (steps per push with --stream).")] = None,
    threads: Threads = 1,
    variants: Annotated[str, typer.Option(metavar="LIST", help="Variants to time, e.g. fp32,int8,fp16.")] = "fp32",
    stream: Annotated[bool, typer.Option("--stream", help="Per-push latency, against a trivial floor.")] = False,
    baseline: Annotated[Optional[str], typer.Option(metavar="LIST", help="keras,tf2onnx,litert,litert-int8")] = None,
    source: Annotated[Optional[str], typer.Option(metavar="MODEL", help="The baselines' model (default: the source).")
                      ] = None,
    runs: Annotated[int, typer.Option(metavar="N", min=1, help="Timed runs per case.")] = 200,
    warmup: Annotated[int, typer.Option(metavar="N", min=0, help="Warm-up runs dropped.")] = 20,
    json_out: Annotated[Optional[Path], typer.Option("--json", metavar="FILE", help="Write the rows as JSON.")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", metavar="FILE", help="Write the rows as CSV.")] = None,
    plot_out: Annotated[Optional[Path], typer.Option("--plot", metavar="PNG", help="Plot latency against length.")
                        ] = None,
    triton: Annotated[Optional[str], typer.Option(metavar="URL", help="Load-test a Triton server (grpc://... or "
                                                  "http://...) beside the in-process runtime.")] = None,
    triton_model: Annotated[Optional[str], typer.Option(metavar="NAME", help="Its model name (the folder's).")] = None,
    concurrency: Annotated[str, typer.Option(metavar="LIST", callback=_sizes, help="Concurrent sequences.")] = "1,8,32",
    sequences: Annotated[int, typer.Option(metavar="N", min=1, help="Sequences per concurrency level.")] = 64,
    chunks: Annotated[int, typer.Option(metavar="N", min=1, help="Requests (chunks) per sequence.")] = 8,
    seconds: Annotated[float, typer.Option(metavar="SECONDS", callback=_positive, help="Time budget per level.")
                       ] = 20.0,
    no_verify: NoVerify = False,
    force: Force = False,
):
    """Latency percentiles and throughput, interleaved with baselines in one process."""
    with user_errors():
        preflight.bench_ready(folder, [json_out, csv_out, plot_out], force=force, plot=plot_out, baseline=baseline,
                              source_model=source, triton=triton)
        from rich.console import Console
        from rich.progress import Progress

        from rnnedge import bench as b

        times = b.int_list(time_, "--time")
        if triton is not None:
            from rnnedge.serve.loadtest import load_test

            steps = (times or (1,))[0]
            with Progress(transient=True) as progress:
                rows, reports = load_test(folder, triton, model=triton_model, sequences=sequences, chunks=chunks,
                                          concurrency=b.int_list(concurrency, "--concurrency"), steps=steps,
                                          seconds=seconds, threads=threads, progress=progress)
            Console().print(b.rich_table(rows, title=f"rnnedge bench --triton {triton}: per chunk of {steps} step(s), "
                                                      f"{chunks} chunks per sequence"))
            _say(r.line() for r in reports)
        else:
            if times is None and plot_out is not None:  # a plot draws latency against length: sweep where it can
                from rnnedge.manifest import Manifest

                times = b.sweep_times(Manifest.load(folder), stream)
            with Progress(auto_refresh=False, transient=True) as progress:  # no refresh thread while timing
                rows = b.bench_dir(folder, provider=provider, batches=b.int_list(batch, "--batch"), times=times,
                                   threads=threads, variants=b.name_list(variants), baselines=b.name_list(baseline),
                                   stream=stream, runs=runs, warmup=warmup, source=source, progress=progress,
                                   verify=not no_verify)
            Console().print(b.rich_table(rows, model=folder.name))
            reports = []
        plot = None if plot_out is None or triton else lambda rows, path: b.plot(rows, path, model=folder.name)
        for path, write in ((json_out, b.write_json), (csv_out, b.write_csv), (plot_out, plot)):
            if path and write:
                write(rows, path)
                typer.echo(f"wrote {path}")
        if not all(r.ok for r in reports):
            raise typer.Exit(1)


@app.command()
def triton(
    folder: Folder,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="REPO", help="The repository to write REPO/<name> in.")],
    name: Annotated[Optional[str], typer.Option(metavar="NAME", help="The model's name (the folder's).")] = None,
    max_batch: Annotated[int, typer.Option(metavar="N", min=0, help="Triton's max_batch_size.")] = 32,
    instances: Annotated[int, typer.Option(metavar="N", min=1, help="Model instances.")] = 1,
    backend: Annotated[Backend, typer.Option(metavar="BACKEND", help="onnxruntime or python (rnnedge's runtime).")
                       ] = Backend.onnxruntime,
    gpu: Annotated[bool, typer.Option("--gpu", help="GPU instances (KIND_GPU).")] = False,
    tensorrt: Annotated[bool, typer.Option("--tensorrt", help="With --gpu: TensorRT.")] = False,
    idle_seconds: Annotated[float, typer.Option(metavar="SECONDS", callback=_positive, help="Release an idle "
                                                "sequence after this long.")] = 60.0,
    max_sequences: Annotated[int, typer.Option(metavar="N", min=1, help="Python: open sequences per instance.")] = 1024,
    threads: Threads = 1,
    queue_delay_ms: Annotated[float, typer.Option(metavar="MS", min=0, help="Wait this long to batch sequences.")
                              ] = 0.0,
    force: Force = False,
    no_verify: NoVerify = False,
):
    """Write a Triton model repository entry (config.pbtxt checked against Triton's schema)."""
    with user_errors():
        preflight.require("serve", "`rnnedge triton` (its configs are checked against Triton's schema)")
        from rnnedge.serve.triton import write_repository

        target = write_repository(folder, out, name=name, backend=backend.value, max_batch=max_batch,
                                  instances=instances, gpu=gpu, tensorrt=tensorrt, idle_seconds=idle_seconds,
                                  max_sequences=max_sequences, threads=threads, queue_delay_ms=queue_delay_ms,
                                  force=force, verify=not no_verify)
        typer.echo(f"wrote {target} ({backend.value} backend); serve it with `rnnedge serve {out}`")


@app.command()
def serve(
    repo: Annotated[Path, typer.Argument(metavar="REPO", help="A model repository written by `rnnedge triton`.")],
    http_port: Annotated[int, typer.Option(metavar="N", min=1, max=65535, help="HTTP port on 127.0.0.1.")] = 8000,
    grpc_port: Annotated[int, typer.Option(metavar="N", min=1, max=65535, help="gRPC port on 127.0.0.1.")] = 8001,
    timeout: Annotated[float, typer.Option(metavar="SECONDS", callback=_positive, help="Wait this long for models.")
                       ] = 60.0,
):
    """Run the nvidia-pytriton wheel's tritonserver on REPO in the foreground (127.0.0.1 only; Ctrl-C stops it)."""
    with user_errors():
        from rnnedge.serve.server import serve_forever

        serve_forever(repo, http_port=http_port, grpc_port=grpc_port, timeout=timeout, say=typer.echo)


@app.command()
def ort(folder: Folder, force: Annotated[bool, typer.Option("--force", help="Convert again if model.ort "
                                                                            "exists.")] = False):
    """Write model.ort (onnxruntime's ORT format) and required_operators.config for minimal/mobile builds."""
    with user_errors():
        from rnnedge.serve.ort import write_ort

        entry = write_ort(folder, force=force)
        worst = max(entry["max_abs_error"].values(), default=0.0)
        status = "PASS" if entry["gate"]["passed"] else "FAIL"
        typer.echo(f"wrote {folder / entry['file']} ({entry['size']:,} bytes) and "
                   f"{folder / entry['required_operators']}")
        typer.echo(f"{status}: golden.npz on the .ort file, worst |diff| {worst:.2e}; run it with "
                   f"rnnedge.load(DIR, variant=\"ort\")")
        if not entry["gate"]["passed"]:
            raise typer.Exit(1)


@app.command()
def view(
    folder: Folder,
    variant: Variant = "fp32",
    port: Annotated[int, typer.Option(metavar="N", help="Port on 127.0.0.1.")] = 8080,
    browse: Annotated[bool, typer.Option("--browse/--no-browse", help="Open the page in a web browser.")] = True,
):
    """Open the exported graph in Netron, served on 127.0.0.1 (Ctrl-C stops)."""
    with user_errors():
        preflight.require("view", "`rnnedge view`")
        from rnnedge.serve.netron import view as netron_view

        netron_view(folder, variant, port=port, browse=browse, say=typer.echo)


@app.command()
def zoo():
    """List the reference zoo's models."""
    with user_errors():
        _say(ZOO)  # the names only: no Keras, no training


@app.command()
def demo(
    out: Annotated[Path, typer.Option(metavar="DIR", help="Folder for the exported zoo.")] = Path("demo-out"),
    force: Annotated[bool, typer.Option("--force", help="Replace existing exports.")] = False,
    models: Annotated[Optional[list[str]], typer.Option("--model", metavar="NAME", help="Only these; repeatable.")
                      ] = None,
    benchmark: Annotated[bool, typer.Option("--benchmark/--no-benchmark", help="Benchmark against the baselines.")
                         ] = True,
):
    """Train the reference zoo, export, check parity, quantize and benchmark; print the tables."""
    with user_errors():
        preflight.demo_ready(models, benchmark)
        from rnnedge.demo import run_demo

        if not run_demo(out, force=force, names=models or None, benchmark=benchmark):
            raise typer.Exit(1)
