"""`rnnedge bench`: latency of an export folder's variants, against Keras, plain tf2onnx and LiteRT.

    from rnnedge.bench import bench_dir, markdown
    rows = bench_dir("exported/events-gru", batches=(1, 8), times=(16, 100), variants=("fp32", "int8"),
                     baselines=("keras", "tf2onnx"), source="zoo:events-gru")
    print(markdown(rows))

How it times: `time.perf_counter` around each call, warm-up calls dropped, p50/p90/p99 of the
rest. The candidates of one case (batch x time) are interleaved in one process: each iteration
runs every candidate once, in a shuffled order, so drift of the machine (other work, clock
changes) lands on all of them alike. The garbage collector is off while timing (as `timeit`).
onnxruntime sessions all get the same options: `intra_op_num_threads=threads`, one inter-op
thread, `ORT_ENABLE_ALL`. On CPU a call is `session.run` on prepared numpy feeds (what
`Model.run` costs minus its input checks); on CUDA/TensorRT the inputs are bound once on the
device with IOBinding and each call waits for its outputs (`synchronize_outputs`).

Candidates:
- a variant ("fp32", "int8", "fp16"): the folder's model file, as `rnnedge.load(..., variant=)`.
- "keras": the Keras model under `tf.function(jit_compile=False, reduce_retracing=True)`, TensorFlow
  limited to `threads` intra-op threads where it has not started yet; outputs read back to numpy.
- "tf2onnx": `rnnedge.exporter.tf2onnx_export(model)` (the plain converter's graph, with `Loop`s for
  GRU/SimpleRNN) in onnxruntime, same options.
- "litert": the Keras model converted to LiteRT (TensorFlow Lite) by `rnnedge.exporter.litert_export`
  for each case's fixed shapes, in the LiteRT interpreter (`ai_edge_litert` where installed, else
  TensorFlow's `tf.lite.Interpreter`) with `threads` threads and its default XNNPACK delegate; a
  call is set inputs, invoke, read outputs. CPU only, whatever `provider` says.
- "litert-int8": the same with LiteRT's dynamic-range quantization (int8 weights, hybrid kernels),
  the counterpart of the "int8" variant.
- stream=True: "stream-<variant>" is `model.stream(batch).push(chunk)` (one step per push unless
  `times` says how many), and "floor" the same push on a graph of Identity nodes with the same
  inputs: the cost of a push that computes nothing (rnnedge's checks, IOBinding, onnxruntime's call).

Only numpy and onnxruntime are needed, plus TensorFlow/Keras/tf2onnx for the baselines and
matplotlib for `plot`, imported when asked for.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import MODEL, Manifest, TensorSpec, is_time_axis

__all__ = [
    "BASELINES",
    "BenchRow",
    "bench_dir",
    "cases_for",
    "floor_folder",
    "int_list",
    "litert_call",
    "litert_interpreter",
    "name_list",
    "markdown",
    "measure",
    "percentiles",
    "plot",
    "quiet_native_stderr",
    "random_inputs",
    "read_json",
    "rich_table",
    "session_options",
    "write_csv",
    "write_json",
]

BASELINES = ("keras", "tf2onnx", "litert", "litert-int8")
FLOOR = "floor"
STREAM_PREFIX = "stream-"
DEFAULT_TIME = 100  # steps per sequence when the model's time axis is dynamic and none is asked
_GPU = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
# Where the baselines outside onnxruntime run, whatever provider the export is timed on.
_RUNS_ON = {"keras": "TensorFlow", "litert": "LiteRT (CPU)", "litert-int8": "LiteRT (CPU)"}


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class BenchRow:
    """One case (batch x time) of one candidate.

    time: steps per sequence (per push for "stream-*" and "floor"), None for a model without a
        time axis. seq_per_s: sequences (pushes for streams) of `batch` rows per second at p50,
        times `batch`; steps_per_s: seq_per_s x time. ratios: baseline -> baseline p50 / this
        p50 (above 1: this candidate is faster), for the baselines timed in the same case
        ("floor" for streams: below 1, the share of a push that is overhead). error: the
        variant's max |diff| against Keras on the export's golden outputs (from the manifest),
        None for baselines.
    """

    candidate: str
    provider: str
    batch: int
    time: int | None
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    seq_per_s: float
    steps_per_s: float
    ratios: dict[str, float] = field(default_factory=dict)
    runs: int = 0
    error: float | None = None

    def __post_init__(self):
        if not self.candidate or not isinstance(self.candidate, str):
            raise ValueError(f"candidate must be a non-empty name, got {self.candidate!r}")
        if self.batch < 1 or self.threads < 1 or (self.time is not None and self.time < 1):
            raise ValueError(f"batch, threads and time must be >= 1, got {self.batch}, {self.threads}, {self.time}")
        if not 0 <= self.p50_ms <= self.p90_ms <= self.p99_ms:
            raise ValueError(f"percentiles must be ordered 0 <= p50 <= p90 <= p99, got "
                             f"{self.p50_ms}, {self.p90_ms}, {self.p99_ms}")
        object.__setattr__(self, "ratios", {str(k): float(v) for k, v in self.ratios.items()})


# --------------------------------------------------------------------------------------------
# Timing


def session_options(threads: int = 1):
    """onnxruntime options for every session bench times: the runtime's, with `threads` intra-op threads."""
    from rnnedge.runtime import session_options as runtime_options

    return runtime_options(threads)


