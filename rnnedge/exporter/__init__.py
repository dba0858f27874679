"""The exporter: takes a Keras model (object, .keras file or zoo:NAME), gives its ONNX graph (one
fused node per recurrent layer) and Keras' outputs on sample cases; nothing else (rnnedge.pipeline
checks, quantizes and writes the export folder).

Steps: `source` (load the model), `convert` (Keras graph -> ONNX; tf2onnx for layers without a
converter of ours), `fallback` (--allow-loop: tf2onnx's plain graph of the whole model), `truth`
(Keras' outputs on sample cases).
"""

from rnnedge.logs import quiet_tensorflow

quiet_tensorflow()  # imports TensorFlow with its native start-up lines held, before Keras does

from rnnedge.exporter.fallback import keras_function, tf2onnx_export  # noqa: E402
from rnnedge.exporter.load.source import load_keras, versions  # noqa: E402
from rnnedge.exporter.truth import BATCHES, LENGTHS, keras_outputs, random_cases, zoo_case  # noqa: E402

__all__ = ["BATCHES", "LENGTHS", "keras_function", "keras_outputs", "load_keras", "random_cases", "tf2onnx_export",
           "versions", "zoo_case"]
