"""Benchmarks: takes an export folder (and the source Keras model for the baselines), gives
latency rows (p50/p90/p99, sequences and steps per second, speed-ups against each baseline,
each variant's error against Keras) as tables, JSON, CSV and a plot.

    from rnnedge.bench import bench_dir, markdown
    rows = bench_dir("exported/events-gru", batches=(1, 8), times=(16, 100), variants=("fp32", "int8"),
                     baselines=("keras", "tf2onnx"), source="zoo:events-gru")
    print(markdown(rows))

Steps: `cases` (which batch x time), `candidates` (variants, streams, the floor and the
baselines as runners), `run` (`bench_dir`: every candidate of a case interleaved, see
`rnnedge.timing`), `results` (rows, JSON, CSV), `report` (markdown, rich, plot).

Candidates: a variant ("fp32", "int8", "fp16") is the folder's model file in onnxruntime
(`session.run` on prepared feeds on CPU; IOBinding with device-resident inputs on CUDA/TensorRT);
"keras" the Keras model under `tf.function`; "tf2onnx" the plain converter's graph (with `Loop`s
for GRU/SimpleRNN) in onnxruntime; "litert" / "litert-int8" the Keras model converted by
TensorFlow Lite's converter for each case's shapes (dynamic-range int8 for the latter), in the
LiteRT interpreter with XNNPACK, CPU only; with stream=True, "stream-<variant>" is
`model.stream(batch).push(chunk)` and "floor" the same push on a graph of Identity nodes with the
same inputs (the cost of a push that computes nothing). Numpy and onnxruntime only, plus
TensorFlow/Keras/tf2onnx for the baselines and matplotlib for `plot`, imported when asked for.
"""

from rnnedge.bench.candidates import FLOOR, STREAM_PREFIX, floor_folder
from rnnedge.bench.cases import DEFAULT_TIME, SWEEP_TIMES, cases_for, int_list, name_list, sweep_times
from rnnedge.bench.report import fastest, markdown, plot, rich_table
from rnnedge.bench.results import BenchRow, read_json, write_csv, write_json
from rnnedge.bench.run import bench_dir, variant_error
from rnnedge.runtime import session_options
from rnnedge.samples import random_inputs
from rnnedge.tables import BASELINES
from rnnedge.timing import measure, percentiles

__all__ = ["BASELINES", "DEFAULT_TIME", "FLOOR", "STREAM_PREFIX", "SWEEP_TIMES", "BenchRow", "bench_dir", "cases_for",
           "fastest", "floor_folder", "int_list", "markdown", "measure", "name_list", "percentiles", "plot",
           "random_inputs", "read_json", "rich_table", "session_options", "sweep_times", "variant_error", "write_csv",
           "write_json"]
