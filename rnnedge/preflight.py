"""What a command needs before it starts: its extras installed, its files there and of the right
kind. Standard library only, so a command can refuse in one line before any heavy import."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rnnedge.errors import RnnEdgeError

# extra (as pyproject.toml names it) -> (the modules it provides, what it is for)
EXTRAS = {
    "export": (("tensorflow", "keras", "tf2onnx"), "TensorFlow, Keras and tf2onnx"),
    "quantize": (("onnxconverter_common",), "onnxconverter-common"),
    "plot": (("matplotlib",), "matplotlib"),
    "serve": (("tritonclient",), "tritonclient"),
}

# what a Keras model file starts with: a .keras file is a zip, a legacy .h5 file HDF5
_MAGIC = {".keras": (b"PK\x03\x04", "a zip archive"), ".h5": (b"\x89HDF\r\n\x1a\n", "an HDF5 file")}


def missing(extra: str) -> list[str]:
    """The modules of `extra` that cannot be found (found without importing them)."""
    out = []
    for module in EXTRAS[extra][0]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a blocked or half-installed package
            found = False
        if not found:
            out.append(module)
    return out


def require(extra: str, what: str) -> None:
    """Raise one line naming the extra to install when `what` (e.g. "`rnnedge export`") cannot run."""
    gone = missing(extra)
    if gone:
        modules, names = EXTRAS[extra]
        which = "" if len(gone) == len(modules) else f"; {', '.join(gone)} not installed"
        raise RnnEdgeError(f"{what} needs the {extra!r} extra ({names}{which}): pip install 'rnnedge[{extra}]'")


def keras_file(path: str | Path) -> Path:
    """The path of a Keras model file or SavedModel folder, refused in one line when it is missing,
    empty, a folder without saved_model.pb, of another suffix or not of its suffix's format."""
    path = Path(path)
    if not path.exists():
        raise RnnEdgeError(f"{path}: no such file; expected a .keras model file or zoo:NAME (see `rnnedge zoo`)")
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return path  # a SavedModel folder (tf.keras 2 model.save(dir)); what it holds is read when loaded
    if path.is_dir() or path.suffix not in _MAGIC:
        raise RnnEdgeError(f"{path} is not a Keras model file: expected a .keras or .h5 file, or a SavedModel "
                           "folder (with saved_model.pb)")
    magic, kind = _MAGIC[path.suffix]
    with open(path, "rb") as f:
        head = f.read(len(magic))
    if not head:
        raise RnnEdgeError(f"{path} is empty: expected a Keras model saved with model.save('{path.name}')")
    if head != magic:
        raise RnnEdgeError(f"{path} is not a Keras model file: a {path.suffix} file is {kind}, this one is not "
                           f"(save the model with model.save('{path.name}'))")
    return path


def zoo_name(name: str) -> str:
    """A zoo model's name, refused in one line when the zoo has no such model."""
    from rnnedge.tables import ZOO

    if name not in ZOO:
        raise RnnEdgeError(f"unknown zoo model {name!r}; expected one of: {', '.join(ZOO)}")
    return name
