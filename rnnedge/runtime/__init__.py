"""The runtime: takes an export folder (manifest.json, model files), gives results from onnxruntime
alone, whole sequences or streamed chunk by chunk with the state carried: no TensorFlow, no Keras.

    import rnnedge
    model = rnnedge.load("exported/events-gru")     # provider="auto": TensorRT, CUDA, then CPU
    out = model.run(x)                              # Outputs: name -> array, out[0] works too
    stream = model.stream(batch=1)                  # recurrent state carried between calls
    for chunk in chunks:                            # [batch, steps, features], any steps >= 1
        probs = stream.push(chunk)[0]
    stream.reset()                                  # every row; stream.reset(i) for row i only

Steps: `providers` (which execution providers, their options, the session), `inputs` (checks
every input before onnxruntime sees it), `signature` (a model's inputs and outputs as the manifest
and the graph give them), `model` (`load`, `Model.run`), `stream` (`Stream`, from a session and a
signature; `run_chunked`), `datafiles` (.npy/.npz/.csv in and out).
"""

from rnnedge.runtime.datafiles import read_inputs, run_file, write_outputs
from rnnedge.runtime.inputs import Outputs
from rnnedge.runtime.model import Model, load
from rnnedge.runtime.providers import TRT_SHAPES, available_providers, session_options
from rnnedge.runtime.stream import Stream, run_chunked
from rnnedge.tables import ORT_DTYPES

__all__ = [
    "Model",
    "ORT_DTYPES",
    "Outputs",
    "Stream",
    "TRT_SHAPES",
    "available_providers",
    "load",
    "read_inputs",
    "run_chunked",
    "run_file",
    "session_options",
    "write_outputs",
]
