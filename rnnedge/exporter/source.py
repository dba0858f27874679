"""Where an export starts: the Keras model from an object, a .keras file (safe_mode on unless
asked) or zoo:NAME, its fingerprint, and the versions of the libraries involved."""

from __future__ import annotations

import hashlib
from importlib import metadata

import keras
import numpy as np

from rnnedge.errors import RnnEdgeError
from rnnedge.preflight import keras_file
from rnnedge.tables import VERSION as __version__


def load_keras(source, *, unsafe: bool = False):
    """(keras.Model, description, sha256, zoo entry or None) from a model, a path, `zoo:NAME`
    or a loaded `rnnedge.zoo.ZooModel`."""
    if isinstance(source, keras.Model):
        return source, source.name, _weights_sha256(source), None
    if hasattr(source, "model") and hasattr(source, "x_test"):  # a ZooModel
        return source.model, f"zoo:{source.name}", _weights_sha256(source.model), source
    text = str(source)
    if text.startswith("zoo:"):
        from rnnedge import zoo

        entry = zoo.load(text[4:])
        return entry.model, text, _weights_sha256(entry.model), entry
    path = keras_file(text)  # missing, empty, or not a .keras/.h5 file: one line, before Keras reads it
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as e:  # Keras raises many types for a bad file; all mean "not loadable"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "safe_mode" in str(e) or "Lambda" in str(e):
            raise RnnEdgeError(
                f"{path} holds a Lambda layer, which can run arbitrary code when loaded; "
                "pass --unsafe only if you trust the file"
            ) from None
        raise RnnEdgeError(f"{path} is not a loadable Keras model ({reason[:160]})") from None
    if not isinstance(model, keras.Model):
        raise RnnEdgeError(f"{path} does not hold a keras.Model")
    return model, str(path), hashlib.sha256(path.read_bytes()).hexdigest(), None


def _weights_sha256(model) -> str:
    h = hashlib.sha256(model.to_json().encode())
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def versions() -> dict[str, str]:
    found = {"rnnedge": __version__}
    for pkg in ("keras", "tensorflow", "tensorflow-cpu", "tf2onnx", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy"):
        try:
            found[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return found