def measure(candidates: Mapping[str, Callable[[], Any]], *, runs: int = 200, warmup: int = 20,
            seed: int = 0) -> dict[str, np.ndarray]:
    """Call every candidate `warmup` + `runs` times, interleaved; name -> the `runs` latencies in ms.

    Each iteration calls every candidate once in an order shuffled anew (seeded), so none
    always runs first or right after a slow one. Warm-up iterations are dropped.
    """
    _whole("runs", runs, 1)
    _whole("warmup", warmup, 0)
    names = list(candidates)
    calls = [candidates[n] for n in names]
    order = list(range(len(names)))
    rng = np.random.default_rng(seed)
    samples = np.empty((len(names), runs))
    clock = time.perf_counter
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for i in range(-warmup, runs):
            rng.shuffle(order)
            for k in order:
                call = calls[k]
                start = clock()
                call()
                elapsed = clock() - start
                if i >= 0:
                    samples[k, i] = elapsed
    finally:
        if enabled:
            gc.enable()
    return {n: samples[k] * 1e3 for k, n in enumerate(names)}


def percentiles(ms: np.ndarray) -> tuple[float, float, float]:
    """(p50, p90, p99) of latencies."""
    p50, p90, p99 = np.percentile(np.asarray(ms, np.float64), [50, 90, 99])
    return float(p50), float(p90), float(p99)


def int_list(text: str | None, option: str = "--batch") -> tuple[int, ...] | None:
    """"1,8,32" -> (1, 8, 32); None or "" -> None (not given); RnnEdgeError naming `option` otherwise."""
    if text is None or not str(text).strip():
        return None
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise RnnEdgeError(f"{option} {text!r}: expected whole numbers separated by commas, e.g. 1,8,32") from None
    for v in values:
        if v < 1:
            raise RnnEdgeError(f"{option} {text!r}: every size must be >= 1")
    return values


def name_list(text: str | None) -> tuple[str, ...]:
    """"fp32,int8" -> ("fp32", "int8"); None or "" -> ()."""
    return tuple(v.strip() for v in str(text or "").split(",") if v.strip())


