"""Ctrl-C, noted where it lands: the `rnnedge` command's handler (`rnnedge.entry`) records SIGINT
here before raising KeyboardInterrupt, so whatever exception the interrupt turned into inside a
library (an ImportError from onnxruntime's pybind11, typer's silent exit) is still answered as an
interruption, in one line that says what was left."""

from __future__ import annotations

from rnnedge import files

INTERRUPTED = "interrupted: what was being written was discarded; export folders hold whole exports"
RETRY_S = 0.02  # a Ctrl-C that landed in a finalizer is raised again this much later, outside it
_state = {"interrupted": False, "said": False, "handled": False}
_ANSWERED: set[str] = set()  # modules whose own code answers Ctrl-C itself (`answered_by`)


def on_sigint(signum, frame):
    """The SIGINT handler of the `rnnedge` command: records the signal (here, and in `files`, which
    then puts no result in place) and raises KeyboardInterrupt where that is safe. Inside a commit
    point (`files.held`: a result renamed into place and recorded) it is raised when the point ends.
    Inside a finalizer (`__del__`, such as TensorFlow's AtomicFunction.__del__ run by the garbage
    collector) an exception is printed as "Exception ignored in" and lost, so the signal is
    delivered again a moment later, until it lands outside one (`unraisable_hook` does the same
    for the finalizers and callbacks whose frames do not say so)."""
    _state["interrupted"] = True
    files.interrupt_noted()
    if frame is not None and frame.f_globals.get("__name__") in _ANSWERED:
        return
    if files.holding():
        files.defer_interrupt()
        return
    if _in_finalizer(frame):
        _again_soon()
        return
    raise KeyboardInterrupt


def unraisable_hook(default):
    """A `sys.unraisablehook` for the `rnnedge` command: the KeyboardInterrupt that Ctrl-C raised
    where Python can only print it and go on ("Exception ignored in": a weakref or garbage-collector
    callback, a `finalize` function, a `__del__` that `on_sigint` did not recognise as one) is
    neither printed nor lost: the signal is delivered again a moment later, outside. Everything else
    goes to `default`."""

    def hook(unraisable) -> None:
        kind = unraisable.exc_type
        if isinstance(kind, type) and issubclass(kind, KeyboardInterrupt) and _state["interrupted"]:
            _again_soon()
            return
        default(unraisable)

    return hook


def answered_by(module: str) -> None:
    """Ctrl-C landing in `module`'s own code is noted, not raised: that code checks `interrupted()`
    itself. `rnnedge.entry`: between the command's return and the handler for the process's end,
    a KeyboardInterrupt would escape every handler as a traceback (the Ctrl-C trial hit it once,
    sending Ctrl-C the moment `run -o`'s file appeared)."""
    _ANSWERED.add(module)


def _in_finalizer(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _again_soon() -> None:
    import os
    import signal
    import threading

    timer = threading.Timer(RETRY_S, os.kill, (os.getpid(), signal.SIGINT))  # a real signal: it wakes a sleep
    timer.daemon = True
    timer.start()


def interrupted_now() -> None:
    """Ctrl-C came after the command ended (`rnnedge.entry` ends the process on it): noted, so the
    line it prints is `interrupted_line()`."""
    _state["interrupted"] = True


def handled() -> None:
    """The command took Ctrl-C as its normal end (`rnnedge serve` stopping its server): its own exit
    stands."""
    _state["handled"] = True
    files.interrupt_noted(False)


def swallowed() -> bool:
    """Ctrl-C came, and no command took it as its end, yet the command returned as if it had not:
    a library caught the KeyboardInterrupt (or the exception a finalizer raised was lost)."""
    return _state["interrupted"] and not _state["handled"]


def interrupted() -> bool:
    """Whether Ctrl-C reached this process through `on_sigint`."""
    return _state["interrupted"]


def interrupted_line() -> str:
    """What Ctrl-C left: nothing of what was being written, or (when it came after the command's
    results were in place) those results, whole."""
    done = files.committed_results()
    if not done:
        return INTERRUPTED
    if len(done) == 1:
        return f"interrupted after {done[0]} was written (it is complete); nothing else was changed"
    names = ", ".join(map(str, done[:-1])) + f" and {done[-1]}"
    return f"interrupted after {names} were written (they are complete); nothing else was changed"


def said_interrupted() -> None:
    """The command printed `interrupted_line()` itself (`cli.user_errors`)."""
    _state["said"] = True


def said() -> bool:
    return _state["said"]
