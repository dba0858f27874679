"""`rnnedge triton DIR --out REPO`: a Triton model repository from an export folder.

    REPO/<name>/config.pbtxt    every input and output, dtype and dimension from manifest.json
    REPO/<name>/1/model.onnx    --backend onnxruntime
    REPO/<name>/1/model.py      --backend python: rnnedge's runtime, state kept per sequence
    REPO/<name>/1/export/       --backend python: a copy of the export folder

Stateless exports get `dynamic_batching`. Streaming exports (manifest.streaming) get
`sequence_batching`: for onnxruntime, one implicit `state` entry per state input/output pair
with a zero initial state, so Triton itself feeds each state output back into its input and a
client sends only its chunks and a sequence id (no control input: the ONNX graph takes none);
for python, the START/END/READY/CORRID control inputs, and `model.py` keeps each sequence's state.
Every config is parsed with Triton's own schema (`tritonclient`'s `model_config_pb2`) before
anything is written; the repository entry is written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from rnnedge.errors import RnnEdgeError
from rnnedge.files import atomic_path, discard_dir, disk_error, recover_dir, replace_dir, temp_dir
from rnnedge.manifest import BATCH, MODEL, Manifest, TensorSpec

BACKENDS = ("onnxruntime", "python")
CONFIG = "config.pbtxt"
VERSION = "1"
EXPORT = "export"  # the export folder's copy inside the version folder (python backend)
MODEL_PY = Path(__file__).with_name("triton_model.py")  # copied as <version>/model.py
# The python backend's control inputs: names, and the kinds Triton fills them with.
CONTROLS = {"START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END",
            "READY": "CONTROL_SEQUENCE_READY", "CORRID": "CONTROL_SEQUENCE_CORRID"}
# manifest dtype -> Triton data type (one table; the client reads it backwards)
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int8": "TYPE_INT8",
                 "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "uint8": "TYPE_UINT8",
                 "bool": "TYPE_BOOL"}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


IDLE_MAX_S = 365 * 24 * 3600


@dataclass(frozen=True)
class RepositoryOptions:
    """How `write_repository` serves an export.

    max_batch: Triton's max_batch_size (rows per model execution); 0 when some tensor has no
        leading "batch" axis. instances: model instances (one process each for python).
    gpu: instance group KIND_GPU (onnxruntime's CUDA provider; python: rnnedge.load(provider="cuda"));
        tensorrt: also onnxruntime's TensorRT accelerator (onnxruntime backend, with gpu).
    idle_seconds: max_sequence_idle_microseconds: a sequence with no request for this long is
        released (its state dropped). max_sequences: sequences open at once per instance (python
        backend's `oldest` strategy; onnxruntime's `direct` strategy has max_batch slots per instance).
    threads: onnxruntime intra-op threads per instance.
    queue_delay_ms: how long the sequence batcher waits for other sequences' requests to batch
        with the first (max_queue_delay_microseconds): 0 answers at once; a few ms trades that
        much latency for fuller batches under load.
    """

    name: str
    backend: str = "onnxruntime"
    max_batch: int = 32
    instances: int = 1
    gpu: bool = False
    tensorrt: bool = False
    idle_seconds: float = 60.0
    max_sequences: int = 1024
    threads: int = 1
    queue_delay_ms: float = 0.0
    provider: str = ""  # python backend: the execution provider rnnedge.load runs it on (cpu, openvino, qnn, ...)
    precision: str = ""  # python backend: the precision pinned on it (rnnedge.load(precision=))

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise RnnEdgeError(f"model name {self.name!r}: expected letters, digits, '_', '-' or '.' "
                               "(it names the repository folder and the model's URL)")
        if self.backend not in BACKENDS:
            raise RnnEdgeError(f"backend {self.backend!r}: expected one of {', '.join(BACKENDS)}")
        for what, value, low, high in (("max batch", self.max_batch, 0, 65536), ("instances", self.instances, 1, 1024),
                                       ("max sequences", self.max_sequences, 1, 1_000_000),
                                       ("threads", self.threads, 1, 1024)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise RnnEdgeError(f"{what} must be a whole number from {low} to {high:,}, got {value!r}")
        if not (isinstance(self.idle_seconds, (int, float)) and 0.001 <= self.idle_seconds <= IDLE_MAX_S):
            raise RnnEdgeError(f"idle timeout must be from 0.001 to {IDLE_MAX_S:,} seconds (a year), "
                               f"got {self.idle_seconds!r}")
        if not (isinstance(self.queue_delay_ms, (int, float)) and 0 <= self.queue_delay_ms <= 1000):
            raise RnnEdgeError(f"queue delay must be from 0 to 1,000 ms, got {self.queue_delay_ms!r}")
        if (self.provider or self.precision) and self.backend != "python":
            raise RnnEdgeError("--provider and --precision choose the provider of the python backend "
                               "(rnnedge's runtime): pass --backend python with them, or --gpu/--tensorrt instead")
        if self.tensorrt and not (self.gpu and self.backend == "onnxruntime"):
            raise RnnEdgeError("TensorRT is an accelerator of the onnxruntime backend on GPU instances: "
                               "pass --gpu --backend onnxruntime with --tensorrt")


def _q(text: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dtype(spec: TensorSpec) -> str:
    try:
        return TRITON_DTYPES[spec.dtype]
    except KeyError:
        raise RnnEdgeError(f"tensor '{spec.name}' has dtype {spec.dtype}, which Triton's config has no type for "
                           f"(expected one of {', '.join(TRITON_DTYPES)})") from None


def _dims(spec: TensorSpec, batched: bool) -> list[int]:
    shape = spec.shape[1:] if batched else spec.shape
    return [d if isinstance(d, int) else -1 for d in shape]


def _tensor(spec: TensorSpec, batched: bool) -> str:
    dims = _dims(spec, batched)
    reshape = ""
    if not dims:  # [batch] alone: Triton wants at least one dimension
        dims, reshape = [1], " reshape: { shape: [ ] }"
    return (f"  {{ name: {_q(spec.name)} data_type: {_dtype(spec)} dims: [ {', '.join(map(str, dims))} ]"
            f"{reshape} }}")


def _state_pairs(manifest: Manifest) -> list[tuple[TensorSpec, TensorSpec]]:
    """(state input, the state output that feeds it), in input order; RnnEdgeError if unmatched."""
    by_input = {o.feeds: o for o in manifest.state_outputs}
    pairs = []
    for s in manifest.state_inputs:
        if s.name not in by_input:
            raise RnnEdgeError(f"manifest.json: no state output feeds state input '{s.name}'; re-export the model "
                               "with `rnnedge export --streaming`")
        pairs.append((s, by_input[s.name]))
    return pairs


def _is_batched(manifest: Manifest, max_batch: int) -> bool:
    return max_batch > 0 and all(t.shape and t.shape[0] == BATCH for t in (*manifest.inputs, *manifest.outputs))


def model_config(manifest: Manifest, options: RepositoryOptions) -> str:
    """config.pbtxt for `manifest` served as `options` say (checked by `parse_config` before writing)."""
    batched = _is_batched(manifest, options.max_batch)
    streaming = manifest.streaming
    if streaming and not manifest.state_inputs:
        raise RnnEdgeError("manifest.json says streaming but lists no state inputs; re-export the model with "
                           "`rnnedge export --streaming`")
    if not streaming and manifest.state_inputs:
        raise RnnEdgeError("manifest.json lists state inputs but is not marked streaming; re-export the model")
    taken = {t.name for t in (*manifest.inputs, *manifest.outputs)} & set(CONTROLS)
    if taken and options.backend == "python" and streaming:
        raise RnnEdgeError(f"the model has a tensor named {sorted(taken)[0]}, which the python backend's sequence "
                           "control inputs use: rename that Keras input or output and re-export")
    python = options.backend == "python"
    lines = [f"name: {_q(options.name)}", f"backend: {_q(options.backend)}",
             f"max_batch_size: {options.max_batch if batched else 0}"]
    lines += ["input ["] + [",\n".join(_tensor(s, batched) for s in manifest.data_inputs)] + ["]"]
    lines += ["output ["] + [",\n".join(_tensor(s, batched) for s in manifest.data_outputs)] + ["]"]
    if streaming:
        lines += ["sequence_batching {", f"  max_sequence_idle_microseconds: {int(options.idle_seconds * 1e6)}"]
        if python:
            # oldest: requests of different sequences batched into one execute() call, up to
            # max_batch; max_sequences open at once, each bound to one instance.
            lines += [f"  oldest {{ max_candidate_sequences: {options.max_sequences} "
                      f"max_queue_delay_microseconds: {round(options.queue_delay_ms * 1000)} }}", "  control_input ["]
            controls = []
            for name, kind in CONTROLS.items():
                value = ("data_type: TYPE_UINT64" if kind == "CONTROL_SEQUENCE_CORRID"
                         else "int32_false_true: [ 0, 1 ]")
                controls.append(f"    {{ name: {_q(name)} control [ {{ kind: {kind} {value} }} ] }}")
            lines += [",\n".join(controls), "  ]"]
        else:
            lines += [f"  direct {{ max_queue_delay_microseconds: {round(options.queue_delay_ms * 1000)} }}",
                      "  state ["]
            states = []
            for s_in, s_out in _state_pairs(manifest):
                dims = _dims(s_in, batched)
                if any(d < 0 for d in dims):
                    raise RnnEdgeError(f"state '{s_in.name}' {list(s_in.shape)} has a dynamic axis besides batch: "
                                       "Triton's zero initial state needs fixed dimensions; re-export with them fixed")
                d = ", ".join(map(str, dims))
                states.append(f"    {{ input_name: {_q(s_in.name)} output_name: {_q(s_out.name)} "
                              f"data_type: {_dtype(s_in)} dims: [ {d} ]\n"
                              f"      initial_state {{ name: \"zero\" data_type: {_dtype(s_in)} dims: [ {d} ] "
                              "zero_data: true } }")
            lines += [",\n".join(states), "  ]"]
        lines += ["}"]
    else:
        lines += ["dynamic_batching { }"] if batched else []
    kind = "KIND_GPU" if options.gpu else "KIND_CPU"
    lines += [f"instance_group [ {{ kind: {kind} count: {options.instances} }} ]"]
    if options.tensorrt:
        lines += ["optimization { execution_accelerators { gpu_execution_accelerator [ { name: \"tensorrt\"",
                  "  parameters { key: \"precision_mode\" value: \"FP32\" }",
                  "  parameters { key: \"max_workspace_size_bytes\" value: \"1073741824\" }",
                  "  parameters { key: \"trt_engine_cache_enable\" value: \"1\" } } ] } }"]
    lines += ["parameters { key: \"intra_op_thread_count\" value: { string_value: "
              f"\"{options.threads}\" }} }}"]
    if python:
        lines += [f"parameters {{ key: \"rnnedge_export\" value: {{ string_value: \"{EXPORT}\" }} }}"]
        for key, value in (("rnnedge_provider", options.provider), ("rnnedge_precision", options.precision)):
            if value:
                lines += [f"parameters {{ key: \"{key}\" value: {{ string_value: {_q(value)} }} }}"]
    return "\n".join(lines) + "\n"


def parse_config(text: str):
    """config.pbtxt text -> Triton's `ModelConfig` message; ValueError (text_format's ParseError) if invalid."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise RnnEdgeError(f"checking config.pbtxt against Triton's schema needs tritonclient ({e.name} is not "
                           "installed): pip install 'rnnedge[serve]'") from None
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _checked(text: str, manifest: Manifest, options: RepositoryOptions):
    """Parse with Triton's schema and check that it says what the manifest says; a failure is our bug."""
    config = parse_config(text)  # ParseError propagates: a config we wrote that Triton cannot read is a bug
    want = ([s.name for s in manifest.data_inputs], [s.name for s in manifest.data_outputs])
    got = ([i.name for i in config.input], [o.name for o in config.output])
    if got != want:
        raise RuntimeError(f"bug: config.pbtxt lists inputs/outputs {got}, the manifest {want}")
    if manifest.streaming and options.backend == "onnxruntime":
        pairs = [(s.input_name, s.output_name) for s in config.sequence_batching.state]
        if pairs != [(a.name, b.name) for a, b in _state_pairs(manifest)]:
            raise RuntimeError(f"bug: config.pbtxt pairs the states as {pairs}, not as the manifest does")
    return config


