"""A SavedModel rnnedge cannot rebuild as Keras layers (a plain `tf.Module` or a Keras model saved
with `tf.saved_model.save`, a subclassed tf_keras model, layers revived from traced functions): its serving signature,
called as the one layer of a Keras model, so that tf2onnx converts its whole graph (recurrences
stay the `Loop`s / `Scan`s it writes, unless it fuses them itself) and TensorFlow itself computes
the golden outputs the ONNX file is checked against."""

from __future__ import annotations

from pathlib import Path

import keras

from rnnedge.errors import RnnEdgeError, first_line

SIGNATURE = "serving_default"
HOW_TO_SAVE = "save it with tf.saved_model.save(module, folder, signatures=module.__call__)"


class Signature(keras.layers.Layer):
    """One SavedModel signature as a Keras layer: inputs in `input_names` order, outputs a list in
    `output_names` order. It holds the loaded object, whose variables the signature reads."""

    def __init__(self, loaded, key: str, **kwargs):
        super().__init__(**kwargs)
        self._loaded, self._function = loaded, loaded.signatures[key]
        self.input_specs = dict(sorted(self._function.structured_input_signature[1].items()))
        self.output_specs = dict(sorted(self._function.structured_outputs.items()))

    def get_config(self):
        return {"name": self.name}

    def call(self, inputs):
        xs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        out = self._function(**dict(zip(self.input_specs, xs)))
        return [out[n] for n in self.output_specs]

    def compute_output_spec(self, inputs):
        return [keras.KerasTensor(tuple(s.shape), dtype=s.dtype.name) for s in self.output_specs.values()]


def signature_model(path: Path) -> keras.Model:
    """The SavedModel at `path` as a Keras model of one `Signature` layer (named after the signature),
    outputs keyed as the signature keys them. Refused in one line where it has no usable signature."""
    import tensorflow as tf

    from rnnedge.logs import quiet_native_stderr

    try:
        with quiet_native_stderr():
            loaded = tf.saved_model.load(str(path))
    except Exception as e:  # TensorFlow raises many types for a bad folder; all mean "not loadable"
        raise RnnEdgeError(f"{path} is not a loadable SavedModel ({first_line(e)})") from None
    keys = list(loaded.signatures.keys())
    if not keys:
        raise RnnEdgeError(f"{path} is a SavedModel without signatures, so its inputs are unknown: {HOW_TO_SAVE}")
    if SIGNATURE not in keys and len(keys) > 1:
        raise RnnEdgeError(f"{path} has signatures {', '.join(keys)} and no '{SIGNATURE}': rnnedge exports one; "
                           f"save the one to export as '{SIGNATURE}' ({HOW_TO_SAVE})")
    key = SIGNATURE if SIGNATURE in keys else keys[0]
    layer = Signature(loaded, key, name=key)
    for name, spec in layer.input_specs.items():
        if spec.shape.rank is None or spec.shape.rank < 1 or not (spec.dtype.is_floating or spec.dtype.is_integer
                                                                  or spec.dtype.is_bool):
            raise RnnEdgeError(f"{path}: signature '{key}' input '{name}' is {spec.dtype.name} of shape {spec.shape}: "
                               "expected a numeric tensor of known rank (give the tf.function an input_signature)")
    inputs = [keras.Input(shape=tuple(s.shape[1:]), batch_size=s.shape[0], dtype=s.dtype.name, name=n)
              for n, s in layer.input_specs.items()]
    taken = {*layer.input_specs, key}
    if taken & set(layer.output_specs):
        raise RnnEdgeError(f"{path}: signature '{key}' names an output as it names an input or itself "
                           f"({', '.join(sorted(taken & set(layer.output_specs)))}); rename the output and save again")
    outputs = layer(inputs if len(inputs) > 1 else inputs[0])
    named = [keras.layers.Identity(name=n)(t) for n, t in zip(layer.output_specs, outputs)]  # the export's names
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], dict(zip(layer.output_specs, named)),
                       name=path.name or "saved_model")


def signature_layer(model: keras.Model) -> Signature:
    return next(layer for layer in model.layers if isinstance(layer, Signature))


def origin(model: keras.Model, kind: str = "tf.Module") -> dict:
    """The manifest's record: TensorFlow computed the truth; nothing was translated, tf2onnx converted
    the signature whole. `kind`: what the SavedModel holds (a plain tf.Module, a subclassed tf_keras model)."""
    import tensorflow as tf

    return {"format": f"savedmodel ({kind})", "truth": {"framework": "tensorflow", "version": tf.__version__},
            "whole_graph": True,
            "translated": {signature_layer(model).name: [f"a {kind}'s signature: its whole graph converted by "
                                                         "tf2onnx, nothing fused by rnnedge"]}}
