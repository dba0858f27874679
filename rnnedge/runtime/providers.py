"""Execution providers and sessions: which providers to ask for, their options, TensorRT's
shape profiles, and a session that says in one line why a provider did not start."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnxruntime as ort

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import TIME, Manifest, TensorSpec, is_time_axis
from rnnedge.tables import AUTO_ORDER, CPU, CUDA, GPU_PROVIDERS, PROVIDER_NAMES, PROVIDERS, TENSORRT

# TensorRT builds its engine for a range of shapes: (min, opt, max) for each named dynamic axis.
TRT_SHAPES: dict[str, tuple[int, int, int]] = {"batch": (1, 1, 32), "time": (1, 100, 1000)}


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build offers, in its order of preference."""
    return list(ort.get_available_providers())


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


# What to do where a provider does not run: for Python callers, and for the command line.
ON_CPU, ON_CPU_CLI = "pass fallback=True to run on CPU", "pass --fallback (or --provider cpu) to run on CPU"


def _not_available(provider: str, asked: str, available: list[str]) -> RnnEdgeError:
    hint = (PROVIDERS[provider].install if provider in PROVIDERS else "install an onnxruntime build that includes it")
    said = (f"provider {asked!r} ({provider}) is not available in onnxruntime {ort.__version__} "
            f"(available: {', '.join(available)}); to use it: {hint}; or ")
    return RnnEdgeError(said + ON_CPU, cli=said + ON_CPU_CLI)


def resolve_providers(provider, fallback: bool) -> list[str]:
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
            error = _not_available(full, name, available)
            if not fallback:
                raise error
            warnings.warn(str(error).removesuffix("; or " + ON_CPU) + f"; falling back to {CPU}", RuntimeWarning,
                          stacklevel=3)
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
                if d not in shapes and is_time_axis(d) and TIME in shapes:
                    d = TIME
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


def provider_options_for(chosen: list[str], options: Mapping | None, folder: Path, manifest: Manifest,
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
            for p in GPU_PROVIDERS:
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


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Options for every session rnnedge makes: all graph optimisations, errors-only logging,
    `threads` intra-op threads (onnxruntime's default when None); sequential execution."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: no "nodes placed on CPU" chatter
    if threads is not None:
        cores = os.cpu_count() or 1
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise RnnEdgeError(f"threads must be a whole number >= 1, got {threads!r}")
        if threads > 4 * cores:
            raise RnnEdgeError(f"threads {threads}: this machine has {cores} cores; expected at most {4 * cores} "
                               "(more threads than that only slow onnxruntime down)")
        so.intra_op_num_threads = threads
    return so


def make_session(path: Path, so, chosen, options, fallback: bool, auto: bool = False) -> ort.InferenceSession:
    """The session; a GPU provider that does not start raises, or warns with `fallback`/`auto`.

    With "auto", TensorRT listed by onnxruntime-gpu but not installed is no news when CUDA runs.
    """
    gpu = [p for p in chosen if p != CPU]
    if any(p in GPU_PROVIDERS for p in gpu) and hasattr(ort, "preload_dlls"):
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
            return make_session(path, so, [CPU], [{}], False)
        if gpu:
            said = f"{gpu[0]} could not start for {path} ({first}); check the CUDA/cuDNN/TensorRT libraries, or "
            raise RnnEdgeError(said + ON_CPU, cli=said + ON_CPU_CLI) from None
        raise RnnEdgeError(f"onnxruntime {ort.__version__} could not load {path} ({first}); "
                           "upgrade onnxruntime or re-export the model") from None
    started = session.get_providers()
    if gpu and gpu[0] not in started and not (auto and started[0] in GPU_PROVIDERS):
        message = (f"{gpu[0]} is installed but did not start (running on {started[0]}); "
                   "check the CUDA/cuDNN/TensorRT libraries (`nvidia-smi`, LD_LIBRARY_PATH)")
        if not (fallback or auto):
            raise RnnEdgeError(message + ", or pass fallback=True to accept that",
                               cli=message + ", or pass --fallback to accept that")
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return session
