"""The `rnnedge` command (and `python -m rnnedge`): the CLI, with Ctrl-C answered in one line and
exit 130 wherever it lands.

Python raises SIGINT as KeyboardInterrupt wherever the program is, and not every place lets it
through as such: typer's parser exits 130 silently, and during onnxruntime's module initialisation
pybind11 turns it into "ImportError: initialization failed". So this entry, imported before
anything heavy (the package's front door imports only `rnnedge.errors`), notes the signal itself
(`rnnedge.interrupts`): whatever exception it caused, the user reads one line. A command that
handles Ctrl-C as its normal end (`rnnedge serve`) keeps its own exit. Once the command has ended,
the process ends without the interpreter's shutdown (`_finish`: CPython's cannot answer Ctrl-C), and
Ctrl-C until then ends it at once, without a traceback: 130 and the one line after a command that
succeeded (it says what was written, whole), else the command's own exit code.

Native libraries' log lines (TensorFlow's absl and oneDNN lines on AVX-512 CPUs, onnxruntime's
warnings) are held off the terminal for the whole command (`rnnedge.logs.hold_stderr`) and shown
only when the command ends in an unexpected error, before its traceback.

Ctrl-C before `main` has set its handler (tens of milliseconds, longer on a loaded machine: the
interpreter's start-up and `site` import, then the imports of `python -m` and of this module) is
Python's own: a "Fatal Python error" during `site`, a KeyboardInterrupt traceback after it."""

from __future__ import annotations

import faulthandler
import os
import signal
import sys

from rnnedge import interrupts
from rnnedge.logs import hold_stderr


def _usage(e) -> int:
    """click's usage error (a missing argument, a value of the wrong type, an unknown command) in
    one line, as every other error is; with no arguments at all, the help."""
    if type(e).__name__ == "NoArgsIsHelpError":
        text = e.format_message()  # typer's rich help prints itself and returns ""
        if text.strip():
            sys.stderr.write(text + "\n")
        return e.exit_code
    ctx = getattr(e, "ctx", None)
    see = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    sys.stderr.write(f"error: {' '.join(e.format_message().split()).rstrip('.')}{see}\n")
    return e.exit_code


def main() -> None:
    held, code = None, 0
    interrupts.answered_by(__name__)  # Ctrl-C in this module's code is answered below, not raised in it
    signal.signal(signal.SIGINT, interrupts.on_sigint)
    sys.unraisablehook = interrupts.unraisable_hook(sys.unraisablehook)
    try:  # from here on, Ctrl-C is one line wherever it lands (holding descriptor 2 included)
        held = hold_stderr()
        if held is not None:
            faulthandler.enable(sys.stderr)  # a native crash still shows where, on the terminal
        from rnnedge.cli import app

        if interrupts.interrupted():  # Ctrl-C came in this function's own code, before the command
            raise KeyboardInterrupt
        returned = app(standalone_mode=False)  # an exit code (typer.Exit), or a command's return value
        code = returned if isinstance(returned, int) else 0
    except SystemExit as e:
        code = e.code
    except BaseException as e:
        if interrupts.interrupted():
            code = 130
        elif hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int):
            code = _usage(e)
        elif type(e).__name__ == "Abort":  # end of input at a prompt
            sys.stderr.write("error: aborted\n")
            code = 1
        else:  # a bug: what native code said may explain it
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if held is not None:
                held.replay()
            raise
    code = code if isinstance(code, int) or code is None else 1
    signal.signal(signal.SIGINT, _ended(code))
    if interrupts.interrupted() and (code not in (0, None) or interrupts.swallowed()):
        # (a command that returned as if Ctrl-C never came: a library or a finalizer swallowed it)
        _say_interrupted()
        _finish(130, join=False)  # its threads may be the work Ctrl-C stopped
    _finish(code)


def _finish(code: int | None, join: bool = True) -> None:
    """End a command that ran its course without the interpreter's shutdown, which cannot answer
    Ctrl-C: CPython stops handling signals (SIGINT back to its default action) before it collects
    garbage and clears modules, where TensorFlow spends most of a second (measured on an export:
    0.9 s of 6). A Ctrl-C there was ignored (exit 0, issue #28), or would kill the process without a
    line. What that shutdown does that matters is done here, Ctrl-C answered throughout: threads
    that are not daemons joined (`join`), atexit functions run (temporary files' and folders'
    removal: TensorFlow's autograph files, `finalize`; logging's flush), the standard streams flushed."""
    import atexit
    import threading

    if join:  # as CPython's exit does first: thread pools told to stop (they wait for work otherwise), then joined
        shutdown = getattr(threading, "_shutdown", None)
        if shutdown is not None:
            shutdown()
        else:
            for thread in threading.enumerate():
                if thread is not threading.main_thread() and not thread.daemon:
                    thread.join()
    atexit._run_exitfuncs()
    _out(code or 0)


def _say_interrupted() -> None:
    """The interruption's one line, once."""
    if not interrupts.said():
        interrupts.said_interrupted()
        try:
            sys.stderr.write(interrupts.interrupted_line() + "\n")
            sys.stderr.flush()
        except (OSError, ValueError, RuntimeError):  # RuntimeError: a handler inside a write to it
            pass


def _out(code: int) -> None:
    """End the process now with `code` (130: after the interruption's one line, once), without the
    interpreter's shutdown: a KeyboardInterrupt that passed through code run by a C extension
    (pybind11's exec) leaves CPython's "unhandled Ctrl-C" flag set, and shutdown would then kill
    the process with SIGINT instead of exiting 130. What rnnedge writes is fsynced already; only
    the standard streams need flushing."""
    if code == 130:
        _say_interrupted()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # `rnnedge ... | head`: the reader has what it wanted
            code = code or 141  # as a process ended by SIGPIPE (cli.common.user_errors says the same)
        except (OSError, ValueError, RuntimeError):
            pass
    os._exit(code)


def _ended(code: int | None):
    """The SIGINT handler from the command's end to the process's (`_finish`), where a Ctrl-C that
    was ignored read as an interruption ignored (exit 0, issue #28). Ctrl-C there ends the process
    at once: a command that succeeded exits 130 with the one line (which names the result
    it wrote, whole); one that failed, or that ended on Ctrl-C already (`rnnedge serve`), keeps its
    exit code and its own last line. Nothing is raised: no traceback from the shutdown."""

    def on_sigint(signum, frame):
        interrupted = interrupts.interrupted()
        if code in (0, None) and not interrupted:
            interrupts.interrupted_now()
            _out(130)
        _out(130 if interrupted and interrupts.swallowed() else code or 0)

    return on_sigint
