"""`rnnedge zoo` and `rnnedge demo`: the reference zoo, listed or trained, exported and benchmarked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rnnedge import preflight
from rnnedge.cli.common import (
    app,
    say,
    user_errors,
)
from rnnedge.tables import ZOO


@app.command()
def zoo():
    """List the reference zoo's models."""
    with user_errors():
        say(ZOO)  # the names only: no Keras, no training


@app.command()
def demo(
    out: Annotated[Path, typer.Option(metavar="DIR", help="Folder for the exported zoo (default "
                                      "demo-out: a whole zoo, not one model).")] = Path("demo-out"),
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
