"""Run an export folder with onnxruntime alone: no TensorFlow, no Keras, no tf2onnx.

    import rnnedge
    model = rnnedge.load("exported/events-gru")     # provider="auto": TensorRT, CUDA, then CPU
    out = model.run(x)                              # Outputs: name -> array, out[0] works too
    stream = model.stream(batch=1)                  # recurrent state carried between calls
    for chunk in chunks:                            # [batch, steps, features], any steps >= 1
        probs = stream.push(chunk)[0]
    stream.reset()                                  # every row; stream.reset(i) for row i only

Inputs are checked before onnxruntime sees them, in the order names -> shapes -> values; every
failure of a phase is collected and raised as one one-line `RnnEdgeError` naming the input, what
was expected and what came. float64 is cast to float32 and int64/int32 to the declared integer
type (when the values fit); anything else of the wrong kind is refused rather than guessed.

Streaming keeps the state on the session's device in two sets of `OrtValue`s bound with IOBinding:
a call reads set A and writes set B, the next reads B and writes A, so nothing is allocated or
copied for the state between steps and a failed call leaves the current state untouched.
"""

from __future__ import annotations

import csv
import difflib
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import BATCH as _BATCH
from rnnedge.manifest import MODEL, Manifest, TensorSpec, is_time_axis
from rnnedge.manifest import TIME as _TIME

__all__ = [
    "Model",
    "Outputs",
    "Stream",
    "TRT_SHAPES",
    "available_providers",
    "load",
    "read_inputs",
    "run_file",
    "write_outputs",
]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
AUTO_ORDER = (TENSORRT, CUDA, CPU)

# Short names accepted for `provider` (case-insensitive); full names are accepted as well.
PROVIDER_NAMES = {
    "cpu": CPU,
    "cuda": CUDA,
    "gpu": CUDA,
    "tensorrt": TENSORRT,
    "trt": TENSORRT,
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "dml": "DmlExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
}
_INSTALL_HINTS = {
    CUDA: "pip install rnnedge[gpu] (onnxruntime-gpu in place of onnxruntime) on a machine with CUDA 12 and cuDNN 9",
    TENSORRT: "pip install rnnedge[gpu] (onnxruntime-gpu in place of onnxruntime) plus TensorRT 10 on the library path",
    "OpenVINOExecutionProvider": "pip install onnxruntime-openvino in place of onnxruntime",
    "DmlExecutionProvider": "pip install onnxruntime-directml in place of onnxruntime (Windows)",
    "QNNExecutionProvider": "pip install onnxruntime-qnn in place of onnxruntime",
}
_GPU_PROVIDERS = (CUDA, TENSORRT)

# TensorRT builds its engine for a range of shapes: (min, opt, max) for each named dynamic axis.
TRT_SHAPES: dict[str, tuple[int, int, int]] = {"batch": (1, 1, 32), "time": (1, 100, 1000)}

_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64,
                 "int32": np.int32, "int64": np.int64, "bool": np.bool_}
ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}
_INT_RANGES = {np.dtype(np.int32): (-(2**31), 2**31 - 1), np.dtype(np.int64): (-(2**63), 2**63 - 1)}