def tidy_repository(repo: Path) -> None:
    """Before serving REPO: a killed `rnnedge triton` left `.NAME.XXXXXXXX.tmp` (or `.old`) folders,
    which tritonserver refuses to start with ("directory name must equal model name"); put back or
    remove them as the next `rnnedge triton` would. A run still writing one: RnnEdgeError."""
    for leftover in sorted(repo.glob(".*.*.tmp")) + sorted(repo.glob(".*.*.old")):
        name = leftover.stem[1:].rpartition(".")[0]
        if leftover.is_dir() and name:
            recover_dir(repo / name, marker=CONFIG)


def write_repository(folder: str | os.PathLike, out: str | os.PathLike, *, name: str | None = None,
                     backend: str = "onnxruntime", max_batch: int = 32, instances: int = 1, gpu: bool = False,
                     tensorrt: bool = False, idle_seconds: float = 60.0, max_sequences: int = 1024,
                     threads: int = 1, queue_delay_ms: float = 0.0, force: bool = False, verify: bool = True,
                     provider: str = "", precision: str = "") -> Path:
    """Write REPO/<name> (default name: the export folder's name) for Triton; returns that folder.

    An existing REPO/<name> is replaced only with `force`, atomically (as an export folder is).
    `verify`: the files copied (model.onnx; every file of the export for the python backend) must
    match the manifest's sha256 first. See `RepositoryOptions` for the rest.
    """
    folder = Path(folder)
    manifest = Manifest.load(folder)
    options = RepositoryOptions(name=folder.resolve().name if name is None else name, backend=backend,
                                max_batch=max_batch, instances=instances, gpu=gpu, tensorrt=tensorrt,
                                idle_seconds=idle_seconds, max_sequences=max_sequences, threads=threads,
                                queue_delay_ms=queue_delay_ms, provider=provider or "", precision=precision or "")
    if provider:  # a name the runtime knows, and a precision it can pin there: refused now, not at serve time
        from rnnedge.runtime.providers import normalize_provider, precision_options

        precision_options(normalize_provider(provider), precision or None)
    model_file = folder / MODEL
    if not model_file.is_file():
        raise RnnEdgeError(f"{model_file} is missing: the export folder is incomplete; re-export the model")
    if verify:
        manifest.verify(folder, [MODEL] if backend == "onnxruntime" else sorted(manifest.files))
    text = model_config(manifest, options)
    _checked(text, manifest, options)
    out = Path(out)
    target = out / options.name
    if out.exists() and not out.is_dir():
        raise RnnEdgeError(f"--out {out} is a file: expected a folder for the model repository")
    recover_dir(target, marker=CONFIG)
    if target.exists() and not force:
        raise RnnEdgeError(f"{target} already exists: pass --force to replace it, or pick another --name")
    if target.exists() and not (target / CONFIG).is_file() and any(target.iterdir()):
        raise RnnEdgeError(f"{target} is not a model of a Triton repository (no {CONFIG}): --force replaces only "
                           "those; move it away yourself, or pick another --name")
    tmp = temp_dir(target)
    try:
        with atomic_path(tmp / CONFIG) as path:
            path.write_text(text)
        version = tmp / VERSION
        version.mkdir()
        if backend == "onnxruntime":
            shutil.copy2(model_file, version / "model.onnx")
        else:
            shutil.copytree(folder, version / EXPORT, ignore=shutil.ignore_patterns("trt_cache", "__pycache__", ".*"))
            shutil.copy2(MODEL_PY, version / "model.py")
        replace_dir(tmp, target, force=force)
    except OSError as e:
        discard_dir(tmp)
        raise disk_error(target, e) from None
    except BaseException:
        discard_dir(tmp)
        raise
    return target
