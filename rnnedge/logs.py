"""Keeping TensorFlow's, absl's and the converters' log lines off the user's terminal while rnnedge
drives them, without hiding a real error: what a quieted step wrote is shown when the step fails."""

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
            if exc_type is not None and issubclass(exc_type, Exception):  # not for Ctrl-C: no step failed
                size = self._file.seek(0, os.SEEK_END)
                self._file.seek(max(0, size - self.keep))
                written = self._file.read()
                if written.strip():
                    sys.stderr.write(written.decode(errors="replace"))
                    sys.stderr.flush()
        finally:
            self._file.close()
        return False
