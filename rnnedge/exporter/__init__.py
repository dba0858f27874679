"""Export: takes a Keras model (object, .keras file or zoo:NAME), gives an export folder
(model.onnx with one fused node per recurrent layer, manifest.json, golden.npz), verified.

Steps: `source` (load the model), `convert` (Keras graph -> ONNX; tf2onnx for layers without a
converter of ours), `truth` (Keras' outputs on sample cases), `folder` (`export`: check, quantize,
move into place), `baselines` (Keras, tf2onnx and LiteRT exports and runners, for comparisons).
"""

from rnnedge.logs import quiet_tensorflow

quiet_tensorflow()  # imports TensorFlow with its native start-up lines held, before Keras does

from rnnedge.exporter.baselines import keras_function, litert_export, tf2onnx_export  # noqa: E402
from rnnedge.exporter.folder import ExportResult, export, task_metrics  # noqa: E402
from rnnedge.exporter.source import load_keras, versions  # noqa: E402
from rnnedge.exporter.truth import BATCHES, LENGTHS, keras_outputs, random_cases, zoo_case  # noqa: E402

__all__ = ["BATCHES", "LENGTHS", "ExportResult", "export", "keras_function", "keras_outputs", "litert_export",
           "load_keras", "random_cases", "task_metrics", "tf2onnx_export", "versions", "zoo_case"]
