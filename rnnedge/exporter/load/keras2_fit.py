"""Keras 2 layer configurations fitted to the Keras 3 classes that rebuild them (keras2.py): each
argument Keras 3 takes otherwise renamed or reshaped, training-only and no-op ones dropped, any
other refused naming the layer; and the calls of models nested in a functional model numbered as
Keras 3 reads them."""

from __future__ import annotations

import re

import keras

from rnnedge.errors import RnnEdgeError

# Keras 2 arguments whose value never matters at inference (training-time settings).
TRAINING_ONLY = re.compile(r"^(trainable|.*_(initializer|regularizer|constraint))$")
# Keras 2 arguments Keras 3 names otherwise: (class, Keras 2 name) -> Keras 3 name.
RENAMED = {("LeakyReLU", "alpha"): "negative_slope"}
# Keras 2 arguments with a value Keras 3 computes anyway (its only behaviour).
SAME_AS_KERAS3 = {("groups", 1), ("softmax_robust_masking", False)}
_NOT_LAYERS = ("InputLayer", "Sequential", "Model", "Functional")


def is_layer(obj: dict) -> bool:
    """A layer's entry, not an initializer's or a constraint's of the same class name (Identity)."""
    module = obj.get("module") or ""
    return "name" in obj["config"] and hasattr(keras.layers, obj["class_name"]) \
        and not any(kind in module for kind in ("initializers", "regularizers", "constraints"))


def fit_arguments(class_name: str, name: str, config: dict) -> list[str]:
    """Fit a Keras 2 layer's configuration to what its Keras 3 class takes: renamed arguments
    renamed, training-time and no-op ones dropped, a list `axis` of one BatchNormalization axis made
    an int; any other argument Keras 3 does not take is refused, naming the layer and the argument."""
    cls = getattr(keras.layers, class_name, None)
    if cls is None or class_name in _NOT_LAYERS:
        return []
    notes = []
    for (owner, old), new in RENAMED.items():
        if owner == class_name and old in config:
            config[new] = config.pop(old)
            notes.append(f"{old} -> {new}")
    if class_name == "BatchNormalization" and isinstance(config.get("axis"), list) and len(config["axis"]) == 1:
        config["axis"] = config["axis"][0]
        notes.append("axis [n] -> n")
    taken = init_arguments(cls)
    for arg in [a for a in config if a not in taken]:
        value = config[arg]
        if value is None or TRAINING_ONLY.match(arg) or any((arg, value) == same for same in SAME_AS_KERAS3):
            del config[arg]
            notes.append(f"dropped {arg}={value!r}" if not isinstance(value, dict) else f"dropped {arg}")
        else:
            raise RnnEdgeError(f"layer '{name}' ({class_name}): Keras 2 argument {arg}={value!r} has no Keras 3 "
                               "equivalent; rebuild the model without it, or export the model object from code")
    return notes


def init_arguments(cls) -> set[str]:
    """The keyword arguments a Keras 3 layer class takes: its constructor's and, where it passes
    **kwargs on, its bases' up to Layer (which also reads input_shape, input_dim and batch_size)."""
    import inspect

    taken = {"input_shape", "input_dim", "batch_size", "batch_input_shape", "name"}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        taken |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if klass is keras.layers.Layer or not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return taken


def renumber_nested_calls(config: dict, notes: list):
    """Keras 2 numbers the calls of a nested functional model, and of a nested Sequential with an
    input shape, from 1 (node 0 is its own build). Keras 3 reads a call's inbound nodes from 0, and
    its output_layers from 1 for functional models only: references are renumbered to match."""
    layers = config.get("layers", [])
    sequential = {layer["config"].get("name") for layer in layers if layer.get("class_name") == "Sequential"
                  and (layer["config"].get("layers") or [{}])[0].get("class_name") == "InputLayer"}
    functional = {layer["config"].get("name") for layer in layers if layer.get("class_name") == "Model"}
    if not sequential | functional:
        return

    def renumber(value, nested):
        if isinstance(value, list) and len(value) >= 3 and isinstance(value[0], str) and value[0] in nested \
                and isinstance(value[1], int):
            value[1] -= 1
        elif isinstance(value, dict):
            for key, item in value.items():
                if key != "config" or not isinstance(item, dict) or "layers" not in item:  # not into nested models
                    renumber(item, nested)
        elif isinstance(value, list):
            for item in value:
                renumber(item, nested)

    for layer in layers:
        renumber(layer.get("inbound_nodes", []), sequential | functional)
    renumber(config.get("output_layers", []), sequential)
    notes.append(f"calls of nested model(s) {', '.join(sorted(sequential | functional))} numbered from 0")
