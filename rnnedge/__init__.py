"""rnnedge: Keras recurrent models to fused, verified ONNX for the edge.

The runtime (`rnnedge.load`) needs numpy and onnxruntime only; exporting (`rnnedge.export`)
needs the `export` extra (TensorFlow, Keras, tf2onnx) and imports it lazily.
"""

from rnnedge.errors import ParityError, RnnEdgeError

__all__ = ["RnnEdgeError", "ParityError", "export", "load", "__version__"]


def export(model, out, **kwargs):
    """Export a Keras model (object, `.keras` path or `zoo:NAME`) to DIR; see `rnnedge.exporter.export`.
    Without the export extra: RnnEdgeError naming it, before anything is imported."""
    from rnnedge.preflight import require

    require("export", "rnnedge.export")
    from rnnedge.pipeline import export as _export

    return _export(model, out, **kwargs)


def load(folder, provider="auto", **kwargs):
    """Load an export folder for inference (numpy + onnxruntime only); see `rnnedge.runtime.load`."""
    from rnnedge.runtime import load as _load

    return _load(folder, provider, **kwargs)


def __getattr__(name):
    """`rnnedge.__version__` on first use: the front door imports nothing heavy (numpy included), so
    the `rnnedge` command answers Ctrl-C from its first milliseconds (see `rnnedge.entry`)."""
    if name == "__version__":
        from rnnedge.tables import VERSION

        return VERSION
    raise AttributeError(f"module 'rnnedge' has no attribute {name!r}")