def _whole(what: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise RnnEdgeError(f"{what} must be a whole number >= {low}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# Cases: which batch and time sizes, and random inputs of those sizes


def _time_axes(spec: TensorSpec) -> list[int]:
    """Axes of a data input that count steps: named time axes, or a fixed axis 1 of a sequence
    input (rank 3, or rank 2 integer ids)."""
    named = [i for i, d in enumerate(spec.shape) if is_time_axis(d)]
    if named:
        return named
    rank = len(spec.shape)
    if rank >= 2 and isinstance(spec.shape[1], int) and (rank >= 3 or spec.dtype.startswith("int")):
        return [1]
    return []


def cases_for(manifest: Manifest, batches: Sequence[int] | None = None, times: Sequence[int] | None = None,
              stream: bool = False) -> list[tuple[int, int | None]]:
    """(batch, time) pairs that `bench_dir` times, checked against the fixed axes of the data
    inputs (see `bench_dir` for what None means)."""
    if isinstance(batches, (int, np.integer)):
        batches = (batches,)
    if isinstance(times, (int, np.integer)):
        times = (times,)
    data = manifest.data_inputs
    fixed_batch = [(s.name, s.shape[0]) for s in data if s.shape and isinstance(s.shape[0], int)]
    time_axes = [(s, i) for s in data for i in _time_axes(s)]
    fixed_time = [(s.name, i, s.shape[i]) for s, i in time_axes if isinstance(s.shape[i], int)]
    if batches is None:
        batches = (fixed_batch[0][1],) if fixed_batch else (1,)
    asked_time = times is not None
    if not asked_time:
        if not time_axes:
            times = (None,)
        elif fixed_time:
            times = (fixed_time[0][2],)
        else:
            times = (1 if stream else DEFAULT_TIME,)
    elif not time_axes:
        inputs = ", ".join(f"{s.name}[{', '.join(map(str, s.shape))}]" for s in data)
        raise RnnEdgeError(f"the model has no time axis (inputs: {inputs}): leave --time out")
    batches = tuple(_whole("batch", b, 1) for b in batches)
    if asked_time:
        times = tuple(_whole("time", t, 1) for t in times)
    if not batches or not times:
        raise RnnEdgeError("give at least one batch size and one sequence length")
    errors = []
    for b in dict.fromkeys(batches):
        errors += [f"input '{n}' has a fixed batch axis (dimension 0) of {d}, but batch {b} was asked"
                   for n, d in fixed_batch if b != d]
    if asked_time:
        for t in dict.fromkeys(times):
            errors += [f"input '{n}' has a fixed time axis (dimension {i}) of {d}, but time {t} was asked"
                       for n, i, d in fixed_time if t != d]
    if errors:
        raise RnnEdgeError("; ".join(errors) + "; bench those sizes, or re-export with a dynamic axis")
    return [(b, t) for b in dict.fromkeys(batches) for t in dict.fromkeys(times)]


def _shape(spec: TensorSpec, batch: int, steps: int | None) -> tuple[int, ...]:
    shape = []
    for i, d in enumerate(spec.shape):
        if isinstance(d, int):
            shape.append(d)
        elif d == "batch":
            shape.append(batch)
        elif is_time_axis(d) and steps is not None:
            shape.append(steps)
        else:
            raise RnnEdgeError(f"input '{spec.name}' has a dynamic axis '{d}' (dimension {i}) that bench cannot "
                               "size (only 'batch' and time axes): re-export with that axis fixed")
    return tuple(shape)


def random_inputs(manifest: Manifest, batch: int, steps: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Data inputs of `batch` rows and `steps` steps: token ids in [1, vocab), floats N(0, 1);
    state inputs (streaming exports) zero."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in manifest.inputs:
        shape = _shape(spec, batch, steps)
        if spec.role == "state":
            feeds[spec.name] = np.zeros(shape, spec.dtype)
        elif spec.dtype.startswith(("int", "uint")):
            feeds[spec.name] = rng.integers(1, max(spec.vocab or 10, 2), size=shape).astype(spec.dtype)
        else:
            feeds[spec.name] = rng.normal(0, 1, size=shape).astype(spec.dtype)
    return feeds


# --------------------------------------------------------------------------------------------
# Candidates


def _variant_files(folder: Path, manifest: Manifest, variants: Sequence[str]) -> None:
    have = sorted({"fp32", *manifest.variants})
    missing = [v for v in variants if v != "fp32" and v not in manifest.variants]
    if missing:
        raise RnnEdgeError(f"{folder} has no {', '.join(repr(v) for v in missing)} variant (it has: {', '.join(have)}); "
                           f"make it with `rnnedge quantize {folder} --variants {','.join(missing)}` or bench those")
    for v in variants:
        entry = manifest.variants.get(v) or {"file": MODEL}
        name = entry.get("file") if isinstance(entry, Mapping) else None
        if not name or not (folder / name).is_file():
            raise RnnEdgeError(f"{folder}: the {v!r} variant's file {name!r} is missing; re-export or re-quantize it")


def _load(folder: Path, provider: str, variant: str, threads: int):
    from rnnedge.runtime import load

    return load(folder, provider, variant=variant, threads=threads)


def _ort_call(session, feeds: Mapping[str, np.ndarray]) -> Callable[[], Any]:
    """One timed call: session.run on CPU; IOBinding with device-resident inputs on CUDA/TensorRT."""
    import onnxruntime as ort

    from rnnedge.runtime import ORT_DTYPES

    graph_inputs = session.get_inputs()
    names = [i.name for i in graph_inputs]
    if not all(n in feeds for n in names):  # positional, for a graph named otherwise
        given = list(feeds.values())
        feeds = dict(zip(names, given))
    prepared = {}
    for i in graph_inputs:
        a = np.asarray(feeds[i.name])
        want = ORT_DTYPES.get(i.type)
        prepared[i.name] = np.ascontiguousarray(a if want is None or a.dtype == want else a.astype(want))
    outputs = [o.name for o in session.get_outputs()]
    provider = session.get_providers()[0]
    if provider not in _GPU:
        return lambda: session.run(outputs, prepared)
    device = int(session.get_provider_options().get(provider, {}).get("device_id", 0) or 0)
    io = session.io_binding()
    values = {n: ort.OrtValue.ortvalue_from_numpy(a, "cuda", device) for n, a in prepared.items()}
    for n, v in values.items():
        io.bind_ortvalue_input(n, v)
    for n in outputs:
        io.bind_output(n, "cuda", device)

    def call():
        session.run_with_iobinding(io)
        io.synchronize_outputs()

    call.values = values  # keep the device buffers alive with the closure
    return call


def _keras_source(source, manifest: Manifest, baselines: Sequence[str], threads: int):
    """The Keras model the folder was exported from (for the baselines), or RnnEdgeError."""
    need = (f"baselines ({', '.join(baselines)}) need the export extra (pip install 'rnnedge[export]') "
            "and the source model (--source FILE)")
    if source is None:
        name = str(manifest.source.get("name") or "")
        if not name:
            raise RnnEdgeError(f"{need}: the manifest names no source model")
        if not name.startswith("zoo:") and not Path(name).is_file():
            raise RnnEdgeError(f"{need}: the manifest's source {name!r} is not a file here or zoo:NAME")
        source = name
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as e:
        raise RnnEdgeError(f"{need}: {e.name or e} is not installed") from None
    _tf_threads(threads)
    from rnnedge.exporter import load_keras

    model = load_keras(source)[0]
    if len(model.inputs) != len(manifest.data_inputs):
        raise RnnEdgeError(f"the source model has {len(model.inputs)} input(s) but the export takes "
                           f"{len(manifest.data_inputs)} ({', '.join(s.name for s in manifest.data_inputs)}): "
                           "pass the model this folder was exported from (--source FILE)")
    return model


def _tf_threads(threads: int) -> None:
    """Limit TensorFlow's thread pools, which can only be set before TensorFlow starts."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already started in this process: keeps its pools
        pass


def _keras_call(fn, manifest: Manifest, feeds: Mapping[str, np.ndarray]) -> Callable[[], Any]:
    import tensorflow as tf

    args = [tf.constant(feeds[s.name]) for s in manifest.data_inputs]

    def call():
        return [t.numpy() for t in tf.nest.flatten(fn(*args))]

    return call


def _keras_function(model):
    import tensorflow as tf

    def forward(*args):
        return model(list(args) if len(args) > 1 else args[0], training=False)

    return tf.function(forward, jit_compile=False, reduce_retracing=True)


# --------------------------------------------------------------------------------------------
# The floor: Identity nodes with the model's inputs, pushed the same way


_ONNX_TYPES = {"float32": 1, "float16": 10, "float64": 11, "int32": 6, "int64": 7}


def floor_folder(manifest: Manifest, folder: str | os.PathLike) -> Path:
    """An export folder whose graph computes nothing: one Identity per input (data and state),
    data outputs first, each state output feeding its state input. Same inputs, so
    `stream.push` on it costs what a push costs around the model's own computation."""
    import onnx
    from onnx import helper

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def value(spec: TensorSpec):
        return helper.make_tensor_value_info(spec.name, _ONNX_TYPES.get(spec.dtype, 1), list(spec.shape))

    data_out = [dataclasses.replace(s, name=f"{s.name}_floor", pad_value=None, vocab=None) for s in manifest.data_inputs]
    state_out = [TensorSpec(f"{s.name}_floor", s.shape, s.dtype, role="state", feeds=s.name, layer=s.layer)
                 for s in manifest.state_inputs]
    inputs = [*manifest.data_inputs, *manifest.state_inputs]
    outputs = [*data_out, *state_out]
    nodes = [helper.make_node("Identity", [i.name], [o.name]) for i, o in zip(inputs, outputs)]
    graph = helper.make_graph(nodes, "floor", [value(s) for s in inputs], [value(s) for s in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", manifest.opset)])
    model.ir_version = manifest.ir_version
    onnx.save(model, folder / MODEL)
    Manifest(inputs=inputs, outputs=outputs, opset=manifest.opset, ir_version=manifest.ir_version,
             source={"name": "floor"}, streaming=True, variants={"fp32": {"file": MODEL}}).save(folder)
    return folder


# --------------------------------------------------------------------------------------------
# bench_dir


def bench_dir(
    folder: str | os.PathLike,
    *,
    provider: str = "cpu",
    batches: Sequence[int] | None = None,
    times: Sequence[int] | None = None,
    threads: int = 1,
    variants: Sequence[str] = ("fp32",),
    baselines: Sequence[str] = (),
    stream: bool = False,
    runs: int = 200,
    warmup: int = 20,
    source=None,
    progress=None,
    seed: int = 0,
) -> list[BenchRow]:
    """Time an export folder's `variants` (and `baselines`) for every batch x time; one row per case x candidate.

    batches / times: sizes to time. None (the CLI's "not given") means 1 for batch and, for time,
        the fixed time axis where the model has one, else 100 steps (1 step per push with
        `stream`). A size that differs from a fixed axis of an input raises RnnEdgeError.
    variants: "fp32" and keys of the manifest's `variants` ("int8", "fp16": `rnnedge quantize`).
    baselines: any of "keras", "tf2onnx", "litert", "litert-int8", timed with the same inputs; they need TensorFlow and the
        Keras model: `source` (a keras.Model, a .keras path, zoo:NAME or a `rnnedge.zoo.ZooModel`),
        else the manifest's source when it is a file here or zoo:NAME.
    stream: per-push latency of `model.stream(batch).push(chunk)` of `time` steps for every
        variant ("stream-fp32", ...) and of the "floor" (see `floor_folder`); needs a streaming
        export, and takes no baselines.
    progress: called with 1 after each case (len(batches) x len(times) of them), or a rich
        `Progress` that gets a task of its own. Nothing is printed.
    """
    folder = Path(folder)
    manifest = Manifest.load(folder)
    _whole("threads", threads, 1)
    _whole("runs", runs, 1)
    _whole("warmup", warmup, 0)
    variants = list(dict.fromkeys(variants))
    baselines = list(dict.fromkeys(baselines))
    if not variants:
        raise RnnEdgeError("give at least one variant to bench (fp32, int8, fp16)")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise RnnEdgeError(f"unknown baseline {unknown[0]!r}: expected a comma-separated list of {', '.join(BASELINES)}")
    _variant_files(folder, manifest, variants)
    if stream and not manifest.state_inputs:
        raise RnnEdgeError(f"{folder} has no state inputs, so it cannot stream: re-export it with "
                           "`rnnedge export --streaming` (forward-direction recurrent layers) to bench streaming")
    if stream and baselines:
        raise RnnEdgeError("baselines time whole sequences; with --stream the reference is the floor "
                           "(leave --baseline out, or bench without --stream)")
    cases = cases_for(manifest, batches, times, stream)

    keras_model = _keras_source(source, manifest, baselines, threads) if baselines else None
    if keras_model is not None:
        _baseline_fits(keras_model, manifest, cases)
    models = {v: _load(folder, provider, v, threads) for v in variants}
    first = models[variants[0]]
    provider_name = first.provider
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rnnedge-bench-") as tmp:
        if stream:
            extra["floor"] = _load(floor_folder(manifest, Path(tmp) / "floor"), provider, "fp32", threads)
        if "tf2onnx" in baselines:
            extra["tf2onnx"] = _tf2onnx_session(keras_model, first.session, threads)
        if "keras" in baselines:
            extra["keras"] = _keras_function(keras_model)
        for b in ("litert", "litert-int8"):
            if b in baselines:
                extra[b] = keras_model
        advance = _progress(progress, len(cases))
        rows: list[BenchRow] = []
        for batch, steps in cases:
            feeds = random_inputs(manifest, batch, steps, seed)
            if stream:
                calls = _stream_candidates(models, extra["floor"], manifest, feeds, batch)
                references = [FLOOR]
            else:
                calls = _whole_sequence_candidates(models, extra, manifest, feeds, baselines, threads)
                references = baselines
            ms = measure(calls, runs=runs, warmup=warmup, seed=seed)
            p50 = {n: percentiles(v)[0] for n, v in ms.items()}
            for name, samples in ms.items():
                a, b, c = percentiles(samples)
                per_s = batch * 1e3 / a if a > 0 else math.inf
                rows.append(BenchRow(
                    candidate=name, provider=_RUNS_ON.get(name, provider_name), batch=batch, time=steps, threads=threads,
                    p50_ms=a, p90_ms=b, p99_ms=c, seq_per_s=per_s, steps_per_s=per_s * (steps or 1),
                    ratios={r: p50[r] / a if a > 0 else math.inf for r in references}, runs=runs,
                    error=variant_error(manifest, name.removeprefix(STREAM_PREFIX)),
                ))
            advance(1)
    return rows


def variant_error(manifest: Manifest, variant: str) -> float | None:
    """A variant's max |diff| against Keras' golden outputs, as recorded at export and quantize time."""
    if variant == "fp32":
        worst = manifest.parity.get("worst_abs")
        return None if worst is None else float(worst)
    errors = manifest.variants.get(variant, {}).get("max_abs_error")
    return float(max(errors.values())) if errors else None


def _baseline_fits(keras_model, manifest: Manifest, cases) -> None:
    """The Keras model (and so its tf2onnx graph) may fix a time axis that a streaming export frees."""
    for t, spec in zip(keras_model.inputs, manifest.data_inputs):
        fixed = t.shape[1] if len(t.shape) > 1 else None
        for _, steps in cases:
            if fixed is not None and steps is not None and _time_axes(spec) and steps != fixed:
                raise RnnEdgeError(f"baselines: the Keras model's input '{spec.name}' takes {fixed} steps, not {steps}; "
                                   f"pass --time {fixed} to compare with the baselines")


def _whole_sequence_candidates(models, extra, manifest, feeds, baselines, threads: int) -> dict[str, Callable]:
    calls = {v: _ort_call(m.session, feeds) for v, m in models.items()}
    data = {s.name: feeds[s.name] for s in manifest.data_inputs}
    for b in baselines:
        if b == "tf2onnx":
            calls[b] = _ort_call(extra[b], data)
        elif b in ("litert", "litert-int8"):
            calls[b] = _litert_call(extra[b], manifest, data, threads, int8=b == "litert-int8")
        else:
            calls[b] = _keras_call(extra[b], manifest, data)
    return calls


def _litert_call(keras_model, manifest: Manifest, feeds: Mapping[str, np.ndarray], threads: int, *,
                 int8: bool = False) -> Callable[[], Any]:
    """One timed LiteRT call (set inputs, invoke, read outputs) on the Keras model converted for these shapes."""
    from rnnedge.exporter import litert_export

    data = {s.name: feeds[s.name] for s in manifest.data_inputs}
    with quiet_native_stderr():  # the converter's and XNNPACK's INFO lines
        flat = litert_export(keras_model, [a.shape for a in data.values()], int8=int8)
        interpreter = litert_interpreter(flat, threads)
    return litert_call(interpreter, data)


def litert_call(interpreter, feeds: Mapping[str, np.ndarray]) -> Callable[[], list[np.ndarray]]:
    """One call on a LiteRT interpreter, for timing: set `feeds` (matched to the inputs by name, else
    in order), invoke, read every output."""
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
    import warnings

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


class quiet_native_stderr:
    """Silence file descriptor 2 (native libraries' logging) for a block; Python errors still raise."""

    def __enter__(self):
        import sys

        sys.stderr.flush()
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        return False


def _stream_candidates(models, floor, manifest, feeds, batch) -> dict[str, Callable]:
    data = [feeds[s.name] for s in manifest.data_inputs]
    calls = {}
    for name, model in [*((STREAM_PREFIX + v, m) for v, m in models.items()), (FLOOR, floor)]:
        push = model.stream(batch).push
        calls[name] = lambda push=push: push(*data)
    return calls


def _tf2onnx_session(keras_model, like, threads: int):
    """The plain tf2onnx graph in onnxruntime, on the providers (and options) of session `like`."""
    import logging

    import onnxruntime as ort

    from rnnedge.exporter import tf2onnx_export

    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with quiet_native_stderr():  # grappler's INFO lines
            proto = tf2onnx_export(keras_model)
    finally:
        logger.setLevel(level)
    providers = like.get_providers()
    options = like.get_provider_options()
    return ort.InferenceSession(proto.SerializeToString(), session_options(threads), providers=providers,
                                provider_options=[options.get(p, {}) for p in providers])


def _progress(progress, total: int) -> Callable[[int], None]:
    if progress is None:
        return lambda n: None
    if hasattr(progress, "add_task") and hasattr(progress, "advance"):  # a rich Progress
        task = progress.add_task("bench", total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)
            progress.refresh()  # for Progress(auto_refresh=False): no refresh thread while timing

        return advance
    if not callable(progress):
        raise RnnEdgeError(f"progress must be a callable or a rich Progress, got {type(progress).__name__}")
    return progress


# --------------------------------------------------------------------------------------------
# Files and tables


def write_json(rows: Sequence[BenchRow], path: str | os.PathLike) -> Path:
    """A JSON list of the rows (`dataclasses.asdict`); `read_json` reads it back."""
    path = Path(path)
    _parent(path)
    path.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2) + "\n")
    return path


def read_json(path: str | os.PathLike) -> list[BenchRow]:
    return [BenchRow(**d) for d in json.loads(Path(path).read_text())]


def _ratio_keys(rows: Sequence[BenchRow]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r.ratios))


def write_csv(rows: Sequence[BenchRow], path: str | os.PathLike) -> Path:
    """One line per row; `ratios` spread into columns "vs_<baseline>" (empty where not timed)."""
    path = Path(path)
    _parent(path)
    fields = [f.name for f in dataclasses.fields(BenchRow) if f.name != "ratios"]
    keys = _ratio_keys(rows)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields + [f"vs_{k}" for k in keys])
        for r in rows:
            d = dataclasses.asdict(r)
            w.writerow([("" if d[k] is None else d[k]) for k in fields] + [r.ratios.get(k, "") for k in keys])
    return path


def _parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RnnEdgeError(f"cannot write {path} ({e.strerror or e})") from None


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 10 else f"{v:.2f}"


_COLUMNS = ("candidate", "provider", "batch", "time", "threads", "p50 ms", "p90 ms", "p99 ms", "seq/s", "steps/s",
            "max|diff|")


def _cells(r: BenchRow, keys: list[str]) -> list[str]:
    provider = r.provider.removesuffix("ExecutionProvider")
    return [r.candidate, provider, str(r.batch), "-" if r.time is None else str(r.time), str(r.threads),
            _ms(r.p50_ms), _ms(r.p90_ms), _ms(r.p99_ms), _rate(r.seq_per_s), _rate(r.steps_per_s),
            "-" if r.error is None else f"{r.error:.1e}",
            *(f"{r.ratios[k]:.2f}x" if k in r.ratios else "" for k in keys)]


def markdown(rows: Sequence[BenchRow]) -> str:
    """A GitHub markdown table; "vs X" columns are X's p50 / this p50 (above 1: faster than X)."""
    keys = _ratio_keys(rows)
    head = [*_COLUMNS, *(f"vs {k}" for k in keys)]
    align = ["---" if i < 2 else "---:" for i in range(len(head))]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cells(r, keys)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def rich_table(rows: Sequence[BenchRow], title: str | None = None):
    """A `rich.table.Table` of the rows: the columns of `markdown`, less provider and threads
    where every row has the same (the title says them)."""
    from rich.table import Table

    keys = _ratio_keys(rows)
    columns = [*_COLUMNS, *(f"vs {k}" for k in keys)]
    same = {"provider": len({r.provider for r in rows}) == 1, "threads": len({r.threads for r in rows}) == 1}
    keep = [i for i, c in enumerate(columns) if not same.get(c)]
    table = Table(title=title or _title(rows))
    for i in keep:
        table.add_column(columns[i], justify="left" if i < 2 else "right")
    for r in rows:
        cells = _cells(r, keys)
        table.add_row(*(cells[i] for i in keep))
    return table


def _title(rows: Sequence[BenchRow]) -> str:
    def listed(values):
        values = list(dict.fromkeys(values))
        return ", ".join(str(v) for v in values)

    providers = listed(r.provider.removesuffix("ExecutionProvider") for r in rows)
    return (f"rnnedge bench: {providers}, batch {listed(r.batch for r in rows)}, "
            f"{listed(r.threads for r in rows)} thread(s)")


def _label_ticks(axis, values):
    """Ticks at the measured values only, in plain numbers (log axes otherwise crowd 2x10^1...)."""
    from matplotlib.ticker import NullFormatter

    axis.set_ticks(values, [str(v) for v in values])
    axis.set_minor_formatter(NullFormatter())


def plot(rows: Sequence[BenchRow], path: str | os.PathLike) -> Path:
    """p50 latency (ms) per candidate against sequence length (against batch when one length was
    timed; bars when one case was); log y when the values span more than 20x. PNG, SVG or PDF by suffix."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RnnEdgeError("plotting needs matplotlib: pip install 'rnnedge[plot]'") from None
    if not rows:
        raise RnnEdgeError("no benchmark rows to plot")
    path = Path(path)
    _parent(path)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    times = list(dict.fromkeys(r.time for r in rows))
    batches = list(dict.fromkeys(r.batch for r in rows))
    names = list(dict.fromkeys(r.candidate for r in rows))
    stream = any(r.candidate == FLOOR or r.candidate.startswith(STREAM_PREFIX) for r in rows)
    steps = "steps per push" if stream else "sequence length (steps)"
    if len(times) > 1 and None not in times:
        groups = batches if len(batches) > 1 else [None]
        styles = ("-", "--", ":", "-.")
        for k, name in enumerate(names):
            for j, b in enumerate(groups):  # one colour per candidate, one line style per batch
                pts = sorted((r.time, r.p50_ms) for r in rows if r.candidate == name and b in (None, r.batch))
                label = name if b is None else f"{name}, batch {b}"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=f"C{k % 10}",
                        linestyle=styles[j % len(styles)], label=label)
        ax.set_xlabel(steps)
        ax.set_xscale("log" if max(times) / min(times) > 20 else "linear")
        _label_ticks(ax.xaxis, sorted(times))
    elif len(batches) > 1:
        for name in names:
            pts = sorted((r.batch, r.p50_ms) for r in rows if r.candidate == name)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xlabel("batch (sequences per call)")
        ax.set_xscale("log" if max(batches) / min(batches) > 20 else "linear")
        _label_ticks(ax.xaxis, sorted(batches))
    else:
        ax.bar(names, [next(r.p50_ms for r in rows if r.candidate == n) for n in names])
        if times[0] is not None:
            each = f"{times[0]} step{'s' if times[0] != 1 else ''}{' per push' if stream else ''}"
            ax.set_xlabel(f"candidate ({each})")
        else:
            ax.set_xlabel("candidate")
    values = [r.p50_ms for r in rows]
    if min(values) > 0 and max(values) / min(values) > 20:
        ax.set_yscale("log")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title(_title(rows))
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)
    return path
