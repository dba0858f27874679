"""Parity: takes an export folder (golden.npz: inputs and Keras' outputs) and a runner, gives a
report per case and output (max/mean abs error, max rel error, tolerance, pass/fail).

Runs with numpy and onnxruntime only: `rnnedge check DIR` replays golden.npz on any execution
provider where TensorFlow is absent. Steps: `compare` (the comparison and its results), `golden`
(golden.npz), `folder` (`check_dir`, streamed replays, `check_runner` for any other runner).
"""

from rnnedge.check.compare import (
           CaseParity,
           OutputParity,
           ParityReport,
           Tolerance,
           compare,
           parse_tolerances,
           tolerance_for,
)
from rnnedge.check.folder import STREAM_CHUNKS, check_dir, check_runner, stream_in_chunks
from rnnedge.check.golden import read_golden, write_golden
from rnnedge.tables import ATOL, PROVIDER_TOLERANCE, RTOL

__all__ = ["ATOL", "PROVIDER_TOLERANCE", "RTOL", "STREAM_CHUNKS", "CaseParity", "OutputParity", "ParityReport",
           "Tolerance", "check_dir", "check_runner", "compare", "parse_tolerances", "read_golden", "stream_in_chunks",
           "tolerance_for",
           "write_golden"]
