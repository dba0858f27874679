"""Custom layers that run recurrent layers inside their own call (an `Encoder` layer holding an
LSTM, a subclassed model nested in another), opened: the model's graph is traced again with such
layers' `call()` run in place, so that each recurrent layer they hold is a node of the graph,
which rnnedge fuses. The layers (and weights) are the model's own; the model as given stays the
truth, so parity shows that the opened graph computes what the model does."""

from __future__ import annotations

from contextlib import contextmanager

import keras

from rnnedge.exporter.convert import functional_graph, implicit_masks, is_recurrent
from rnnedge.exporter.load.keras_api import call_parameters, has_graph, input_name, run_graph, sublayers


def wrapping_layers(model) -> list:
    """The model's custom layers (not Keras' own, not recurrent, without a functional graph of
    their own) that hold a recurrent layer, outermost first."""
    found = []
    for layer in sublayers(model)[1:]:
        if is_recurrent(layer) or type(layer).__module__.startswith("keras.") or has_graph(layer):
            continue
        if any(is_recurrent(sub) for sub in sublayers(layer)[1:]):
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
    """What Keras' __call__ gives call() in inference: the masks it fills in (`mask` for a single
    tensor argument, `<argument>_mask` for several) and training=False (a model called with
    training=False gives it to every layer of its graph that takes it, whatever the node recorded)."""
    base = type(self).__mro__[1]
    if "training" in call_parameters(self):
        kwargs["training"] = False
    else:
        kwargs.pop("training", None)
    kwargs.update(implicit_masks(self, args, kwargs))
    return base.call(self, *args, **kwargs)


def opened_graph(model, layers: list) -> keras.Model:
    """The functional (or Sequential) model traced again with `layers` (its wrapping_layers) opened."""
    graph = functional_graph(model)
    inputs = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=input_name(t)) for t in graph.inputs]
    with opened(layers):
        outputs = run_graph(graph, inputs)
    return keras.Model(keras.tree.pack_sequence_as(graph.input, inputs), outputs, name=model.name)


def described(layers) -> dict[str, list[str]]:
    """The manifest's record of what was opened: layer -> the recurrent layers it holds."""
    def outermost(layer):  # a Bidirectional, not also its two directions
        found = [sub for sub in sublayers(layer)[1:] if is_recurrent(sub)]
        inner = {id(s) for r in found for s in sublayers(r)[1:]}
        return [sub.name for sub in found if id(sub) not in inner]

    held = {layer.name: outermost(layer) for layer in layers}
    return {name: [f"its call() traced into the graph ({', '.join(subs)} fused)"] for name, subs in held.items()}
