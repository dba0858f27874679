"""`rnnedge check` and `rnnedge run`: replay the golden cases, run on a user's inputs (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rnnedge import preflight
from rnnedge.cli.common import (
    THREADS_MAX,
    Fallback,
    Folder,
    Force,
    NoVerify,
    Provider,
    Variant,
    app,
    say,
    user_errors,
)


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
        say(report.case_lines() + [report.summary()])
        if plot_out is not None:
            from rnnedge.check.plot import plot_errors

            plot_errors(report, plot_out, title=f"{folder.name}: worst |diff| against the time step, {report.provider}")
            typer.echo(f"wrote {plot_out}")
        passed = report.passed
        if variant == "fp32" and "ort" in Manifest.load(folder).variants:  # `rnnedge ort` wrote model.ort: replay it
            ort_report = check_dir(folder, provider, variant="ort", **replay)
            say([f"FAIL model.ort: {failure}" for failure in ort_report.failures()])
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
    variant: Variant = "fp32",
):
    """Run an exported model on inputs from a file (numpy + onnxruntime only)."""
    with user_errors():
        from rnnedge.runtime import run_file
        from rnnedge.runtime.datafiles import outputs_json, preview, summary

        stdout = preflight.run_output(folder, input, output, force=force)
        outputs = run_file(folder, input, None if stdout else output, chunk=chunk, provider=provider, threads=threads,
                           fallback=fallback, variant=variant, verify=not no_verify)
        if stdout:  # only the JSON on standard output, for a pipe
            typer.echo(outputs_json(outputs))
            return
        for name, value in outputs.items():  # written to a file: a summary; else the values
            say([f"{name}: shape {tuple(value.shape)} {value.dtype}" + (f", {summary(value)}" if output else "")]
                + ([] if output else [preview(value)]))
        typer.echo(f"provider: {outputs.provider}" + (f"; wrote {output}" if output else ""))
