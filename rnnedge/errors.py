"""The one exception type that means "the user gave us something wrong"."""


class RnnEdgeError(Exception):
    """A problem with the user's input: a missing file, an unsupported layer, a bad array.

    The message is one line that says what was expected, what was found and what to do.
    The CLI prints it without a traceback and exits non-zero. Any other exception is a bug.
    """


class ParityError(RnnEdgeError):
    """The exported ONNX model does not match Keras within tolerance (files are kept)."""
