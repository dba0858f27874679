"""Keras 3 -> ONNX with every recurrent layer as one fused LSTM/GRU/RNN node (needs the export extra).
What is used outside convert/ is named here."""

from rnnedge.exporter.convert.context import UnsupportedLayerError
from rnnedge.exporter.convert.core import Converted, convert, functional_graph, recurrent_layers
from rnnedge.exporter.convert.graph import OPSET
from rnnedge.exporter.convert.interface import (
    Interface,
    fix_axes,
    fix_widths,
    interface,
    observed_widths,
    own_time_axes,
    share_time,
)
from rnnedge.exporter.convert.registry import is_recurrent, recurrent_names
from rnnedge.exporter.convert.splice import TF2ONNX_OPSET, SpliceError, implicit_masks

__all__ = ["OPSET", "TF2ONNX_OPSET", "Converted", "Interface", "SpliceError",
           "UnsupportedLayerError", "convert", "fix_axes", "fix_widths", "functional_graph", "implicit_masks",
           "interface", "is_recurrent", "observed_widths", "own_time_axes", "recurrent_layers", "recurrent_names",
           "share_time"]
