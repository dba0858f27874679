"""`rnnedge export` and `rnnedge quantize`: a Keras model to a verified export folder, and its variants."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rnnedge import preflight
from rnnedge.cli.common import (
    Data,
    Folder,
    Force,
    Metric,
    NoVerify,
    app,
    say,
    user_errors,
)
from rnnedge.tables import ATOL, OPSETS, RTOL, opset_checked


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
    target: Annotated[Optional[str], typer.Option(metavar="P", help="Shape the export for a provider (qnn: static "
                                                  "shapes, SimpleRNN unrolled) and check it there if installed.")
                      ] = None,
    custom: Annotated[Optional[list[str]], typer.Option(metavar="MODULE", help="A .py file or dotted module path "
                                                        "defining the model's custom classes; repeatable.")] = None,
):
    """Export a Keras recurrent model to fused ONNX and verify it against Keras."""
    with user_errors():
        opset_checked(opset)
        fixed = preflight.static_axes(static)
        preflight.target_ready(model, target, fixed)
        preflight.export_options(custom=custom, metric=metric.value if metric else None, data=data,
                                 quantize=quantize)
        from rnnedge.check import Tolerance, parse_tolerances

        tolerances, overrides = Tolerance(atol, rtol), parse_tolerances(tolerance or [])  # before TensorFlow loads
        preflight.export_ready(model, out, force=force, data=data, static=fixed, quantize=quantize)
        from rnnedge.pipeline import export as run_export

        result = run_export(model, out, force=force, streaming=streaming, allow_loop=allow_loop, unsafe=unsafe,
                            tolerance=tolerances, overrides=overrides,
                            quantize=quantize or (), data=data, metric=metric.value if metric else None, opset=opset,
                            static=fixed, target=target, custom=custom or None)
        say(result.lines())
        if quantize:
            _print_variants(result.manifest)


def _print_variants(manifest, explain: bool = False):
    from rnnedge.quantize.report import explain_lines, variant_lines

    say(variant_lines(manifest) + (explain_lines(manifest) if explain else []))


@app.command()
def quantize(
    folder: Folder,
    variants: Annotated[str, typer.Option(metavar="LIST", help="Comma-separated variants: int8, fp16.")] = "int8,fp16",
    data: Data = None,
    metric: Metric = None,
    no_verify: NoVerify = False,
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
        evaluate, note = zoo_evaluator(*_source_and_static(folder)) if data is None else (None, None)
        if note:
            typer.echo(note, err=True)
        quantize_dir(folder, variants, evaluate=evaluate, data=data, metric=metric.value if metric else None,
                     setting=int8, verify=not no_verify)
        _print_variants(Manifest.load(folder), explain)


def _source_and_static(folder: Path) -> tuple[str, dict]:
    from rnnedge.manifest import Manifest

    manifest = Manifest.load(folder)
    return manifest.source.get("name", ""), manifest.static
