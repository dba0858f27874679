"""`rnnedge bench`: latency and throughput of an export beside its baselines, or of a Triton server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rnnedge import preflight
from rnnedge.cli.common import (
    Folder,
    Force,
    NoVerify,
    Precision,
    Threads,
    app,
    positive,
    say,
    sizes_opt,
    user_errors,
)


@app.command()
def bench(
    folder: Folder,
    provider: Annotated[str, typer.Option(metavar="LIST", help="Execution providers, side by side: cpu, cuda, "
                                          "tensorrt, openvino, qnn (e.g. cpu,openvino,qnn). Default cpu, not auto as "
                                          "in check and run: a timing names the provider it times.")] = "cpu",
    precision: Precision = None,
    batch: Annotated[Optional[str], typer.Option(metavar="LIST", callback=sizes_opt, help="Batch sizes, e.g. 1,8,32.")
                     ] = None,
    time_: Annotated[Optional[str], typer.Option("--time", metavar="LIST", callback=sizes_opt, help="Lengths, e.g. "
                                                 "16,100,400 (steps per push with --stream).")] = None,
    threads: Threads = 1,
    variants: Annotated[Optional[str], typer.Option(metavar="LIST", help="Variants to time, e.g. fp32,int8 "
                                                   "(default: every one the folder has).")] = None,
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
    concurrency: Annotated[str, typer.Option(metavar="LIST", callback=sizes_opt, help="Concurrent sequences.")
                           ] = "1,8,32",
    sequences: Annotated[int, typer.Option(metavar="N", min=1, help="Sequences per concurrency level.")] = 64,
    chunks: Annotated[int, typer.Option(metavar="N", min=1, help="Requests (chunks) per sequence.")] = 8,
    seconds: Annotated[float, typer.Option(metavar="SECONDS", callback=positive, help="Time budget per level.")
                       ] = 20.0,
    no_verify: NoVerify = False,
    force: Force = False,
):
    """Latency percentiles and throughput, interleaved with baselines in one process."""
    with user_errors():
        if provider in ("wasm", "webgpu"):  # onnxruntime-web in headless Chromium, TF.js as the baseline (rnnedge.web)
            from rnnedge.web.bench import bench_cli

            other = {"--batch": batch not in (None, "1"), "--variants": variants not in (None, "fp32"),
                     "--stream": stream, "--csv": csv_out, "--plot": plot_out, "--triton": triton,
                     "--threads": threads != 1}
            bench_cli(folder, provider, baseline, source, time_, runs, warmup, seconds, json_out, force,
                      not_here=[k for k, v in other.items() if v])
            return
        preflight.bench_ready(folder, [json_out, csv_out, plot_out], force=force, plot=plot_out, baseline=baseline,
                              source_model=source, triton=triton)
        from rich.console import Console

        from rnnedge import bench as b

        times = b.int_list(time_, "--time")
        if triton is not None:
            from rnnedge.serve.loadtest import load_test

            steps = (times or (1,))[0]
            with _progress(transient=True) as progress:
                rows, reports = load_test(folder, triton, model=triton_model, sequences=sequences, chunks=chunks,
                                          concurrency=b.int_list(concurrency, "--concurrency"), steps=steps,
                                          seconds=seconds, threads=threads, progress=progress)
            Console().print(b.rich_table(rows, title=f"rnnedge bench --triton {triton}: per chunk of {steps} step(s), "
                                                      f"{chunks} chunks per sequence"))
            say(r.line() for r in reports)
        else:
            if times is None and plot_out is not None:  # a plot draws latency against length: sweep where it can
                from rnnedge.manifest import Manifest

                times = b.sweep_times(Manifest.load(folder), stream)
            placements: dict = {}
            with _progress(auto_refresh=False, transient=True) as progress:  # no refresh thread while timing
                rows = b.bench_dir(folder, provider=provider, batches=b.int_list(batch, "--batch"), times=times,
                                   threads=threads, variants=b.name_list(variants) if variants else None,
                                   baselines=b.name_list(baseline),
                                   stream=stream, runs=runs, warmup=warmup, source=source, progress=progress,
                                   verify=not no_verify, precision=precision, placements=placements)
            Console().print(b.rich_table(rows, model=folder.name))
            say([f"placement of {name}: {p.summary()}" for name, p in placements.items()])
            say(b.fastest(rows))
            reports = []
        plot = None if plot_out is None or triton else lambda rows, path: b.plot(rows, path, model=folder.name)
        for path, write in ((json_out, b.write_json), (csv_out, b.write_csv), (plot_out, plot)):
            if path and write:
                write(rows, path)
                typer.echo(f"wrote {path}")
        if not all(r.ok for r in reports):
            raise typer.Exit(1)


def _progress(**options):
    """A progress bar on a terminal; nothing elsewhere (rich would end it with a blank line, even before an error)."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console()
    return Progress(console=console, disable=not console.is_interactive, **options)
