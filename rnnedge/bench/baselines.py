"""The baselines rnnedge is measured against, exported from the same Keras model: Keras itself
(`tf.function`), the plain tf2onnx graph (rnnedge.exporter.fallback) and LiteRT; each as a runner
(a name and `run(feeds) -> outputs`, `bind(feeds)` for timing) that `check` and `bench` take alike.
TensorFlow, Keras and the exporter are imported when a baseline is built, not with this module."""

from __future__ import annotations

import warnings

from rnnedge.errors import RnnEdgeError


def litert_export(model, shapes: list[tuple[int, ...]], *, int8: bool = False) -> bytes:
    """The Keras model as a LiteRT (TensorFlow Lite) flatbuffer for fixed input `shapes` (one per
    input, batch first), the way an edge user of Keras converts it: `TFLiteConverter` on the
    frozen `keras_function`, built-in ops only. Keras 3 recurrent layers become `WHILE` loops;
    LiteRT cannot lower their tensor lists with a dynamic batch, so every shape is fixed.
    `int8`: LiteRT's dynamic-range quantization (`Optimize.DEFAULT`: int8 weights, activations
    quantized on the fly by its hybrid kernels), its counterpart of rnnedge's int8 variant."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from rnnedge.exporter import keras_function
    from rnnedge.exporter.truth import stateful_layers

    shown = ", ".join(str(tuple(s)) for s in shapes)
    stateful = [layer.name for layer in stateful_layers(model)]
    if stateful:
        raise RnnEdgeError(f"LiteRT could not convert model '{model.name}': stateful layer(s) {', '.join(stateful)} "
                           "keep their state in variables, which the conversion would freeze; leave litert out of "
                           "the baselines for this model")
    try:
        call, _ = keras_function(model, shapes)
        frozen = convert_variables_to_constants_v2(call.get_concrete_function(), lower_control_flow=False)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()
    except Exception as e:  # the converter's MLIR diagnostics: keep the first error line
        lines = [ln.strip() for ln in str(e).splitlines() if "error:" in ln] or [str(e).strip() or type(e).__name__]
        reason = lines[0].split("error:", 1)[-1].strip()
        raise RnnEdgeError(f"LiteRT could not convert model '{model.name}' "
                           f"for input shapes {shown}: {reason}") from None


class KerasRunner:
    """The Keras model under `tf.function` (no XLA): inputs in `input_names` order, outputs named
    `output_names` (the export's data outputs, in Keras' flattened order)."""

    name = "keras"

    def __init__(self, model, input_names: list[str], output_names: list[str]):
        from rnnedge.exporter import keras_function

        self.fn = keras_function(model)[0]
        self.input_names, self.output_names = list(input_names), list(output_names)
        self.provider = "TensorFlow"

    def bind(self, feeds):
        import tensorflow as tf

        args = [tf.constant(feeds[n]) for n in self.input_names]
        return lambda: [t.numpy() for t in tf.nest.flatten(self.fn(*args))]

    def run(self, feeds) -> dict:
        return dict(zip(self.output_names, self.bind(feeds)()))


class LiteRTRunner:
    """The Keras model converted by TensorFlow Lite's converter for the feeds' fixed shapes (once
    per shapes), in the LiteRT interpreter with `threads` threads and XNNPACK; `int8` uses the
    converter's dynamic-range quantization ("litert-int8"). `input_names` follow the model's
    inputs (the export's data inputs); feeds are matched to them by name."""

    def __init__(self, model, input_names: list[str], output_names: list[str], *, threads: int = 1,
                 int8: bool = False):
        self.model, self.threads, self.int8 = model, threads, int8
        self.input_names, self.output_names = list(input_names), list(output_names)
        self.name = "litert-int8" if int8 else "litert"
        self.provider = "LiteRT (CPU)"
        self._interpreters: dict[tuple, object] = {}

    def bind(self, feeds):
        from rnnedge.logs import quiet_native_stderr

        data = {n: feeds[n] for n in self.input_names}
        shapes = tuple(tuple(a.shape) for a in data.values())
        if shapes not in self._interpreters:
            with quiet_native_stderr():  # the converter's and XNNPACK's INFO lines
                flat = litert_export(self.model, list(shapes), int8=self.int8)
                self._interpreters[shapes] = litert_interpreter(flat, self.threads)
        return litert_call(self._interpreters[shapes], data)

    def run(self, feeds) -> dict:
        return dict(zip(self.output_names, self.bind(feeds)()))


def litert_call(interpreter, feeds):
    """One call on a LiteRT interpreter, for timing: set `feeds` (matched to the inputs by name, else
    in order), invoke, read every output."""
    import numpy as np

    details = interpreter.get_input_details()
    by_name = {d["name"]: d for d in details}
    if set(by_name) != set(feeds):  # named otherwise: the converter keeps the signature's order
        by_name = dict(zip(feeds, details))
    inputs = [(by_name[n]["index"], np.asarray(a).astype(by_name[n]["dtype"], copy=False)) for n, a in feeds.items()]
    outputs = [d["index"] for d in interpreter.get_output_details()]

    def call():
        for index, array in inputs:
            interpreter.set_tensor(index, array)
        interpreter.invoke()
        return [interpreter.get_tensor(i) for i in outputs]

    return call


def litert_interpreter(flatbuffer: bytes, threads: int = 1):
    """A LiteRT interpreter, tensors allocated: `ai_edge_litert`'s where installed, else TensorFlow's
    `tf.lite.Interpreter` (deprecated in favour of the former, still shipped with TensorFlow 2.21)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def tf2onnx_runner(model, like=None, threads: int = 1):
    """The plain tf2onnx graph in onnxruntime (an OrtRunner named "tf2onnx"), on the providers and
    options of session `like` (CPU if None)."""
    import logging

    import onnxruntime as ort

    from rnnedge.exporter import tf2onnx_export
    from rnnedge.logs import quiet_native_stderr
    from rnnedge.runtime import session_options
    from rnnedge.runtime.runner import OrtRunner

    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with quiet_native_stderr():  # grappler's INFO lines
            proto = tf2onnx_export(model)
    finally:
        logger.setLevel(level)
    providers = like.get_providers() if like is not None else ["CPUExecutionProvider"]
    options = like.get_provider_options() if like is not None else {}
    session = ort.InferenceSession(proto.SerializeToString(), session_options(threads), providers=providers,
                                   provider_options=[options.get(p, {}) for p in providers])
    return OrtRunner(session, "tf2onnx")

