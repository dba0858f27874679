"""Custom layers that run recurrent layers inside their own call (an `Encoder` layer holding an
LSTM, a subclassed model nested in another), opened: the model's graph is traced again with such
layers' `call()` run in place, so that each recurrent layer they hold is a node of the graph,
which rnnedge fuses. The layers (and weights) are the model's own; the model as given stays the
truth, so parity shows that the opened graph computes what the model does."""

from __future__ import annotations

from contextlib import contextmanager

import keras

from rnnedge.exporter.convert import functional_graph
from rnnedge.exporter.convert.splice import RECURRENT_TYPES
from rnnedge.exporter.keras_api import call_parameters, has_graph, input_name, mask_of, run_graph, sublayers


def wrapping_layers(model) -> list:
    """The model's custom layers (not Keras' own, not recurrent, without a functional graph of
    their own) that hold a recurrent layer, outermost first."""
    found = []
    for layer in sublayers(model)[1:]:
        if isinstance(layer, RECURRENT_TYPES) or type(layer).__module__.startswith("keras.") or has_graph(layer):
            continue
        if any(isinstance(sub, RECURRENT_TYPES) for sub in sublayers(layer)[1:]):
            found.append(layer)
    return found


@contextmanager
def opened(layers):
    """While inside, calling one of `layers` runs its `call()` in place (the layers it calls
    become nodes of the graph being traced) with the mask Keras would have passed it."""
    classes = [(layer, type(layer)) for layer in layers]
    try:
        for layer, cls in classes:
            layer.__class__ = type(cls.__name__, (cls,), {"__call__": _in_place, "__module__": cls.__module__,
                                                          "__qualname__": cls.__qualname__})
    except BaseException:
        _restore(classes)
        raise
    try:
        yield
    finally:
        _restore(classes)


def _restore(classes):
    for layer, cls in classes:
        layer.__class__ = cls


def _in_place(self, *args, **kwargs):
    base = type(self).__mro__[1]
    parameters = call_parameters(self)
    if "training" not in parameters:
        kwargs.pop("training", None)
    if "mask" in parameters and "mask" not in kwargs and args:
        mask = keras.tree.map_structure(mask_of, args[0])
        if any(m is not None for m in keras.tree.flatten(mask)):
            kwargs["mask"] = mask if isinstance(args[0], (list, tuple, dict)) else mask_of(args[0])
    return base.call(self, *args, **kwargs)


def opened_graph(model) -> keras.Model | None:
    """The functional (or Sequential) model traced again with its wrapping layers opened, or None
    where it has none."""
    layers = wrapping_layers(model)
    if not layers:
        return None
    graph = functional_graph(model)
    inputs = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=input_name(t)) for t in graph.inputs]
    with opened(layers):
        outputs = run_graph(graph, inputs)
    return keras.Model(keras.tree.pack_sequence_as(graph.input, inputs), outputs, name=model.name)


def described(layers) -> dict[str, list[str]]:
    """The manifest's record of what was opened: layer -> the recurrent layers it holds."""
    held = {layer.name: [sub.name for sub in sublayers(layer)[1:] if isinstance(sub, RECURRENT_TYPES)]
            for layer in layers}
    return {name: [f"its call() traced into the graph ({', '.join(subs)} fused)"] for name, subs in held.items()}
