"""`rnnedge check` and `rnnedge run`: replay the golden cases, run on a user's inputs (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rnnedge import preflight
from rnnedge.cli.common import (
    CoreThreads,
    Fallback,
    Folder,
    Force,
    NoVerify,
    Precision,
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
    precision: Precision = None,
    variant: Variant = "fp32",
    atol: Annotated[Optional[float], typer.Option(metavar="TOL", help="Absolute tolerance (the provider's).")] = None,
    rtol: Annotated[Optional[float], typer.Option(metavar="TOL", help="Relative tolerance (the provider's).")] = None,
    fallback: Fallback = False,
    threads: CoreThreads = None,
    no_verify: NoVerify = False,
    plot_out: Annotated[Optional[Path], typer.Option("--plot", metavar="PNG", help="Plot the worst |diff| per step.")
                        ] = None,
    force: Force = False,
    record: Annotated[bool, typer.Option(help="Record a check on a provider named other than CPU in "
                                         "manifest.json.")] = True,
):
    """Re-verify parity from golden.npz with onnxruntime alone (no TensorFlow needed), and say which
    nodes ran on the provider (onnxruntime's placement) and why any did not."""
    with user_errors():
        preflight.outputs_writable(folder, [plot_out], force=force)
        preflight.plot_file(plot_out)
        from rnnedge.check import check_dir
        from rnnedge.manifest import Manifest

        if provider in ("wasm", "webgpu"):  # onnxruntime-web in headless Chromium (rnnedge.web)
            from rnnedge.errors import RnnEdgeError
            from rnnedge.web import check_browser

            if threads is not None:
                raise RnnEdgeError(f"--threads {threads}: the browser's check runs onnxruntime-web on one thread; "
                                   "drop --threads")

            report = check_browser(folder, provider, variant=variant, atol=atol, rtol=rtol, verify=not no_verify)
            say(report.case_lines() + [report.summary()])
            if plot_out is not None:
                from rnnedge.check.plot import plot_errors

                plot_errors(report, plot_out, title=f"{folder.name}: worst |diff| against the time step, {provider}")
                typer.echo(f"wrote {plot_out}")
            if not report.passed:
                raise typer.Exit(1)
            return
        replay = dict(atol=atol, rtol=rtol, fallback=fallback, verify=not no_verify, precision=precision,
                      threads=threads)
        report = check_dir(folder, provider, variant=variant, **replay)
        say(report.case_lines() + placement_lines(report) + [report.summary()])
        named = provider.strip().lower() != "auto"  # a provider asked for by name, not whatever is installed
        if record and named and report.provider != "CPUExecutionProvider" and variant == "fp32":
            from rnnedge.check.folder import record_check

            key = record_check(folder, report, verified=not no_verify)
            typer.echo(f"recorded in {folder / 'manifest.json'} (providers: {key!r})")
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


def placement_lines(report) -> list[str]:
    """The placement onnxruntime recorded (nodes off the provider with their layer and reason) and the
    tolerance's rule where it is not the provider's atol/rtol."""
    lines = []
    if report.placement is not None:
        lines += ["placement: " + report.placement.summary(), *report.placement.lines()]
    if report.rule:
        lines.append(f"tolerance: {report.rule}")
    return lines


@app.command()
def run(
    folder: Folder,
    input: Annotated[Path, typer.Option("--input", "-i", metavar="FILE", help="Inputs: .npy, .npz (by name), .csv.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="Outputs to .npz, .npy, "
                                                   ".csv; - for JSON on standard output.")] = None,
    chunk: Annotated[Optional[int], typer.Option(metavar="N", min=1, help="Stream N steps at a time (a .npy input is "
                                                 "read chunk by chunk, so it may exceed memory).")] = None,
    provider: Provider = "auto",
    precision: Precision = None,
    threads: CoreThreads = None,
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
                           fallback=fallback, variant=variant, verify=not no_verify, precision=precision)
        if stdout:  # only the JSON on standard output, for a pipe
            typer.echo(outputs_json(outputs))
            return
        for name, value in outputs.items():  # written to a file: a summary; else the values
            say([f"{name}: shape {tuple(value.shape)} {value.dtype}" + (f", {summary(value)}" if output else "")]
                + ([] if output else [preview(value)]))
        typer.echo(f"provider: {outputs.provider}" + (f"; wrote {output}" if output else ""))
        unchecked = provider_unchecked(folder, outputs.provider)
        if unchecked:
            typer.echo(unchecked, err=True)


def provider_unchecked(folder: Path, provider: str) -> str | None:
    """A line where the provider that ran has no passing `rnnedge check` recorded in the manifest (CPU's
    parity is the export's own): no provider's numbers reach the user unchecked and unsaid."""
    from rnnedge.manifest import Manifest
    from rnnedge.tables import CPU, label

    if provider == CPU:
        return None
    checks = [c for c in Manifest.load(folder).providers.values() if c.get("provider") == provider]
    how = f"`rnnedge check {folder} --provider {label(provider).lower()}`"
    if not checks:
        return f"note: {label(provider)} was never checked on this export against Keras; check it with {how}"
    failed = [c for c in checks if not c.get("passed")]
    if failed:
        return (f"warning: the last check on {label(provider)} ({failed[0].get('precision')}) FAILED against "
                f"Keras: these outputs are not right; see {how}")
    return None
