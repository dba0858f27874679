"""What every command shares: the typer app, the one-line error handling, options declared once.

The `rnnedge` command line parses arguments and calls the library; no logic of its own.

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

from rnnedge.errors import RnnEdgeError
from rnnedge.files import disk_error
from rnnedge.interrupts import interrupted, interrupted_line, said_interrupted
from rnnedge.tables import METRICS, VERSION

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


def say(lines) -> None:
    for line in lines:
        typer.echo(line)


def sizes_opt(ctx, param, value: Optional[str]):
    """A LIST option of sizes ("1,8,32") checked while the command line is parsed: a mistake is a usage
    error (exit 2), like a value of the wrong type."""
    from rnnedge.bench.cases import int_list

    option = param.opts[0]
    try:
        int_list(value, option)
    except RnnEdgeError as e:
        raise typer.BadParameter(str(e).removeprefix(f"{option} "), ctx, param) from None
    return value


def positive(ctx, param, value: float) -> float:
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
Provider = Annotated[str, typer.Option(metavar="NAME", help="Execution provider: auto, cpu, cuda, tensorrt, "
                                                              "openvino, qnn, or onnxruntime's full name.")]
Precision = Annotated[Optional[str], typer.Option(metavar="P", help="Pin the provider's precision: OpenVINO f32 "
                                                                   "(its default here), bf16 or f16; QNN fp16.")]
Fallback = Annotated[bool, typer.Option("--fallback", help="Run on CPU if the provider is not available.")]
Threads = Annotated[int, typer.Option(metavar="N", min=1, max=THREADS_MAX, help="onnxruntime intra-op threads "
                                      "(default 1, not every core as in run: one per timed run or server instance).")]
CoreThreads = Annotated[Optional[int], typer.Option("--threads", metavar="N", min=1, max=THREADS_MAX,
                                                    help="CPU threads (default: onnxruntime's, every core).")]
Variant = Annotated[str, typer.Option(metavar="NAME", help="Model variant: fp32, int8, fp16.")]
Metric = Annotated[Optional[MetricChoice], typer.Option(metavar="METRIC", help="Task metric for --data targets: "
                                                                                "accuracy, f1 or rmse.")]
Data = Annotated[Optional[Path], typer.Option(metavar="FILE", help=".npz of inputs (by name) and targets 'y' for "
                                                                   "calibration and the accuracy gate.")]
