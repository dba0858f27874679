"""The exception types that mean "the user gave us something wrong": RnnEdgeError and its
subclasses (ParityError here; UnsupportedLayerError and SpliceError where layers are converted)."""

from __future__ import annotations

import re


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


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line (its whitespace runs made single spaces), cut to `limit` characters with
    "...": for a refusal that quotes a converter's whole message."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(e: Exception, limit: int = 160, *, scrub: bool = False) -> str:
    """The first line of an exception (its type's name if it has none), cut at a word boundary
    (never mid-URL) after `limit` characters: for a one-line message that quotes a library's error.
    `scrub` (a converter's failure quoted whole: tf2onnx's, onnxruntime's): file paths become <file>
    (a temporary folder means nothing to the user), TensorFlow's "in user code:" trace gives the
    first sentence of the error it ends with, and nothing is cut."""
    if scrub:
        return _scrubbed(e)
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if len(text) <= limit:
        return text.rstrip(". ")
    return text[:limit].rsplit(" ", 1)[0].rstrip(".,;: ") + " ..."


def _scrubbed(err: Exception) -> str:
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(err).splitlines()]
    lines = [ln for ln in lines if ln] or [type(err).__name__]
    line = lines[0]
    at = next((i for i, ln in enumerate(lines) if re.match(r"\w+(Error|Exception): ", ln)), None)
    if line.startswith("in user code") and at is not None:
        said = [lines[at].split(":", 1)[1].strip(), *lines[at + 1:]]
        line = next((ln for ln in said if not ln.startswith("Exception encountered")), said[0]).split(". ")[0]
    return re.sub(r"(?<![\w.-])(?:[A-Za-z]:)?[\\/][^\s:,;()'\"]*", "<file>", line)
