"""`rnnedge export`: Keras model -> DIR/{model.onnx, manifest.json, golden.npz}, verified.

The folder is written to a temporary sibling and moved into place only when complete, so a
failure leaves nothing half-written; an existing folder is replaced only with `force=True`.
A parity failure still moves the files into place (marked failed, for inspection) and raises.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402

from rnnedge import __version__  # noqa: E402
from rnnedge.check import PROVIDER_TOLERANCE, ParityReport, Tolerance, check_dir, write_golden  # noqa: E402
from rnnedge.convert import UnsupportedLayerError, convert, functional_graph, recurrent_layers  # noqa: E402
from rnnedge.convert.core import Converted, interface  # noqa: E402
from rnnedge.convert.splice import SpliceError  # noqa: E402
from rnnedge.errors import ParityError, RnnEdgeError  # noqa: E402
from rnnedge.manifest import MODEL, TIME, Manifest, TensorSpec, is_time_axis  # noqa: E402

BATCHES = (1, 3, 2)  # batch sizes tried where the batch axis is dynamic
LENGTHS = (7, 16, 1)  # sequence lengths tried where a time axis is dynamic
ZOO_GOLDEN_ROWS = 16  # rows of the zoo's real test data stored in golden.npz


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    manifest: Manifest
    parity: ParityReport

    @property
    def passed(self) -> bool:
        return self.parity.passed


def load_keras(source, *, unsafe: bool = False):
    """(keras.Model, description, sha256, zoo entry or None) from a model, a path, `zoo:NAME`
    or a loaded `rnnedge.zoo.ZooModel`."""
    if isinstance(source, keras.Model):
        return source, source.name, _weights_sha256(source), None
    if hasattr(source, "model") and hasattr(source, "x_test"):  # a ZooModel
        return source.model, f"zoo:{source.name}", _weights_sha256(source.model), source
    text = str(source)
    if text.startswith("zoo:"):
        from rnnedge import zoo

        entry = zoo.load(text[4:])
        return entry.model, text, _weights_sha256(entry.model), entry
    path = Path(text)
    if not path.exists():
        raise RnnEdgeError(f"{path}: no such file; expected a .keras model file or zoo:NAME (see `rnnedge zoo`)")
    if path.is_dir() or path.suffix not in (".keras", ".h5"):
        raise RnnEdgeError(f"{path} is not a Keras model file: expected a .keras (or legacy .h5) file")
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as e:  # Keras raises many types for a bad file; all mean "not loadable"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "safe_mode" in str(e) or "Lambda" in str(e):
            raise RnnEdgeError(
                f"{path} holds a Lambda layer, which can run arbitrary code when loaded; "
                "pass --unsafe only if you trust the file"
            ) from None
        raise RnnEdgeError(f"{path} is not a loadable Keras model ({reason[:160]})") from None
    if not isinstance(model, keras.Model):
        raise RnnEdgeError(f"{path} does not hold a keras.Model")
    return model, str(path), hashlib.sha256(path.read_bytes()).hexdigest(), None


def _weights_sha256(model) -> str:
    h = hashlib.sha256(model.to_json().encode())
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def versions() -> dict[str, str]:
    found = {"rnnedge": __version__}
    for pkg in ("keras", "tensorflow", "tensorflow-cpu", "tf2onnx", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy"):
        try:
            found[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return found


# ---------------------------------------------------------------- sample inputs and Keras truth

# Kinds of rows in the padded samples, taken in turn across the cases: every mask pattern Keras
# handles, so the export's own parity check covers them all.
ROW_KINDS = ("gaps", "full", "empty", "front", "back")


def _keep_row(kind: str, steps: int, rng: np.random.Generator) -> np.ndarray:
    """Which steps of one row are real (not padding)."""
    keep = np.ones(steps, bool)
    if kind == "empty":
        keep[:] = False
    elif kind in ("front", "back") and steps > 1:  # keras.utils.pad_sequences pads at the front by default
        real = int(rng.integers(1, steps))
        if kind == "front":
            keep[: steps - real] = False
        else:
            keep[real:] = False
    elif kind == "gaps":
        keep = rng.random(steps) < 0.6
        if steps >= 2:
            keep[:2] = False, True  # padding first, then a real step (a gap after it below)
        if steps >= 4:
            keep[2:4] = False, True
    return keep


def _sample(spec: TensorSpec, dims: dict, rng: np.random.Generator, keep: np.ndarray | None) -> np.ndarray:
    shape = tuple(dims.get(d, 1) if isinstance(d, str) else d for d in spec.shape)
    if spec.dtype == "bool":
        x = np.ones(shape, bool) if spec.pad_value is not None else rng.random(shape) < 0.5
    elif spec.dtype.startswith("int"):
        low = 1 if spec.pad_value is not None else 0
        x = rng.integers(low, max(spec.vocab or 10, low + 1), size=shape).astype(spec.dtype)
    else:
        x = rng.normal(0, 1, size=shape).astype(spec.dtype)
    if spec.pad_value is not None and keep is not None and x.shape[:2] == keep.shape:
        x[~keep] = spec.pad_value
    return x


def random_cases(inputs: list[TensorSpec], seed: int = 0, random_states: bool = True) -> list[tuple[str, dict]]:
    """Random inputs at several batch sizes and sequence lengths. Inputs that carry a mask (or
    are one) get rows of each kind in ROW_KINDS in turn: padding at the front, at the back, in
    gaps, a full row and a fully padded one. State inputs are zero in the first case (a fresh
    stream), random in the others if `random_states`."""
    rng = np.random.default_rng(seed)
    time_axes = sorted({d for s in inputs for d in s.shape[1:] if isinstance(d, str)})
    fixed_batch = next((s.shape[0] for s in inputs if isinstance(s.shape[0], int)), None)  # stateful models
    padded = next((s for s in inputs if s.pad_value is not None and len(s.shape) >= 2), None)
    cases, row = [], 0
    for i, (batch, length) in enumerate(zip(BATCHES, LENGTHS)):
        batch = fixed_batch or batch
        dims = {"batch": batch, **{t: length + 2 * k for k, t in enumerate(time_axes)}}
        keep = None
        if padded is not None:
            steps = dims.get(padded.shape[1], padded.shape[1])
            keep = np.stack([_keep_row(ROW_KINDS[(row + r) % len(ROW_KINDS)], steps, rng) for r in range(batch)])
            row += batch
        feeds = {}
        for s in inputs:
            x = _sample(s, dims, rng, keep)
            if s.role == "state" and (i == 0 or not random_states):
                x = np.zeros_like(x)  # a fresh stream
            feeds[s.name] = x
        desc = f"random batch {batch}" + (f", time {length}" if time_axes else "") + (", padded" if padded else "")
        cases.append((desc, feeds))
    return cases


def _stateful_layers(model) -> list:
    return [layer for layer in recurrent_layers(functional_graph(model)) if getattr(layer, "stateful", False)]


def _layer_states(layer) -> list:
    """A stateful layer's state variables, flat (StackedRNNCells nests one list per cell)."""
    return keras.tree.flatten(layer.states)


