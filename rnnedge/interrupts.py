"""Ctrl-C, noted where it lands: the `rnnedge` command's handler (`rnnedge.entry`) records SIGINT
here before raising KeyboardInterrupt, so whatever exception the interrupt turned into inside a
library (an ImportError from onnxruntime's pybind11, typer's silent exit) is still answered as an
interruption, in one line that says what was left."""

from __future__ import annotations

INTERRUPTED = "interrupted: what was being written was discarded; export folders hold whole exports"
_state = {"interrupted": False, "said": False}


def on_sigint(signum, frame):
    """The SIGINT handler of the `rnnedge` command."""
    _state["interrupted"] = True
    raise KeyboardInterrupt


def interrupted() -> bool:
    """Whether Ctrl-C reached this process through `on_sigint`."""
    return _state["interrupted"]


def interrupted_line() -> str:
    """What Ctrl-C left: nothing of what was being written, or (when it came after the command's
    result was in place) that result, whole."""
    from rnnedge.files import last_committed

    done = last_committed()
    if done is None:
        return INTERRUPTED
    return f"interrupted after {done} was written (it is complete); nothing else was changed"


def said_interrupted() -> None:
    """The command printed `interrupted_line()` itself (`cli.user_errors`)."""
    _state["said"] = True


def said() -> bool:
    return _state["said"]