_STREAM = "<stream>"  # marks an axis size fixed by the stream, not by another input


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build offers, in its order of preference."""
    return list(ort.get_available_providers())


# --------------------------------------------------------------------------------------------
# Results


class Outputs(dict):
    """Output name -> numpy array, in graph order; `out[0]` (an int) is positional access.

    `provider` is the execution provider that computed them; `data` lists the data outputs
    (the Keras model's own outputs) without the recurrent state outputs.
    """

    def __init__(self, items=(), provider: str | None = None, data_names: Sequence[str] | None = None):
        super().__init__(items)
        self.provider = provider
        self._data_names = list(self) if data_names is None else [n for n in data_names if n in self]

    @classmethod
    def _of(cls, names: list[str], values: list, provider: str | None) -> Outputs:
        """Hot-path constructor: every name is a data output."""
        out = dict.__new__(cls)
        dict.update(out, zip(names, values))
        out.provider = provider
        out._data_names = names
        return out

    def __getitem__(self, key):
        if isinstance(key, int) and not isinstance(key, bool):
            values = list(self.values())
            try:
                return values[key]
            except IndexError:
                raise IndexError(f"output index {key} out of range: there are {len(values)} outputs") from None
        return super().__getitem__(key)

    @property
    def data(self) -> list[np.ndarray]:
        """The data outputs in graph order (state outputs left out)."""
        return [dict.__getitem__(self, n) for n in self._data_names]

    @property
    def data_names(self) -> list[str]:
        return list(self._data_names)  # a copy: `_of` shares the stream's list

    def __repr__(self) -> str:
        body = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self.items())
        return f"Outputs({body}; provider={self.provider})"


# --------------------------------------------------------------------------------------------
# Input checks


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _nth(i: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(i, f"{i}th")


class _Slot:
    """One graph input and what is needed to check an array for it quickly."""

    __slots__ = ("spec", "name", "rank", "fixed", "named", "dtype", "is_int", "is_bool", "time_axis", "right_padded")

    def __init__(self, spec: TensorSpec, ort_type: str | None, right_padded: bool = False):
        self.spec = spec
        self.name = spec.name
        self.rank = len(spec.shape)
        self.fixed = tuple((i, d) for i, d in enumerate(spec.shape) if not isinstance(d, str))
        self.named = tuple((i, d) for i, d in enumerate(spec.shape) if isinstance(d, str))
        declared = _NUMPY_DTYPES.get(spec.dtype)
        actual = ORT_DTYPES.get(ort_type) if ort_type else None
        # The graph's own type wins (an fp16 variant may take float16); the manifest says the kind.
        self.dtype = np.dtype(actual or declared or np.float32)
        self.is_int = self.dtype.kind in "iu"
        self.is_bool = self.dtype.kind == "b"
        # format-1 exports turned masks into sequence_lens: only right-padded rows are exact there
        self.right_padded = right_padded and spec.pad_value is not None and self.rank >= 2
        self.time_axis = next((i for i, d in self.named if is_time_axis(d)), None)

    def describe(self) -> str:
        return f"{_fmt_shape(self.spec.shape)} {self.dtype}"


def _as_array(name: str, value, errors: list[str]) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if value is None:
        errors.append(f"input '{name}' is None: pass an array")
        return None
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as e:  # ragged nested lists
        errors.append(f"input '{name}': could not make an array of it ({str(e).splitlines()[0]}); "
                      "give a rectangular array (pad sequences to one length)")
        return None


def _check_kind(slot: _Slot, a: np.ndarray, errors: list[str]) -> bool:
    kind = a.dtype.kind
    if slot.is_bool:
        if kind == "b":
            return True
        errors.append(f"input '{slot.name}': expected a bool mask {slot.describe()} (True at real steps), got "
                      f"{a.dtype}; pass (mask != 0) or mask.astype(bool)")
        return False
    if kind in "fiu" and not (slot.is_int and kind == "f"):
        return True
    if slot.is_int and kind == "f":
        errors.append(f"input '{slot.name}': expected integer ids ({slot.dtype}), got {a.dtype}; "
                      f"cast with .astype('{slot.dtype}') if the values are whole numbers")
    elif kind == "O":
        errors.append(f"input '{slot.name}': expected {slot.dtype}, got an object array "
                      "(ragged lists or mixed types?); give a rectangular numeric array")
    else:
        errors.append(f"input '{slot.name}': expected {slot.dtype}, got {a.dtype}; "
                      f"convert with .astype('{slot.dtype}') if that is what you mean")
    return False


def _check_shape(slot: _Slot, a: np.ndarray, axes: dict[str, tuple[int, str]], errors: list[str]) -> None:
    """Rank, fixed dimensions, and named axes that must agree across inputs (`axes` collects them)."""
    shape = a.shape
    if len(shape) != slot.rank:
        errors.append(f"input '{slot.name}': expected {slot.rank} dimensions {_fmt_shape(slot.spec.shape)}, "
                      f"got {len(shape)} (shape {_fmt_shape(shape)})")
        return
    for i, d in slot.fixed:
        if shape[i] != d:
            errors.append(f"input '{slot.name}': dimension {i} must be {d} ({_fmt_shape(slot.spec.shape)}), "
                          f"got {shape[i]} (shape {_fmt_shape(shape)})")
    for i, axis in slot.named:
        n = shape[i]
        if n == 0 and (axis == _BATCH or is_time_axis(axis)):
            what = "row" if axis == _BATCH else "step"
            errors.append(f"input '{slot.name}': the '{axis}' axis (dimension {i}) is empty: give at least one {what}")
            continue
        seen = axes.get(axis)
        if seen is None:
            axes[axis] = (n, slot.name)
        elif seen[0] != n:
            if seen[1] == _STREAM:
                errors.append(f"input '{slot.name}': batch is {n} (shape {_fmt_shape(shape)}) but this stream was "
                              f"opened with batch={seen[0]}; push one row per stream, or open model.stream(batch={n})")
            else:
                errors.append(f"input '{slot.name}': '{axis}' is {n} but input '{seen[1]}' has '{axis}' {seen[0]}; "
                              f"the '{axis}' axis must agree across inputs")


def _first_index(mask: np.ndarray) -> str:
    return _fmt_shape(int(i) for i in np.argwhere(mask)[0])


def _check_values(slot: _Slot, a: np.ndarray, allow_nonfinite: bool, errors: list[str]) -> np.ndarray | None:
    """Cast to what the graph takes and check ids and finiteness. Padded (masked) steps may be
    anywhere: the graph reproduces Keras' masking for any pattern."""
    spec = slot.spec
    if slot.is_bool:
        return a
    if slot.is_int:
        if spec.vocab is not None and a.size:
            # one reduction: seen as unsigned, negative ids are huge and fail the same test
            unsigned = a.view(f"u{a.dtype.itemsize}") if a.dtype.kind == "i" else a
            if unsigned.max() >= spec.vocab:
                bad = (a < 0) | (a >= spec.vocab)
                errors.append(f"input '{slot.name}': token ids must be in [0, {spec.vocab}) (vocabulary size "
                              f"{spec.vocab}), got {a[tuple(np.argwhere(bad)[0])]} at {_first_index(bad)} "
                              f"({int(bad.sum())} out of range)")
                return None
        if a.dtype != slot.dtype:
            lo_ok, hi_ok = _INT_RANGES.get(slot.dtype, (None, None))
            if lo_ok is not None and a.size and (a.min() < lo_ok or a.max() > hi_ok):
                errors.append(f"input '{slot.name}': values do not fit {slot.dtype} "
                              f"(got {a.min()} .. {a.max()})")
                return None
            a = a.astype(slot.dtype)
    else:
        if a.dtype != slot.dtype:
            with np.errstate(over="ignore"):
                a = a.astype(slot.dtype)
        if not allow_nonfinite and not np.isfinite(a).all():
            bad = ~np.isfinite(a)
            first = a[tuple(np.argwhere(bad)[0])]
            errors.append(f"input '{slot.name}': contains {first} at {_first_index(bad)} ({int(bad.sum())} "
                          "non-finite values, float32 overflow included); clean the data or pass allow_nonfinite=True")
            return None
    if slot.right_padded and a.shape[1] > 1:
        is_pad = a == spec.pad_value
        if a.ndim > 2:
            is_pad = is_pad.all(axis=tuple(range(2, a.ndim)))  # a step is padding when all its features are
        late = ~is_pad[:, 1:] & is_pad[:, :-1]  # a real step right after a padding step
        if late.any():
            row, step = (int(i) for i in np.argwhere(late)[0])
            errors.append(f"input '{slot.name}': row {row} has padding ({spec.pad_value:g}) before a real step at "
                          f"{step + 1}; this export (manifest format 1) is exact for right-padded rows only: "
                          "re-export it with this rnnedge, whose exports handle padding anywhere")
            return None
    return a


def _raise(errors: list[str]) -> None:
    if len(errors) == 1:
        raise RnnEdgeError(errors[0])
    raise RnnEdgeError(f"{len(errors)} input problems: " + "; ".join(errors))


# --------------------------------------------------------------------------------------------
# Providers and sessions


def _normalize_provider(name: str) -> str:
    if not isinstance(name, str):
        raise RnnEdgeError(f"provider must be a name such as 'cpu', 'cuda' or 'tensorrt', got {name!r}")
    key = name.strip().lower()
    if key in PROVIDER_NAMES:
        return PROVIDER_NAMES[key]
    known = set(PROVIDER_NAMES.values()) | set(ort.get_all_providers())
    for full in known:
        if full.lower() == key or full.lower() == key + "executionprovider":
            return full
    choices = ", ".join(["auto", *PROVIDER_NAMES])
    raise RnnEdgeError(f"unknown provider {name!r}: use one of {choices}, or a full onnxruntime name "
                       f"such as {CUDA}")


def _not_available(provider: str, asked: str, available: list[str]) -> str:
    hint = _INSTALL_HINTS.get(provider, "install an onnxruntime build that includes it")
    return (f"provider {asked!r} ({provider}) is not available in onnxruntime {ort.__version__} "
            f"(available: {', '.join(available)}); to use it: {hint}; or pass fallback=True to run on CPU")


def _resolve_providers(provider, fallback: bool) -> list[str]:
    available = available_providers()
    if isinstance(provider, str) and provider.strip().lower() == "auto":
        return [p for p in AUTO_ORDER if p in available] or [CPU]
    asked = [provider] if isinstance(provider, str) else list(provider or [])
    if not asked:
        raise RnnEdgeError("provider list is empty: give 'auto', 'cpu', 'cuda', 'tensorrt' or a list of them")
    chosen: list[str] = []
    for name in asked:
        full = _normalize_provider(name)
        if full not in available:
            message = _not_available(full, name, available)
            if not fallback:
                raise RnnEdgeError(message)
            warnings.warn(message.split("; or pass")[0] + f"; falling back to {CPU}", RuntimeWarning, stacklevel=3)
            continue
        if full not in chosen:
            chosen.append(full)
    # TensorRT hands the nodes it cannot take to CUDA when CUDA is there, then to CPU.
    if TENSORRT in chosen and CUDA in available and CUDA not in chosen:
        chosen.insert(chosen.index(TENSORRT) + 1, CUDA)
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def _trt_profiles(inputs: list[TensorSpec], shapes: Mapping[str, tuple[int, int, int]]) -> dict[str, str]:
    """trt_profile_min_shapes / opt / max from the manifest's dynamic axes."""
    parts: list[list[str]] = [[], [], []]
    for spec in inputs:
        if not spec.dynamic_axes:
            continue
        dims: list[tuple[int, int, int]] = []
        for d in spec.shape:
            if isinstance(d, str):
                if d not in shapes and is_time_axis(d) and _TIME in shapes:
                    d = _TIME
                if d not in shapes:
                    raise RnnEdgeError(f"input '{spec.name}' has dynamic axis '{d}' with no TensorRT shape range: "
                                       f"pass trt_shapes={{'{d}': (min, opt, max)}} to load()")
                dims.append(tuple(int(v) for v in shapes[d]))
            else:
                dims.append((d, d, d))
        for k in range(3):
            parts[k].append(f"{spec.name}:" + "x".join(str(t[k]) for t in dims))
    if not parts[0]:
        return {}
    keys = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
    return {key: ",".join(p) for key, p in zip(keys, parts)}


def _provider_options(chosen: list[str], options: Mapping | None, folder: Path, manifest: Manifest,
                      trt_shapes: Mapping[str, tuple[int, int, int]]) -> list[dict[str, Any]]:
    """One options dict per provider in `chosen`.

    `options` is either keyed by provider (short or full names) or a flat dict for the first
    provider; a flat `device_id` also goes to the CUDA provider behind TensorRT.
    """
    per: dict[str, dict[str, Any]] = {p: {} for p in chosen}
    options = dict(options or {})
    by_provider = bool(options) and all(
        isinstance(v, Mapping) and (k.lower() in PROVIDER_NAMES or k in per or k.endswith("ExecutionProvider"))
        for k, v in options.items()
    )
    if by_provider:
        for k, v in options.items():
            full = _normalize_provider(k)
            if full in per:
                per[full].update(v)
    elif options:
        per[chosen[0]].update(options)
        if "device_id" in options:
            for p in _GPU_PROVIDERS:
                if p in per:
                    per[p].setdefault("device_id", options["device_id"])
    if TENSORRT in per:
        trt = per[TENSORRT]
        for k, v in _trt_profiles(manifest.inputs, trt_shapes).items():
            trt.setdefault(k, v)
        if os.access(folder, os.W_OK):  # engines take tens of seconds to build: keep them
            trt.setdefault("trt_engine_cache_enable", "True")
            trt.setdefault("trt_engine_cache_path", str(folder / "trt_cache"))
    return [{k: str(v) for k, v in per[p].items()} for p in chosen]


def _model_file(folder: Path, manifest: Manifest, variant: str) -> Path:
    if variant in manifest.variants:
        entry = manifest.variants[variant]
        name = entry.get("file") if isinstance(entry, Mapping) else None
        if not name:
            raise RnnEdgeError(f"manifest.json variant {variant!r} names no file; re-export the model")
    elif variant == "fp32":
        name = MODEL
    else:
        have = ", ".join(sorted({"fp32", *manifest.variants}))
        raise RnnEdgeError(f"{folder} has no {variant!r} variant (it has: {have}); "
                           f"make it with `rnnedge quantize {folder}` or pick one of those")
    path = folder / name
    if not path.is_file():
        raise RnnEdgeError(f"{path} is missing: the export folder is incomplete; re-export the model")
    return path


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Options for every session rnnedge makes: all graph optimisations, errors-only logging,
    `threads` intra-op threads (onnxruntime's default when None); sequential execution."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: no "nodes placed on CPU" chatter
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise RnnEdgeError(f"threads must be a whole number >= 1, got {threads!r}")
        so.intra_op_num_threads = threads
    return so


def _make_session(path: Path, so, chosen, options, fallback: bool, auto: bool = False) -> ort.InferenceSession:
    """The session; a GPU provider that does not start raises, or warns with `fallback`/`auto`.

    With "auto", TensorRT listed by onnxruntime-gpu but not installed is no news when CUDA runs.
    """
    gpu = [p for p in chosen if p != CPU]
    if any(p in _GPU_PROVIDERS for p in gpu) and hasattr(ort, "preload_dlls"):
        try:  # CUDA/cuDNN from pip wheels (onnxruntime-gpu[cuda,cudnn]); harmless otherwise
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - a failed preload shows up below as a provider that did not start
            pass
    try:
        session = ort.InferenceSession(str(path), so, providers=chosen, provider_options=options)
    except Exception as e:  # onnxruntime's own exception types are not importable across versions
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if gpu and (fallback or auto):
            warnings.warn(f"{gpu[0]} could not start ({first}); falling back to {CPU}", RuntimeWarning, stacklevel=3)
            return _make_session(path, so, [CPU], [{}], False)
        if gpu:
            raise RnnEdgeError(f"{gpu[0]} could not start for {path} ({first}); check the CUDA/cuDNN/TensorRT "
                               "libraries, or pass fallback=True to run on CPU") from None
        raise RnnEdgeError(f"onnxruntime {ort.__version__} could not load {path} ({first}); "
                           "upgrade onnxruntime or re-export the model") from None
    started = session.get_providers()
    if gpu and gpu[0] not in started and not (auto and started[0] in _GPU_PROVIDERS):
        message = (f"{gpu[0]} is installed but did not start (running on {started[0]}); "
                   "check the CUDA/cuDNN/TensorRT libraries (`nvidia-smi`, LD_LIBRARY_PATH)")
        if not (fallback or auto):
            raise RnnEdgeError(message + ", or pass fallback=True to accept that")
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return session


def load(
    folder: str | os.PathLike,
    provider: str | Sequence[str] = "auto",
    *,
    variant: str = "fp32",
    threads: int | None = None,
    provider_options: Mapping[str, Any] | None = None,
    fallback: bool = False,
    trt_shapes: Mapping[str, tuple[int, int, int]] | None = None,
) -> Model:
    """Open an export folder for inference (numpy + onnxruntime only).

    provider: "auto" (TensorRT, then CUDA, then CPU, among those installed), a name ("cpu",
        "cuda", "tensorrt", case-insensitive, or onnxruntime's full name), or a list of them in
        order of preference. A provider that is not installed, or does not start, raises
        RnnEdgeError unless `fallback=True`, which warns and runs on CPU.
    variant: "fp32" (model.onnx) or a key of the manifest's `variants` ("int8", "fp16").
    threads: intra-op threads on CPU (None: onnxruntime's default, all cores; 1 is fastest
        for batch-1 recurrent models).
    provider_options: a flat dict for the first provider (e.g. {"device_id": 1}), or a dict of
        provider name -> options.
    trt_shapes: TensorRT shape ranges per named dynamic axis, (min, opt, max); merged over
        `TRT_SHAPES` = {"batch": (1, 1, 32), "time": (1, 100, 1000)}.
    """
    folder = Path(folder)
    manifest = Manifest.load(folder)
    path = _model_file(folder, manifest, variant)
    so = session_options(threads)
    chosen = _resolve_providers(provider, fallback)
    shapes = {**TRT_SHAPES, **dict(trt_shapes or {})}
    options = _provider_options(chosen, provider_options, folder, manifest, shapes)
    auto = isinstance(provider, str) and provider.strip().lower() == "auto"
    session = _make_session(path, so, chosen, options, fallback, auto)
    return Model(folder, manifest, session, variant=variant, path=path)


# --------------------------------------------------------------------------------------------
# Model


class Model:
    """A loaded export folder: `run` whole sequences, `stream` them chunk by chunk.

    inputs / outputs: the manifest's TensorSpecs (data first, then state) in graph order.
    provider: the execution provider that actually runs (first of the session's providers).
    session: the onnxruntime InferenceSession, for anything this class does not cover.
    """

    def __init__(self, folder: Path, manifest: Manifest, session: ort.InferenceSession, *, variant: str = "fp32",
                 path: Path | None = None):
        self.folder = Path(folder)
        self.path = Path(path) if path is not None else self.folder / MODEL
        self.manifest = manifest
        self.session = session
        self.variant = variant
        self.inputs: list[TensorSpec] = list(manifest.inputs)
        self.outputs: list[TensorSpec] = list(manifest.outputs)
        self.provider: str = session.get_providers()[0]
        graph_in = session.get_inputs()
        graph_out = session.get_outputs()
        names_in = [t.name for t in self.inputs]
        names_out = [t.name for t in self.outputs]
        if [i.name for i in graph_in] != names_in or [o.name for o in graph_out] != names_out:
            raise RnnEdgeError(
                f"{self.folder}: manifest.json lists inputs {names_in} and outputs {names_out} but the model "
                f"file has {[i.name for i in graph_in]} and {[o.name for o in graph_out]}; re-export the model")
        ort_types = {i.name: i.type for i in graph_in}
        legacy = manifest.format < 2
        self._slots = {t.name: _Slot(t, ort_types.get(t.name), legacy) for t in self.inputs}
        self._data_slots = [self._slots[t.name] for t in manifest.data_inputs]
        self._state_slots = [self._slots[t.name] for t in manifest.state_inputs]
        self._output_names = names_out
        self._data_output_names = [t.name for t in manifest.data_outputs]

    @property
    def name(self) -> str:
        return str(self.manifest.source.get("name") or self.folder.name)

    def __repr__(self) -> str:
        ins = ", ".join(f"{t.name}{_fmt_shape(t.shape)}" for t in self.inputs)
        return f"<rnnedge.Model {self.name!r} ({self.variant}) on {self.provider}: {ins}>"

    # -- argument handling -------------------------------------------------------------------

    def _gather(self, arrays: tuple, named: dict, *, allow_state: bool) -> dict[str, Any]:
        """Positional arrays -> data inputs in order, plus named ones; name errors raised together."""
        if len(arrays) == 1 and not named and isinstance(arrays[0], Mapping):
            arrays, named = (), dict(arrays[0])
        errors: list[str] = []
        given: dict[str, Any] = {}
        data = self._data_slots
        if len(arrays) > len(data):
            errors.append(f"got {len(arrays)} positional arrays but the model takes {len(data)} data input(s) "
                          f"({', '.join(s.name for s in data)})")
        for slot, value in zip(data, arrays):
            given[slot.name] = value
        for name, value in named.items():
            slot = self._slots.get(name)
            if slot is None:
                close = difflib.get_close_matches(name, list(self._slots), n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                errors.append(f"unknown input '{name}': {hint}this model takes {self._describe_inputs()}")
            elif slot.spec.role == "state" and not allow_state:
                errors.append(f"input '{name}' is recurrent state kept by the stream: do not pass it to push(); "
                              "use stream.reset() or stream.load_state()")
            elif name in given:
                errors.append(f"input '{name}' given both positionally and by name")
            else:
                given[name] = value
        for i, slot in enumerate(data, 1):
            if slot.name not in given:
                errors.append(f"missing input '{slot.name}' {slot.describe()}: pass it as the {_nth(i)} array "
                              f"or by name ({slot.name}=...)")
        if errors:
            _raise(errors)
        return given

    def _describe_inputs(self) -> str:
        data = ", ".join(s.name for s in self._data_slots)
        state = ", ".join(s.name for s in self._state_slots)
        return f"{data} (data)" + (f" and {state} (state, optional)" if state else "")

    def _prepare(self, given: dict[str, Any], allow_nonfinite: bool, axes: dict[str, tuple[int, str]]
                 ) -> dict[str, np.ndarray]:
        """Shapes then values; returns arrays ready for onnxruntime. `axes` may hold pre-bound axes."""
        errors: list[str] = []
        arrays: dict[str, np.ndarray] = {}
        for name, value in given.items():
            slot = self._slots[name]
            a = value if type(value) is np.ndarray else _as_array(name, value, errors)
            if a is None or (a.dtype != slot.dtype and not _check_kind(slot, a, errors)):
                continue
            _check_shape(slot, a, axes, errors)
            arrays[name] = a
        if errors:
            _raise(errors)
        feeds: dict[str, np.ndarray] = {}
        for name, a in arrays.items():
            checked = _check_values(self._slots[name], a, allow_nonfinite, errors)
            if checked is not None:
                feeds[name] = checked
        if errors:
            _raise(errors)
        return feeds

    def _state_shape(self, slot: _Slot, axes: Mapping[str, tuple[int, str]]) -> tuple[int, ...]:
        shape = []
        for d in slot.spec.shape:
            if isinstance(d, str):
                if d not in axes:
                    raise RnnEdgeError(f"state input '{slot.name}' {_fmt_shape(slot.spec.shape)} has axis '{d}' "
                                       f"that no data input sets: pass {slot.name}=... explicitly")
                d = axes[d][0]
            shape.append(d)
        return tuple(shape)

    # -- running ------------------------------------------------------------------------------

    def run(self, *arrays, allow_nonfinite: bool = False, **named) -> Outputs:
        """Run whole sequences: positional arrays are the data inputs in order, or pass them by name.

        State inputs (streaming exports) may be passed by name; those left out start at zero.
        A single dict positional argument is taken as name -> array. Returns every output,
        state outputs included, as `Outputs` in graph order.
        """
        given = self._gather(arrays, named, allow_state=True)
        axes: dict[str, tuple[int, str]] = {}
        feeds = self._prepare(given, allow_nonfinite, axes)
        for slot in self._state_slots:
            if slot.name not in feeds:
                feeds[slot.name] = np.zeros(self._state_shape(slot, axes), slot.dtype)
        for name, a in feeds.items():
            if not a.flags.c_contiguous:
                feeds[name] = np.ascontiguousarray(a)
        values = self.session.run(self._output_names, feeds)
        return Outputs(zip(self._output_names, values), self.provider, self._data_output_names)

    __call__ = run

    def stream(self, batch: int = 1, *, allow_nonfinite: bool = False) -> Stream:
        """A stream of `batch` independent sequences whose state is carried between `push` calls."""
        return Stream(self, batch, allow_nonfinite=allow_nonfinite)

    def _not_streamable(self) -> str:
        """Why this model has no state to carry, as one line."""
        reason = self._recurrent_directions()
        if reason:
            return (f"model '{self.name}' cannot stream: {reason}, which needs the whole sequence at once; "
                    "only forward-direction recurrent layers can stream, use model.run on whole sequences")
        return (f"model '{self.name}' has no state inputs: re-export it with `rnnedge export --streaming` "
                "to stream it, or use model.run on whole sequences")

    def _recurrent_directions(self) -> str | None:
        """A bidirectional or reversed recurrent layer, from the manifest or else the graph."""
        layers = [k for k in self.manifest.fused_nodes if "bidirectional" in k.lower()]
        if layers:
            return f"its layer {layers[0]!r} is bidirectional"
        try:
            import onnx  # only on this error path: onnx is slow to import
        except ImportError:
            return None
        try:
            graph = onnx.load(str(self.path), load_external_data=False).graph
        except Exception:  # noqa: BLE001 - the explanation is a nicety
            return None
        for node in graph.node:
            if node.op_type in ("LSTM", "GRU", "RNN"):
                for attr in node.attribute:
                    if attr.name == "direction" and attr.s in (b"bidirectional", b"reverse"):
                        label = f" {node.name!r}" if node.name else ""
                        return f"its {node.op_type} node{label} runs {attr.s.decode()}"
        return None


# --------------------------------------------------------------------------------------------
# Streaming


class Stream:
    """`batch` sequences fed chunk by chunk; the recurrent state stays on the device between calls.

    push(chunk): a chunk is [batch, steps, ...] with any steps >= 1. A chunk without the time
    axis ([batch, features], or [batch] for token ids) is one step, and then the outputs that
    have a time axis come back without it too. Returns the data outputs only.

    Design: two sets of state OrtValues (A, B) on the session's device and two IOBindings, one
    reading A and writing B, the other the reverse; each push binds the data inputs, runs, and
    flips. The state is never copied or reallocated between steps, and a call that fails leaves
    the current state as it was. The data inputs are copied into buffers bound once per chunk
    shape. One stream serves one thread at a time.
    """

    def __init__(self, model: Model, batch: int = 1, *, allow_nonfinite: bool = False):
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise RnnEdgeError(f"batch must be a whole number >= 1, got {batch!r}")
        if not model._state_slots:
            raise RnnEdgeError(model._not_streamable())
        self.model = model
        self.batch = int(batch)
        self.allow_nonfinite = allow_nonfinite
        session = model.session
        self._session = session
        m = model.manifest
        # state input -> the state output that feeds it
        feeds_from: dict[str, str] = {}
        for out in m.state_outputs:
            if out.feeds not in model._slots or model._slots[out.feeds].spec.role != "state":
                raise RnnEdgeError(f"manifest.json: state output '{out.name}' feeds {out.feeds!r}, which is not a "
                                   "state input; re-export the model")
            feeds_from[out.feeds] = out.name
        unfed = [s.name for s in model._state_slots if s.name not in feeds_from]
        if unfed:
            raise RnnEdgeError(f"manifest.json: no state output feeds state input(s) {', '.join(unfed)}; "
                               "re-export the model with `rnnedge export --streaming`")
        self._feeds_from = feeds_from
        self._axes0 = {_BATCH: (self.batch, _STREAM)}
        self._shapes = {s.name: model._state_shape(s, self._axes0) for s in model._state_slots}

        provider = model.provider
        self._on_cpu = provider not in _GPU_PROVIDERS
        if self._on_cpu:
            self._device = ("cpu", 0)
        else:
            opts = session.get_provider_options().get(provider, {})
            self._device = ("cuda", int(opts.get("device_id", 0) or 0))
        # Two sets of state buffers. On CPU the OrtValues wrap numpy arrays we keep (zero-copy).
        self._host: list[dict[str, np.ndarray]] = []
        self._values: list[dict[str, ort.OrtValue]] = []
        for _ in range(2):
            host = {s.name: np.zeros(self._shapes[s.name], s.dtype) for s in model._state_slots}
            self._host.append(host)
            self._values.append({n: ort.OrtValue.ortvalue_from_numpy(a, *self._device) for n, a in host.items()})
        self._data_in = [s.name for s in model._data_slots]
        self._data_out = model._data_output_names
        self._all_out = model._output_names
        if self._all_out[: len(self._data_out)] != self._data_out:
            raise RnnEdgeError(f"manifest.json lists state outputs before data outputs ({self._all_out}); "
                               "re-export the model")
        self._n_data = len(self._data_in)
        self._n_data_out = len(self._data_out)
        self._bindings = []
        for k in range(2):
            io = session.io_binding()
            for s in model._state_slots:
                io.bind_ortvalue_input(s.name, self._values[k][s.name])
            state_out = {feeds_from[s.name]: s.name for s in model._state_slots}
            for name in self._all_out:  # bound in graph order: results come back in that order
                if name in state_out:
                    io.bind_ortvalue_output(name, self._values[1 - k][state_out[name]])
                else:
                    io.bind_output(name, "cpu")
            self._bindings.append(io)
        # Per binding, the CPU buffers its data inputs are bound to (reused while the shape holds).
        self._inputs: list[dict[str, np.ndarray]] = [{}, {}]
        self._current = 0
        # Inputs with a time axis: a chunk that lacks it is one step, and then the outputs with a
        # time axis lose it too.
        self._step_ranks = [(s.name, s.rank) for s in model._data_slots if s.time_axis == 1]
        self._time_outputs = {t.name for t in m.data_outputs if len(t.shape) > 1 and is_time_axis(t.shape[1])}
        self._squeeze = [name in self._time_outputs for name in self._data_out]

    def __repr__(self) -> str:
        return f"<rnnedge.Stream batch={self.batch} on {self.model.provider}>"

    # -- hot path ------------------------------------------------------------------------------

    def push(self, *arrays, allow_nonfinite: bool | None = None, **named) -> Outputs:
        """Feed the next chunk of every row; returns the data outputs for this chunk."""
        model = self.model
        if not named and len(arrays) == self._n_data and type(arrays[0]) is np.ndarray:
            given = dict(zip(self._data_in, arrays))
        else:
            given = model._gather(arrays, named, allow_state=False)
        single = False
        if self._step_ranks:
            expanded = 0
            for name, rank in self._step_ranks:
                a = given[name]
                if type(a) is not np.ndarray:
                    try:
                        a = np.asarray(a)
                    except (ValueError, TypeError):
                        continue  # reported by the checks below
                if a.ndim == rank - 1 and a.dtype != object:
                    given[name] = a[:, None]
                    expanded += 1
            single = expanded == len(self._step_ranks)
        allow = self.allow_nonfinite if allow_nonfinite is None else allow_nonfinite
        feeds = model._prepare(given, allow, self._axes0.copy())

        k = self._current
        io = self._bindings[k]
        buffers = self._inputs[k]
        resized = False
        for name, a in feeds.items():
            buf = buffers.get(name)
            if buf is not None and buf.shape == a.shape:
                buf[...] = a  # same shape as last time on this binding: copy into the bound buffer
            else:
                buf = buffers[name] = np.array(a, order="C")
                io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(buf))
                resized = True
        if resized:
            # outputs bound by device keep the buffers of the last run: new input shapes need new ones
            for name in self._data_out:
                io.bind_output(name, "cpu")
        self._session.run_with_iobinding(io)
        if self._on_cpu:
            data = io.copy_outputs_to_cpu()[: self._n_data_out]  # copies; the state outputs are tiny
        else:  # leave the state on the device: read back the data outputs only (bound to CPU)
            got = io.get_outputs()
            data = [np.array(got[i].numpy()) for i in range(self._n_data_out)]
        self._current = 1 - k
        if single:
            data = [d[:, 0] if squeeze and d.ndim > 1 else d for d, squeeze in zip(data, self._squeeze)]
        return Outputs._of(self._data_out, data, model.provider)

    # -- state -------------------------------------------------------------------------------

    @property
    def state(self) -> dict[str, np.ndarray]:
        """Copies of the current state, keyed by state input name (so `model.run(x, **stream.state)` works)."""
        k = self._current
        if self._on_cpu:
            return {n: a.copy() for n, a in self._host[k].items()}
        return {n: np.array(v.numpy()) for n, v in self._values[k].items()}

    def _write_state(self, name: str, array: np.ndarray) -> None:
        k = self._current
        if self._on_cpu:
            self._host[k][name][...] = array
        else:
            self._values[k][name].update_inplace(np.ascontiguousarray(array, dtype=self._host[k][name].dtype))

    def reset(self, index: int | None = None) -> None:
        """Zero the state of every row (a fresh stream), or of row `index` only."""
        if index is None:
            for name, a in self._host[self._current].items():
                self._write_state(name, np.zeros_like(a))
            return
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -self.batch <= index < self.batch:
            raise RnnEdgeError(f"reset index must be a row number in [0, {self.batch}) for this stream of "
                               f"batch={self.batch}, got {index!r}")
        for name, a in self.state.items():
            a[index] = 0
            self._write_state(name, a)

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Set the state (e.g. saved from `stream.state`): state input name -> [batch, ...] array."""
        errors = []
        arrays = {}
        for name, value in state.items():
            slot = self.model._slots.get(name)
            if slot is None or slot.spec.role != "state":
                errors.append(f"'{name}' is not a state input (state inputs: "
                              f"{', '.join(s.name for s in self.model._state_slots)})")
                continue
            a = _as_array(name, value, errors)
            if a is None or not _check_kind(slot, a, errors):
                continue
            if a.shape != self._shapes[name]:
                errors.append(f"state '{name}': expected shape {_fmt_shape(self._shapes[name])} for this stream, "
                              f"got {_fmt_shape(a.shape)}")
                continue
            arrays[name] = a
        if errors:
            _raise(errors)
        for name, a in arrays.items():
            checked = _check_values(self.model._slots[name], a, self.allow_nonfinite, errors)
            if checked is not None:
                arrays[name] = checked
        if errors:
            _raise(errors)
        for name, a in arrays.items():
            self._write_state(name, a)


# --------------------------------------------------------------------------------------------
# Files


def _manifest_of(model_or_manifest) -> Manifest:
    if isinstance(model_or_manifest, Model):
        return model_or_manifest.manifest
    if isinstance(model_or_manifest, Manifest):
        return model_or_manifest
    return Manifest.load(model_or_manifest)  # an export folder


_FORMATS = ".npy, .npz or .csv"


def read_inputs(path: str | os.PathLike, model_or_manifest) -> dict[str, np.ndarray]:
    """Read model inputs from a file: name -> array (pass them on with `model.run(**inputs)`).

    .npy: one array, for a model with one data input.
    .npz: keys are input names (state inputs allowed), or arr_0, arr_1, ... for the data inputs
        in order (what `np.savez(path, a, b)` writes).
    .csv: numbers only (a header row is skipped), for a model with one data input. For an input
        of rank 3 [batch, time, features] the table is [time, features] of one sequence (batch 1);
        for rank 2 each row is one batch entry ([batch, time] ids or [batch, features]); for rank 1
        the single column. Integer inputs need whole numbers.
    """
    path = Path(path)
    manifest = _manifest_of(model_or_manifest)
    data = manifest.data_inputs
    names = [t.name for t in data]
    if not path.is_file():
        raise RnnEdgeError(f"input file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if len(data) != 1:
            raise RnnEdgeError(f"{path} holds one array but the model takes {len(data)} inputs ({', '.join(names)}): "
                               "write an .npz with those names as keys")
        return {names[0]: _load_npy(path)}
    if suffix == ".npz":
        return _read_npz(path, manifest)
    if suffix == ".csv":
        if len(data) != 1:
            raise RnnEdgeError(f"{path} holds one table but the model takes {len(data)} inputs ({', '.join(names)}): "
                               "write an .npz with those names as keys")
        return {names[0]: _csv_to_input(_read_csv(path), data[0], path)}
    raise RnnEdgeError(f"cannot read inputs from {path}: expected {_FORMATS}")


def _np_load(path: Path, kind: str):
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise RnnEdgeError(f"{path} is not a readable {kind} file ({str(e).splitlines()[0]})") from None
    if isinstance(loaded, np.ndarray) != (kind == ".npy"):
        if not isinstance(loaded, np.ndarray):
            loaded.close()
        other = ".npz archive" if kind == ".npy" else ".npy array"
        raise RnnEdgeError(f"{path} holds an {other}, not what its {kind} name says: rename it")
    return loaded


def _load_npy(path: Path) -> np.ndarray:
    return _np_load(path, ".npy")


def _read_npz(path: Path, manifest: Manifest) -> dict[str, np.ndarray]:
    with _np_load(path, ".npz") as z:
        try:
            found = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError) as e:
            raise RnnEdgeError(f"{path} is not a readable .npz file ({str(e).splitlines()[0]})") from None
    data = [t.name for t in manifest.data_inputs]
    allowed = {t.name for t in manifest.inputs}
    positional = [k for k in found if k.startswith("arr_") and k not in allowed]
    if positional and len(positional) == len(found):
        order = sorted(positional, key=lambda k: int(k[4:]) if k[4:].isdigit() else -1)
        if [f"arr_{i}" for i in range(len(order))] != order or len(order) > len(data):
            raise RnnEdgeError(f"{path} holds {', '.join(order)} but the model takes {len(data)} data input(s) "
                               f"({', '.join(data)}): save them by name")
        found = {data[i]: found[k] for i, k in enumerate(order)}
    unknown = [k for k in found if k not in allowed]
    if unknown:
        raise RnnEdgeError(f"{path} holds {', '.join(unknown)}, which the model does not take (inputs: "
                           f"{', '.join(t.name for t in manifest.inputs)})")
    missing = [n for n in data if n not in found]
    if missing:
        raise RnnEdgeError(f"{path} has no array for input(s) {', '.join(missing)} (it holds "
                           f"{', '.join(found) or 'nothing'}): save every data input under its name")
    return found


def _read_csv(path: Path) -> np.ndarray:
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise RnnEdgeError(f"{path} is not a readable CSV file ({e})") from None
    if not rows:
        raise RnnEdgeError(f"{path} is empty: expected rows of numbers")

    def numbers(row):
        return [float(c) for c in row]

    table = []
    header = None
    for i, row in enumerate(rows):
        try:
            table.append(numbers(row))
        except ValueError:
            if i == 0:
                header = row
                continue
            bad = next(c for c in row if not _is_number(c))
            raise RnnEdgeError(f"{path} row {i + 1} holds {bad!r}, not a number: keep only the numeric feature "
                               "columns (one header row is allowed)") from None
    if not table:
        raise RnnEdgeError(f"{path} has a header but no rows of numbers")
    widths = {len(r) for r in table}
    if len(widths) > 1:
        raise RnnEdgeError(f"{path} has rows of different lengths ({sorted(widths)}): every row needs the same "
                           "number of columns")
    if header is not None and len(header) != len(table[0]):
        raise RnnEdgeError(f"{path} has {len(header)} header names but {len(table[0])} columns of numbers")
    return np.asarray(table, dtype=np.float64)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _csv_to_input(table: np.ndarray, spec: TensorSpec, path: Path) -> np.ndarray:
    rank = len(spec.shape)
    if rank == 3:
        features = spec.shape[2]
        if isinstance(features, int) and table.shape[1] != features:
            raise RnnEdgeError(f"{path} has {table.shape[1]} columns but input '{spec.name}' "
                               f"{_fmt_shape(spec.shape)} takes {features} features per step (one row per step)")
        array = table[None]
    elif rank == 2:
        array = table
    elif rank == 1 and table.shape[1] == 1:
        array = table[:, 0]
    else:
        raise RnnEdgeError(f"cannot map the CSV table {path} ({table.shape[0]}x{table.shape[1]}) onto input "
                           f"'{spec.name}' {_fmt_shape(spec.shape)}: use .npy or .npz")
    if spec.dtype.startswith("int"):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise RnnEdgeError(f"{path} holds non-integer values but input '{spec.name}' takes integer ids")
        array = array.astype(np.int64)
    return array


def write_outputs(path: str | os.PathLike, outputs: Mapping[str, np.ndarray] | np.ndarray) -> Path:
    """Write outputs: .npz (every output, names as keys), .npy or .csv (a single output).

    For .npy/.csv, `Outputs` with state outputs count their data outputs only. A .csv takes a
    1-D, 2-D, or 3-D array with batch 1 (written as [time, features]) and gets a header row.
    """
    path = Path(path)
    if isinstance(outputs, np.ndarray):
        outputs = {"output": outputs}
    arrays = {k: np.asarray(v) for k, v in outputs.items()}
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy", ".csv"):
        raise RnnEdgeError(f"cannot write outputs to {path}: expected {_FORMATS}")
    if suffix != ".npz" and len(arrays) > 1 and isinstance(outputs, Outputs):
        arrays = {k: arrays[k] for k in outputs.data_names}
    if suffix != ".npz" and len(arrays) != 1:
        raise RnnEdgeError(f"{path.name} holds one array but there are {len(arrays)} outputs "
                           f"({', '.join(arrays)}): write an .npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npz":
            with open(path, "wb") as f:
                np.savez(f, **arrays)
        elif suffix == ".npy":
            np.save(path, next(iter(arrays.values())), allow_pickle=False)
        else:
            name, array = next(iter(arrays.items()))
            _write_csv(path, name, array)
    except OSError as e:
        raise RnnEdgeError(f"cannot write {path} ({e.strerror or e})") from None
    return path


def _write_csv(path: Path, name: str, array: np.ndarray) -> None:
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 1:
        array = array[:, None]
        header = [name]
    elif array.ndim == 2:
        header = [f"{name}_{j}" for j in range(array.shape[1])]
    else:
        raise RnnEdgeError(f"output '{name}' has shape {_fmt_shape(array.shape)}: a CSV takes 1-D, 2-D, or 3-D "
                           "with batch 1; write an .npz")
    fmt = "%d" if array.dtype.kind in "iub" else "%.9g"
    np.savetxt(path, array, fmt=fmt, delimiter=",", header=",".join(header), comments="")


def run_file(
    folder: str | os.PathLike,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    *,
    chunk: int | None = None,
    provider: str | Sequence[str] = "auto",
    threads: int | None = None,
    fallback: bool = False,
    variant: str = "fp32",
) -> Outputs:
    """`rnnedge run DIR --input x.npy [--output y.npz] [--chunk N] [--provider P]` as a function.

    Without `chunk` the whole input runs at once. With `chunk`, the input is streamed N steps at
    a time through `Model.stream` (the export must have state inputs): outputs with a time axis
    are concatenated along it, the others are those of the last chunk. State inputs in an .npz
    start the stream. Returns the data outputs; writes them to `output_path` when given.
    """
    model = load(folder, provider, variant=variant, threads=threads, fallback=fallback)
    inputs = read_inputs(input_path, model)
    if chunk is None:
        out = model.run(**inputs)
        result = Outputs(((n, out[n]) for n in out.data_names), out.provider, out.data_names)
    else:
        result, _ = run_chunked(model, inputs, chunk)
    if output_path is not None:
        write_outputs(output_path, result)
    return result


def run_chunked(model: Model, inputs: Mapping[str, Any], chunk: int) -> tuple[Outputs, dict[str, np.ndarray]]:
    """Stream `inputs` through `model` `chunk` steps at a time, the state carried (state inputs
    in `inputs` start the stream). Returns the data outputs (those with a time axis concatenated
    along it, the others from the last chunk) and the final state, by state input name."""
    inputs = dict(inputs)
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise RnnEdgeError(f"chunk must be a whole number of steps >= 1, got {chunk!r}")
    timed = [s for s in model._data_slots if s.time_axis == 1]
    if not timed:
        raise RnnEdgeError(f"model '{model.name}' has no input with a time axis: run it without chunk")
    state = {s.name: inputs.pop(s.name) for s in model._state_slots if s.name in inputs}
    arrays = {n: np.asarray(v) for n, v in inputs.items()}
    first = arrays[timed[0].name]
    if first.ndim < 2:
        raise RnnEdgeError(f"input '{timed[0].name}' has shape {_fmt_shape(first.shape)}: streaming in chunks "
                           f"needs {_fmt_shape(timed[0].spec.shape)} with the time axis second")
    batch, steps = int(first.shape[0]), int(first.shape[1])
    stream = model.stream(batch)
    if state:
        stream.load_state(state)
    timed_names = {s.name for s in timed}
    pieces: dict[str, list[np.ndarray]] = {}
    last: Outputs | None = None
    for start in range(0, max(steps, 1), int(chunk)):
        part = {n: (a[:, start:start + chunk] if n in timed_names and a.ndim >= 2 else a) for n, a in arrays.items()}
        last = stream.push(**part)
        for name, value in last.items():
            pieces.setdefault(name, []).append(value)
    time_outputs = stream._time_outputs
    merged = {n: (np.concatenate(v, axis=1) if n in time_outputs else v[-1]) for n, v in pieces.items()}
    return Outputs(merged, model.provider, list(merged)), stream.state