def keras_outputs(model, converted, feeds: dict) -> dict[str, np.ndarray]:
    """Keras' outputs for one case, named as the ONNX outputs are (states of stateful layers too).

    State inputs and outputs are matched to Keras' state variables by the layer they belong to:
    the converter meets layers in graph order, which need not be the order of `model.layers`."""
    data_in = [feeds[s.name] for s in converted.inputs if s.role == "data"]
    stateful = {layer.name: layer for layer in _stateful_layers(model)}
    state_specs = [s for s in converted.inputs if s.role == "state"]
    if stateful:
        for name, layer in stateful.items():
            specs = [s for s in state_specs if s.layer == name]
            variables = _layer_states(layer)
            if len(specs) != len(variables):
                raise AssertionError(f"{name}: {len(specs)} state inputs for {len(variables)} Keras states")
            for spec, var in zip(specs, variables):
                var.assign(feeds[spec.name])
    elif state_specs:  # --streaming of a stateless model: Keras truth exists for a fresh state only
        if any(np.any(feeds[s.name]) for s in state_specs):
            raise AssertionError("Keras truth for a streaming model needs zero initial states")
    result = model(data_in if len(data_in) > 1 else data_in[0], training=False)
    flat = [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(result)]
    names = [s.name for s in converted.outputs if s.role == "data"]
    out = dict(zip(names, flat))
    if stateful:
        for name, layer in stateful.items():
            specs = [s for s in converted.outputs if s.role == "state" and s.layer == name]
            out.update((s.name, np.asarray(keras.ops.convert_to_numpy(v))) for s, v in zip(specs, _layer_states(layer)))
    return out


