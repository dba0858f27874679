"""Keras 3 -> ONNX with every recurrent layer as one fused LSTM/GRU/RNN node (needs the export extra)."""

from rnnedge.exporter.convert.context import UnsupportedLayerError
from rnnedge.exporter.convert.core import Converted, convert, functional_graph, recurrent_layers

__all__ = ["Converted", "UnsupportedLayerError", "convert", "functional_graph", "recurrent_layers"]
