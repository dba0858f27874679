"""Keeping TensorFlow's, absl's and the converters' log lines off the user's terminal while rnnedge
drives them, without hiding a real error: what a quieted step wrote is shown when the step fails.

Native libraries write to file descriptor 2 directly, and some lines come whatever
`TF_CPP_MIN_LOG_LEVEL` says: on CPUs with AVX-512, TensorFlow prints absl's "All log messages before
absl::InitializeLog()" and oneDNN's "custom operations are on" at import, and oneDNN's "DT_BOOL"
line while tracing. So the `rnnedge` command holds descriptor 2 for its whole run (`hold_stderr`):
Python's own `sys.stderr` (rnnedge's messages, warnings, tracebacks) keeps the terminal, while what
native code writes goes to a file, replayed only when the command ends in an unexpected error."""

from __future__ import annotations

import logging
import os
import sys
import tempfile

# Python loggers whose INFO and WARNING lines are the libraries talking to themselves
# ("Please consider providing the trackable_obj argument", tf2onnx's progress, ...)
QUIET_LOGGERS = ("absl", "tensorflow", "tf2onnx", "h5py")


def quiet_tensorflow() -> None:
    """Call where TensorFlow is first needed, before Keras imports it: its C++ INFO and WARNING lines
    off (errors kept; a TF_CPP_MIN_LOG_LEVEL the user set wins), absl's and TensorFlow's Python
    loggers at ERROR, and TensorFlow imported with its native start-up lines captured."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import absl.logging  # light (no TensorFlow); makes the "absl" logger absl's own class first

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules:
        # The `tensorflow` wheel (the CUDA build, which tf_keras needs) logs its CUDA stubs' search
        # and oneDNN's notice on fd 2 at import and at the first device query, on every machine and
        # whatever TF_CPP_MIN_LOG_LEVEL says: both happen here, captured (replayed if they fail).
        with quiet_native_stderr():
            try:
                import tensorflow as tf
            except ImportError:  # the caller says which extra to install
                return
            tf.config.list_physical_devices()


def _interrupted(exc_type) -> bool:
    """Ctrl-C, whatever exception it became: the user stopped the step, nothing failed to explain."""
    from rnnedge.interrupts import interrupted

    return issubclass(exc_type, KeyboardInterrupt) or interrupted()


class quiet_native_stderr:
    """Capture file descriptor 2 (native libraries' logging: TensorFlow, XNNPACK, grappler) for a
    block; when the block raises an error (an interruption is none), what it wrote is replayed on
    stderr (its last `keep` bytes) before the exception goes on, so a failing step still shows its reason."""

    def __init__(self, keep: int = 8000):
        self.keep = keep

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, exc_type, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        try:
            if exc_type is not None and not _interrupted(exc_type):
                size = self._file.seek(0, os.SEEK_END)
                self._file.seek(max(0, size - self.keep))
                written = self._file.read()
                if written.strip():
                    sys.stderr.write(written.decode(errors="replace"))
                    sys.stderr.flush()
        finally:
            self._file.close()
        return False


class HeldStderr:
    """File descriptor 2 sent to a private file for the rest of the process, while `sys.stderr`
    writes to the original terminal (a duplicate of it). `replay()` copies what native code wrote
    (its last `keep` bytes) to the terminal, for a command that ends in an unexpected error."""

    def __init__(self, keep: int = 16000):
        self.keep = keep
        sys.stderr.flush()
        self.terminal = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        os.set_inheritable(2, True)
        # line-buffered like the stderr it replaces, on the terminal's descriptor
        sys.stderr = os.fdopen(self.terminal, "w", buffering=1, encoding=sys.stderr.encoding,
                               errors="backslashreplace", closefd=False)

    def captured(self) -> str:
        size = self._file.seek(0, os.SEEK_END)
        self._file.seek(max(0, size - self.keep))
        return self._file.read().decode(errors="replace")

    def replay(self) -> None:
        written = self.captured()
        if written.strip():
            sys.stderr.write(written if written.endswith("\n") else written + "\n")
            sys.stderr.flush()


def hold_stderr() -> HeldStderr | None:
    """Hold descriptor 2 for the process (see `HeldStderr`); None where it cannot be done (no
    descriptor 2, or one that cannot be duplicated): then native lines show, nothing else changes."""
    try:
        os.fstat(2)
        return HeldStderr()
    except (OSError, ValueError, AttributeError):
        return None