def _keras_truth(model, converted, proto, seed: int):
    """Keras' outputs on the random cases. Inputs with time axes of their own get different
    lengths; where Keras refuses that (the model joins them step by step), the export declares
    one shared "time" axis instead, so the runtime checks that their lengths agree."""
    random_states = bool(_stateful_layers(model))
    samples = random_cases(converted.keras_inputs or converted.inputs, seed, random_states=random_states)
    try:
        cases = [(n, f, keras_outputs(model, converted, f)) for n, f in samples]
        return cases, *_observed_widths(converted, proto, cases)
    except Exception:
        own = {d for s in converted.inputs for d in s.shape if is_time_axis(d) and d != TIME}
        if not own:
            raise
    shared = lambda specs: [dataclasses.replace(s, shape=tuple(TIME if d in own else d for d in s.shape)) for s in specs]  # noqa: E731
    converted = dataclasses.replace(converted, inputs=shared(converted.inputs), outputs=shared(converted.outputs),
                                    keras_inputs=shared(converted.keras_inputs or converted.inputs))
    for value in [*proto.graph.input, *proto.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in own:
                dim.dim_param = TIME
    samples = random_cases(converted.keras_inputs, seed, random_states=random_states)
    cases = [(n, f, keras_outputs(model, converted, f)) for n, f in samples]
    return cases, *_observed_widths(converted, proto, cases)


def _observed_widths(converted, proto, cases):
    """Declare the fixed output sizes Keras computes rather than those it reports: for a
    Bidirectional layer whose backward layer has other units, Keras reports twice the forward
    width. Named (dynamic) axes are left alone."""
    fixed = {}
    for spec in converted.outputs:
        seen = [out[spec.name].shape for _, _, out in cases if spec.name in out]
        if not seen or any(len(s) != len(spec.shape) for s in seen):
            continue
        shape = tuple(d if not isinstance(d, int) or len({s[i] for s in seen}) != 1 else seen[0][i]
                      for i, d in enumerate(spec.shape))
        if shape != tuple(spec.shape):
            fixed[spec.name] = shape
    if not fixed:
        return converted, proto
    for value in proto.graph.output:
        if value.name in fixed:
            for dim, size in zip(value.type.tensor_type.shape.dim, fixed[value.name]):
                if isinstance(size, int):
                    dim.dim_value = size
    outputs = [dataclasses.replace(s, shape=fixed.get(s.name, s.shape)) for s in converted.outputs]
    return dataclasses.replace(converted, outputs=outputs), proto


def zoo_case(entry, converted) -> tuple[str, dict]:
    """The first rows of the zoo's real test data, with a fresh (zero) state where the export streams."""
    specs = [s for s in converted.inputs if s.role == "data"]
    feeds = {s.name: np.asarray(x[:ZOO_GOLDEN_ROWS]) for s, x in zip(specs, entry.x_test)}
    rows = len(next(iter(feeds.values())))
    for s in converted.inputs:
        if s.role == "state":
            feeds[s.name] = np.zeros((rows, *s.shape[1:]), np.float32)
    return f"{entry.task} test split ({rows} rows)", feeds


# ---------------------------------------------------------------- tf2onnx, for --allow-loop and baselines

def keras_function(model, shapes: list[tuple[int, ...]] | None = None):
    """(tf.function of the Keras model in inference mode with a fixed input signature, its
    `interface`): inputs named as in rnnedge's export, outputs Keras' flattened outputs.
    `shapes` fixes every input's shape (one per input); by default Keras' own (None = dynamic)."""
    import tensorflow as tf

    graph = functional_graph(model)
    io = interface(graph)
    shapes = shapes or [t.shape for t in graph.inputs]
    spec = [tf.TensorSpec(shape, t.dtype, name=n) for t, n, shape in zip(graph.inputs, io.input_names, shapes)]

    @tf.function(input_signature=spec)
    def call(*args):
        return keras.tree.flatten(model(list(args) if len(args) > 1 else args[0], training=False))

    return call, io


def tf2onnx_export(model, opset: int = 17) -> onnx.ModelProto:
    """The plain tf2onnx graph of a Keras 3 model (Sequential included, via a tf.function),
    with the same input and output names as rnnedge's export."""
    import tf2onnx

    call, io = keras_function(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto, _ = tf2onnx.convert.from_function(call, input_signature=call.input_signature, opset=opset)
    proto.ir_version = min(proto.ir_version, 8)
    renamed = {o.name: n for o, n in zip(proto.graph.output, io.output_names)}
    for node in proto.graph.node:
        node.output[:] = [renamed.get(o, o) for o in node.output]
        node.input[:] = [renamed.get(i, i) for i in node.input]
    for o in proto.graph.output:
        o.name = renamed[o.name]
    return proto


def litert_export(model, shapes: list[tuple[int, ...]], *, int8: bool = False) -> bytes:
    """The Keras model as a LiteRT (TensorFlow Lite) flatbuffer for fixed input `shapes` (one per
    input, batch first), the way an edge user of Keras converts it: `TFLiteConverter` on the
    frozen `keras_function`, built-in ops only. Keras 3 recurrent layers become `WHILE` loops;
    LiteRT cannot lower their tensor lists with a dynamic batch, so every shape is fixed.
    `int8`: LiteRT's dynamic-range quantization (`Optimize.DEFAULT`: int8 weights, activations
    quantized on the fly by its hybrid kernels), its counterpart of rnnedge's int8 variant."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    shown = ", ".join(str(tuple(s)) for s in shapes)
    stateful = [layer.name for layer in _stateful_layers(model)]
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
        raise RnnEdgeError(f"LiteRT could not convert model '{model.name}' for input shapes {shown}: {reason}") from None


def _loop_layers(proto: onnx.ModelProto, model) -> list[str]:
    loops = [n.name for n in proto.graph.node if n.op_type in ("Loop", "Scan")]
    names = [layer.name for layer in recurrent_layers(functional_graph(model))]
    hit = [n for n in names if any(f"/{n}/" in f"/{loop}/" for loop in loops)]
    return hit or (names if loops else [])


# ---------------------------------------------------------------- export

def export(
    source,
    out: str | Path,
    *,
    force: bool = False,
    streaming: bool = False,
    allow_loop: bool = False,
    unsafe: bool = False,
    tolerance: Tolerance = Tolerance(),
    overrides: dict | None = None,
    seed: int = 0,
    quantize=(),
    data: str | Path | None = None,
    metric: str | None = None,
) -> ExportResult:
    """Export a Keras model (object, .keras path or `zoo:NAME`) to `out` and verify it against Keras.

    Raises RnnEdgeError for bad input (nothing written) and ParityError when ONNX and Keras
    disagree (the folder is written, its manifest marked failed).
    """
    from rnnedge.quantize import parse_variants, quantize_dir

    variants = parse_variants(quantize) if quantize else []
    out = Path(out)
    if out.exists() and not force:
        raise RnnEdgeError(f"{out} already exists; pass --force to overwrite it")
    if out.exists() and not out.is_dir():
        raise RnnEdgeError(f"{out} exists and is not a folder; choose another --out")
    model, source_name, sha256, entry = load_keras(source, unsafe=unsafe)
    started = time.perf_counter()
    loop_layers: list[str] = []
    try:
        converted = convert(model, streaming=streaming)
        proto = converted.onnx_model
    except UnsupportedLayerError as e:
        if not allow_loop or isinstance(e, SpliceError):  # tf2onnx refused that layer already
            raise
        if streaming or _stateful_layers(model):
            raise RnnEdgeError(f"{e}; --allow-loop cannot keep state across calls (stateful or --streaming)") from None
        proto, converted = _fallback(model)
        loop_layers = _loop_layers(proto, model)
        warnings.warn(f"{e.layer_name}: {e.reason}; fell back to the plain tf2onnx graph, where "
                      f"{', '.join(loop_layers) or 'no layer'} stayed as Loop", stacklevel=2)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        cases, converted, proto = _keras_truth(model, converted, proto, seed)
        onnx.save(proto, tmp / MODEL)
        if entry is not None:
            name, feeds = zoo_case(entry, converted)
            cases.append((name, feeds, keras_outputs(model, converted, feeds)))
        write_golden(tmp, cases)
        manifest = Manifest(
            inputs=converted.inputs,
            outputs=converted.outputs,
            opset=converted.opset,
            ir_version=proto.ir_version,
            source={"name": source_name, "sha256": sha256, "keras_name": model.name},
            versions=versions(),
            fused_nodes=converted.fused_nodes,
            loop_layers=loop_layers,
            layers=converted.layers,
            streaming=any(s.role == "state" for s in converted.inputs),
            variants={"fp32": {"file": MODEL, "size": (tmp / MODEL).stat().st_size}},
        )
        # A stateful layer's masked step before the call's first valid one outputs zeros in Keras
        # (each call starts its "previous output" afresh), so such a model fed in chunks is Keras
        # called chunk by chunk, not Keras on the whole sequence: no chunked comparison for it.
        chunks = {} if not (_stateful_layers(model) and any(s.pad_value is not None for s in converted.inputs)) \
            else {"stream_chunks": []}
        manifest.parity = {"passed": False, "overrides": {k: list(v) for k, v in (overrides or {}).items()}, **chunks}
        manifest.save(tmp)
        report = check_dir(tmp, "cpu", tolerance=tolerance, overrides=overrides or {})
        manifest.parity = {**report.to_dict(), "overrides": {k: list(v) for k, v in (overrides or {}).items()}, **chunks,
                           "provider_tolerances": {p: {"atol": a, "rtol": r} for p, (a, r) in PROVIDER_TOLERANCE.items()}}
        if entry is not None:
            manifest.task = task_metrics(entry, tmp)
        manifest.export_seconds = round(time.perf_counter() - started, 3)
        manifest.save(tmp)
        if variants and report.passed:
            evaluate = (lambda m: entry.score(m.run(*entry.x_test).data)) if entry is not None else None
            quantize_dir(tmp, variants, evaluate=evaluate, data=data, metric=metric)
            manifest = Manifest.load(tmp)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not report.passed:
        raise ParityError(f"{out}: ONNX does not match Keras ({'; '.join(report.failures()[:3])}); "
                          f"files kept for inspection, manifest marked failed")
    return ExportResult(out, manifest, report)


def task_metrics(entry, folder: Path) -> dict:
    """The zoo model's task metric computed from Keras' and from onnxruntime's outputs."""
    from rnnedge.runtime import load

    model = load(folder, provider="cpu")
    outputs = model.run(*entry.x_test)
    return {"metric": entry.metric, "keras": float(entry.keras_score), "onnx": float(entry.score(outputs.data)),
            "baseline": float(entry.baseline), "higher_is_better": entry.higher_is_better, "cell": entry.cell,
            "task": entry.task}


def _fallback(model):
    """tf2onnx's graph, described with the same input/output specs as a fused export would have."""
    proto = tf2onnx_export(model)
    graph = functional_graph(model)
    io = interface(graph)
    inputs = [TensorSpec(n, tuple(shape), str(t.dtype)) for t, n, shape in zip(graph.inputs, io.input_names, io.input_shapes)]
    outputs = [TensorSpec(n, tuple(shape), str(t.dtype)) for t, n, shape in zip(graph.outputs, io.output_names, io.output_shapes)]
    routes = {layer.name: "tf2onnx" for layer in graph.layers if not isinstance(layer, keras.layers.InputLayer)}
    return proto, Converted(proto, inputs, outputs, {}, layers=routes)


def _move_into_place(tmp: Path, out: Path):
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private (0700); the export gets a folder's usual mode
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
