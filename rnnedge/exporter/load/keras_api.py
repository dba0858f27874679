"""Keras' private API that rnnedge relies on, in one place: what a new Keras (or tf_keras) release
can break is here and nowhere else, each use named for what it gives.

Keras 3 keeps a functional model's graph (nodes by depth, each tensor's producing node) and a
layer's call signature in private attributes; the classes of the `keras.ops` calls a graph records
(NotEqual, Any, ...) live under `keras.src`. tf_keras (Keras 2) LSTM/GRU choose their kernel through
a private flag.
"""

from __future__ import annotations

import keras
from keras.src.layers.layer import CallSpec
from keras.src.ops import numpy as ops_classes  # noqa: F401 - the classes of keras.ops calls (NotEqual, Any...)


def sequential_graph(model):
    """The functional graph a built `keras.Sequential` keeps, or None before it is built."""
    return getattr(model, "_functional", None)


def has_graph(model) -> bool:
    """A Sequential, or a model with a functional graph (not a subclassed model's own `call`)."""
    return isinstance(model, keras.Sequential) or hasattr(model, "_nodes_by_depth")


def graph_nodes(graph) -> list:
    """Every node of a functional graph, inputs first (Keras' own run order)."""
    depths = graph._nodes_by_depth
    return [node for depth in sorted(depths, reverse=True) for node in depths[depth]]


def producer(tensor):
    """The node that computed a KerasTensor, or None for one made outside any graph."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    return history.operation._inbound_nodes[history.node_index]


def input_name(tensor) -> str:
    """A functional model input's name: its InputLayer's, which it keeps once saved and loaded
    (an unnamed keras.Input's own tensor is called 'keras_tensor_N', N counting this session's)."""
    history = getattr(tensor, "_keras_history", None)
    return history.operation.name if history is not None else tensor.name


def run_graph(graph, inputs: list):
    """A functional graph's operations called on new (symbolic) `inputs`, a flat list, outputs in
    the graph's structure, in inference (training=False given to every layer that takes it): what
    `Functional.call(inputs, training=False)` does, without its input conversion (which adds a
    convert_to_tensor node to a symbolic run)."""
    from keras.src.models.functional import operation_fn
    from keras.src.ops.function import Function

    return Function._run_through_graph(graph, inputs, operation_fn=lambda op: operation_fn(op, training=False))


def mask_of(tensor):
    """The mask Keras attached to a tensor (Masking, Embedding(mask_zero=True)...), or None."""
    return getattr(tensor, "_keras_mask", None)


def sublayers(layer) -> list:
    """The layer and every layer inside it, recursively."""
    return list(layer._flatten_layers(include_self=True, recursive=True))


def call_parameters(layer) -> list[str]:
    """The names of a layer's `call` parameters."""
    return list(layer._call_signature.parameters)


def call_spec(layer, args, kwargs) -> CallSpec:
    """A layer's call arguments bound to its signature, as Keras binds them when it runs the layer."""
    return CallSpec(layer._call_signature, layer._call_context_args, args, kwargs)


def takes_mask(layer) -> bool:
    return bool(getattr(layer, "_call_has_mask_arg", False))


def takes_training(layer) -> bool:
    return bool(getattr(layer, "_call_has_training_arg", False))


def standard_kernel_only(tf_keras_layer) -> None:
    """A tf_keras LSTM/GRU runs its standard kernel without building a cuDNN-or-standard selection
    function (the same computation on a CPU, and most of a Keras 2 file's load time)."""
    tf_keras_layer._could_use_gpu_kernel = False
