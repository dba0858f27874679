"""`manifest.json`: what an export folder holds, readable without TensorFlow.

Layout of an export folder::

    DIR/model.onnx      the fp32 model
    DIR/manifest.json   this file
    DIR/golden.npz      sample inputs and Keras' outputs (keys "case{i}/in/{name}", "case{i}/out/{name}")
    DIR/model.int8.onnx, DIR/model.fp16.onnx   quantized variants, when asked for

Shapes use ints for fixed dimensions and strings for dynamic axes ("batch", "time", ...).
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnedge.errors import RnnEdgeError
from rnnedge.files import digest, plain_name, write_text
from rnnedge.tables import DTYPES

MANIFEST = "manifest.json"
MODEL = "model.onnx"
GOLDEN = "golden.npz"
# 2: masks of any pattern are exact in the graph; format-1 exports handle right padding only.
FORMAT_VERSION = 2

Dim = int | str
BATCH, TIME = "batch", "time"  # names of dynamic axes; inputs with time axes of their own use "<input>_time"


def is_time_axis(axis) -> bool:
    """True for "time", and for "<input>_time" where inputs have time axes of their own."""
    return isinstance(axis, str) and (axis == TIME or axis.endswith("_" + TIME))


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output.

    role: "data" for the Keras model's own inputs/outputs, "state" for recurrent state
    inputs/outputs added for streaming (stateful models or `--streaming`).
    For a state output, `feeds` names the state input it must be fed back into on the next call.
    For an integer input feeding an Embedding, `vocab` is the embedding's input_dim (ids must
    be in [0, vocab)). `pad_value` is set when a mask is derived from this input (0 for
    Embedding(mask_zero=True), Masking's mask_value) or the input is a mask (0 / False marks a
    masked step); padded steps may be anywhere (front, back, gaps).
    """

    name: str
    shape: tuple[Dim, ...]
    dtype: str
    role: str = "data"
    feeds: str | None = None
    vocab: int | None = None
    pad_value: float | None = None
    layer: str | None = None

    def __post_init__(self):
        if self.role not in ("data", "state"):
            raise ValueError(f"role must be 'data' or 'state', got {self.role!r}")
        if not (isinstance(self.name, str) and isinstance(self.dtype, str) and isinstance(self.shape, (list, tuple))):
            raise ValueError(f"tensor {self.name!r}: name and dtype must be strings and shape a list")
        vocab = self.vocab
        if vocab is not None and (not isinstance(vocab, numbers.Integral) or isinstance(vocab, bool) or vocab < 1):
            raise ValueError(f"input {self.name!r}: vocab must be a positive integer, got {self.vocab!r}")
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclass
class Manifest:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int
    ir_version: int
    source: dict[str, Any] = field(default_factory=dict)  # {"name", "sha256", "kind"}
    versions: dict[str, str] = field(default_factory=dict)
    fused_nodes: dict[str, list[str]] = field(default_factory=dict)  # Keras layer -> ONNX nodes
    loop_layers: list[str] = field(default_factory=list)  # layers left as Loop (--allow-loop)
    layers: dict[str, str] = field(default_factory=dict)  # layer or op -> "fused" | "scan" | "native" | "tf2onnx"
    scan_nodes: dict[str, list[str]] = field(default_factory=dict)  # Keras layer -> ONNX Scan nodes
    notes: dict[str, str] = field(default_factory=dict)  # layer -> why it took its route ("scan": which activation)
    parity: dict[str, Any] = field(default_factory=dict)  # {"passed": bool, "cases": [...]}
    task: dict[str, Any] = field(default_factory=dict)  # zoo: {"metric", "keras", "onnx", "baseline"}
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # "fp32" -> {"file", ...}
    recommended: dict[str, str] = field(default_factory=dict)  # provider -> variant
    # variants made and measured but not kept: "int8" -> {"because", "candidates"} (none smaller than fp32)
    not_kept: dict[str, dict[str, Any]] = field(default_factory=dict)
    streaming: bool = False
    time_stride: int = 1  # a streaming export's chunks are multiples of this many steps
    min_steps: int = 0  # steps 'valid' windows (convolutions, pooling, cropping) consume: sequences must be longer
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # file -> {"sha256", "size"}; {} on old exports
    export_seconds: float | None = None
    static: dict[str, int] = field(default_factory=dict)  # axes fixed at export (`--static batch=B,time=T`)
    target: dict[str, Any] = field(default_factory=dict)  # `--target P`: checked there? placement, gate
    # execution providers `rnnedge check` ran it on: "<provider> <precision>" -> error, pass, placement, versions
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    @property
    def data_inputs(self) -> list[TensorSpec]:
        return [t for t in self.inputs if t.role == "data"]

    @property
    def data_outputs(self) -> list[TensorSpec]:
        return [t for t in self.outputs if t.role == "data"]

    @property
    def state_inputs(self) -> list[TensorSpec]:
        return [t for t in self.inputs if t.role == "state"]

    @property
    def state_outputs(self) -> list[TensorSpec]:
        return [t for t in self.outputs if t.role == "state"]

    @property
    def scan_layers(self) -> list[str]:
        """The recurrent layers exported as an exact Scan (an activation no fused node computes), in graph order."""
        return [name for name, route in self.layers.items() if route == "scan"]

    @property
    def tf2onnx_layers(self) -> list[str]:
        """The layers (and Keras ops) converted by tf2onnx and spliced in, in graph order."""
        return [name for name, route in self.layers.items() if route == "tf2onnx"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def interface_lines(self, op_types: dict[str, str] | None = None) -> list[str]:
        """The interface, aligned: each data input and output (name, dtype, shape with its batch and
        time axes named), each state pair of a streaming export (state in -> state out), and the
        fused nodes per Keras layer (`op_types`: node name -> ONNX op, where known)."""
        def shape(s: TensorSpec) -> str:
            return "[" + ", ".join(str(d) for d in s.shape) + "]"

        def note(s: TensorSpec) -> str:
            return "  " + ", ".join(filter(None, [f"ids < {s.vocab}" if s.vocab else "",
                                                 f"padding {s.pad_value:g}" if s.pad_value is not None else ""]))

        rows = [("input", s.name, s.dtype, shape(s), note(s)) for s in self.data_inputs]
        rows += [("output", s.name, s.dtype, shape(s), "") for s in self.data_outputs]
        rows += [("state", f"{s.feeds} -> {s.name}", s.dtype, shape(s), f"  ({s.layer})" if s.layer else "")
                 for s in self.state_outputs]
        rows += [("fused", layer, "/".join(sorted({(op_types or {}).get(n, "?") for n in nodes})), ", ".join(nodes), "")
                 for layer, nodes in self.fused_nodes.items()]
        width = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"  {r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]:<{width[2]}}  {r[3]:<{width[3]}}{r[4]}".rstrip()
                 for r in rows]
        return lines

    def file_names(self) -> list[str]:
        """The files the folder holds besides the manifest: the model, golden data, each variant's."""
        names = [MODEL, GOLDEN]
        for entry in self.variants.values():
            for key in ("file", "required_operators"):
                if isinstance(entry.get(key), str) and entry[key] not in names:
                    names.append(entry[key])
        return names

    def save(self, folder: Path, keep=()) -> Path:
        """Write manifest.json atomically, last: it records the sha256 and size of every file it names
        that is present (so it must be saved after they are written), except those in `keep`, whose
        recorded ones stay (files read unverified, `--no-verify`: a change is not recorded as exported)."""
        folder = Path(folder)
        old = self.files
        self.files = {n: old[n] if n in keep and n in old else digest(folder / n) for n in self.file_names()
                      if (folder / n).is_file()}
        return write_text(folder / MANIFEST, json.dumps(self.to_dict(), indent=2, default=_jsonable) + "\n")

    def verify(self, folder: str | Path, names) -> None:
        """Refuse, in one line, a file whose size or sha256 differs from what the manifest recorded.
        A manifest without `files` (written before rnnedge recorded them) is not verified."""
        folder = Path(folder)
        for name in names:
            want = self.files.get(name)
            if want is None:
                if self.files:
                    raise RnnEdgeError(f"{folder / name}: manifest.json records no checksum for it; the folder was "
                                       "changed after export: re-export the model (or pass --no-verify)")
                continue
            path = folder / name
            if not path.is_file():
                raise RnnEdgeError(f"{path} is missing: the export folder is incomplete; re-export the model")
            got = digest(path)
            if got != {"sha256": want.get("sha256"), "size": want.get("size")}:
                what = "size" if got["size"] != want.get("size") else "sha256"
                raise RnnEdgeError(f"{path} does not match manifest.json ({what} differs: the file was changed or "
                                   "swapped after export); re-export the model, or pass --no-verify to run it anyway")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        d = dict(d)
        for key in ("variants", "files", "parity", "recommended", "source", "task", "not_kept", "scan_nodes", "notes",
                    "static", "target", "providers"):
            if not isinstance(d.get(key, {}), dict):
                raise ValueError(f"'{key}' must be an object, got {type(d[key]).__name__}")
        for key, entry in d.get("variants", {}).items():
            if not isinstance(entry, dict):
                raise ValueError(f"variant {key!r} must be an object, got {type(entry).__name__}")
            if "file" in entry:
                plain_name(entry["file"], f"variant {key!r}")
        for key, entry in d.get("files", {}).items():
            plain_name(key, "files")
            if not isinstance(entry, dict):
                raise ValueError(f"files[{key!r}] must be an object, got {type(entry).__name__}")
        if not isinstance(d.get("inputs"), list) or not isinstance(d.get("outputs"), list):
            raise ValueError("'inputs' and 'outputs' must be lists")
        _check_json_types(d)
        d["inputs"] = [TensorSpec(**t) for t in d["inputs"]]
        d["outputs"] = [TensorSpec(**t) for t in d["outputs"]]
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        folder = Path(folder)
        path = folder / MANIFEST
        if not folder.exists():
            raise RnnEdgeError(f"{folder} does not exist: expected a folder written by `rnnedge export`")
        if not folder.is_dir() and folder.suffix.lower() in (".keras", ".h5"):
            raise RnnEdgeError(f"{folder} is a Keras model, not an export folder: export it first "
                               f"(rnnedge export {folder} --out DIR), then pass DIR")
        if not folder.is_dir() and folder.suffix.lower() in (".onnx", ".ort"):
            raise RnnEdgeError(f"{folder} is a model file, not an export folder: pass the folder written by "
                               f"`rnnedge export` that holds it and its {MANIFEST}")
        if not folder.is_dir():
            raise RnnEdgeError(
                f"{folder} is not an export folder: expected a directory written by `rnnedge export`"
            )
        if not path.is_file():
            raise RnnEdgeError(
                f"{folder} has no {MANIFEST}: expected a folder written by `rnnedge export`"
            )
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except RnnEdgeError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise RnnEdgeError(f"{path} is not a valid rnnedge manifest ({e}); re-export the model") from None


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)  # JSON true is an int to Python


