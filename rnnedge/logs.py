"""Keeping native libraries' log lines (TensorFlow, XNNPACK, grappler) off the user's terminal."""

from __future__ import annotations

import os


class quiet_native_stderr:
    """Silence file descriptor 2 (native libraries' logging) for a block; Python errors still raise."""

    def __enter__(self):
        import sys

        sys.stderr.flush()
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        return False
