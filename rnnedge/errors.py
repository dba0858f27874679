"""The exception types that mean "the user gave us something wrong": RnnEdgeError and its
subclasses (ParityError here; UnsupportedLayerError and SpliceError where layers are converted)."""

from __future__ import annotations


class RnnEdgeError(Exception):
    """A problem with the user's input: a missing file, an unsupported layer, a bad array.

    The message is one line that says what was expected, what was found and what to do.
    The CLI prints it without a traceback and exits non-zero. Any other exception is a bug.
    `cli`: the same message for the command line, where what to do is a flag rather than a Python
    argument (worded where the error is made; the CLI prints it instead).
    """

    def __init__(self, *args, cli: str | None = None):
        super().__init__(*args)
        self.cli = cli


class ParityError(RnnEdgeError):
    """The exported ONNX model does not match Keras within tolerance (files are kept)."""