def _check_json_types(d: dict[str, Any]) -> None:
    """The JSON types the runtime relies on, checked where the file is read: a hand-edited
    "format": "2" or a shape entry 1.0 would otherwise fail deep in the runtime (a TypeError)
    or be accepted and silently wrong."""
    if "format" in d and not (_is_int(d["format"]) and d["format"] >= 1):
        raise ValueError(f"'format' must be a positive integer, got {d['format']!r}")
    if "streaming" in d and not isinstance(d["streaming"], bool):
        raise ValueError(f"'streaming' must be true or false, got {d['streaming']!r}")
    if "time_stride" in d and not (_is_int(d["time_stride"]) and d["time_stride"] >= 1):
        raise ValueError(f"'time_stride' must be a positive integer, got {d['time_stride']!r}")
    if "min_steps" in d and not (_is_int(d["min_steps"]) and d["min_steps"] >= 0):
        raise ValueError(f"'min_steps' must be a whole number >= 0, got {d['min_steps']!r}")
    for side in ("inputs", "outputs"):
        for t in d[side]:
            if not isinstance(t, dict):
                raise ValueError(f"each of '{side}' must be an object, got {type(t).__name__}")
            _check_tensor_types(t)


def _check_tensor_types(t: dict[str, Any]) -> None:
    name = t.get("name")
    if t.get("dtype") not in DTYPES:
        raise ValueError(f"tensor {name!r}: dtype {t.get('dtype')!r} is not one of {', '.join(DTYPES)}")
    shape = t.get("shape")
    if isinstance(shape, list):
        bad = [x for x in shape if not (_is_int(x) and x >= 0 or isinstance(x, str) and x)]
        if bad:
            raise ValueError(f"tensor {name!r}: shape entries must be sizes (integers) or axis names, got {bad[0]!r}")
    pad = t.get("pad_value")
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, (int, float))):
        raise ValueError(f"tensor {name!r}: pad_value must be a number or null, got {pad!r}")


def _jsonable(x):
    """numpy scalars and paths in results: plain JSON values."""
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
