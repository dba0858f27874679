"""Execution providers and sessions: which providers to ask for (plugin providers registered by
name, once per process), their options (the table's defaults, the precision pinned), TensorRT's
shape profiles, and a session that says in one line why a provider did not start."""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnxruntime as ort

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import TIME, Manifest, TensorSpec, is_time_axis
from rnnedge.runtime.placement import native_output
from rnnedge.tables import AUTO_ORDER, CPU, CUDA, GPU_PROVIDERS, PLUGINS, PROVIDER_NAMES, PROVIDERS, TENSORRT

# TensorRT builds its engine for a range of shapes: (min, opt, max) for each named dynamic axis.
TRT_SHAPES: dict[str, tuple[int, int, int]] = {"batch": (1, 1, 32), "time": (1, 100, 1000)}


# A session records which provider runs each node (onnxruntime >= 1.23: get_provider_graph_assignment_info)
RECORD_PLACEMENT = "session.record_ep_graph_assignment_info"
_REGISTERED: set[str] = set()  # plugin providers registered with onnxruntime in this process


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build offers, in its order of preference, then the
    plugin providers registered in this process that found a device here."""
    built_in = list(ort.get_available_providers())  # lists a registered plugin too, in some versions
    return built_in + [p for p in sorted(_REGISTERED) if p not in built_in and plugin_devices(p)]


def plugin_module(provider: str):
    """The plugin wheel's module for a plugin provider's full name; None where it is not installed."""
    try:
        return importlib.import_module(PLUGINS[provider])
    except ImportError:
        return None


def register_plugin(provider: str) -> bool:
    """Register a plugin provider's library with onnxruntime (once per process); False where its
    wheel is not installed."""
    if provider in _REGISTERED:
        return True
    module = plugin_module(provider)
    if module is None:
        return False
    if not hasattr(ort, "register_execution_provider_library"):
        raise RnnEdgeError(f"{provider} is a plugin provider, which onnxruntime {ort.__version__} cannot load: "
                           "pip install 'onnxruntime>=1.23'")
    try:
        ort.register_execution_provider_library(provider, module.get_library_path())
    except Exception as e:  # noqa: BLE001 - onnxruntime's exception types are not importable across versions
        if "already registered" not in str(e):
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise RnnEdgeError(f"{provider} ({PLUGINS[provider]}) could not be registered with onnxruntime "
                               f"{ort.__version__} ({first}); reinstall it: {PROVIDERS[provider].install}") from None
    _REGISTERED.add(provider)
    return True


def plugin_devices(provider: str) -> list:
    """The devices a registered plugin provider offers here (onnxruntime's OrtEpDevice), of the kind
    its table entry names where it names one."""
    kind = PROVIDERS[provider].device if provider in PROVIDERS else ""
    return [d for d in ort.get_ep_devices()
            if d.ep_name == provider and (not kind or getattr(d.device.type, "name", "") == kind)]


def provider_versions(provider: str) -> dict[str, str]:
    """onnxruntime's version, and a plugin provider's wheel's."""
    from importlib import metadata

    versions = {"onnxruntime": ort.__version__}
    if provider in PLUGINS:
        dist = PROVIDERS[provider].wheel
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[PLUGINS[provider]] = str(getattr(plugin_module(provider), "__version__", "unknown"))
    return versions


def _no_device(provider: str, asked: str) -> RnnEdgeError:
    cpu = next((d.device for d in ort.get_ep_devices() if d.ep_name == CPU), None)
    here = f" (this machine's CPU: {cpu.vendor})" if cpu is not None and cpu.vendor else ""
    said = (f"provider {asked!r} ({provider}) is installed but found no device it runs on{here}: "
            f"{PLUGINS[provider]} offers only its vendor's hardware; run it on such a machine, or ")
    return RnnEdgeError(said + ON_CPU, cli=said + ON_CPU_CLI)


def normalize_provider(name: str) -> str:
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
        full = normalize_provider(name)
        error = None
        if full in PLUGINS:
            if not register_plugin(full):
                error = _not_available(full, name, available)
            elif not plugin_devices(full):
                error = _no_device(full, name)
        elif full not in available:
            error = _not_available(full, name, available)
        if error is not None:
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
    plugins = [p for p in chosen if p in PLUGINS]
    if plugins and any(p not in PLUGINS and p != CPU for p in chosen):
        raise RnnEdgeError(f"{plugins[0]} is a plugin provider: it runs with CPU behind it, not beside "
                           f"{', '.join(p for p in chosen if p not in PLUGINS and p != CPU)}; ask for one of them")
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def _spelled(precision: str) -> str:
    """'fp32' and 'f32' alike (OpenVINO says f32, onnxruntime and Keras float32 or fp32)."""
    key = str(precision).strip().lower().replace("float", "f")
    return "f" + key[2:] if key.startswith("fp") else key


def precision_options(provider: str, precision: str | None) -> tuple[str, dict[str, str]]:
    """(precision, the options that pin it) for a provider: its table's default where `precision` is
    None; a precision it cannot be pinned to is refused in one line."""
    entry = PROVIDERS.get(provider)
    table = entry.precisions if entry else (("fp32", ()),)
    if precision is None:
        name, options = table[0]
        return name, dict(options)
    for name, options in table:
        if _spelled(name) == _spelled(precision):
            return name, dict(options)
    pinned = [f"{p.label}: {', '.join(n for n, _ in p.precisions)}" for p in PROVIDERS.values()
              if len(p.precisions) > 1]
    raise RnnEdgeError(f"precision {precision!r} is not one {provider} can be pinned to (it runs "
                       f"{', '.join(n for n, _ in table)}); precisions by provider: {'; '.join(pinned)}")


def table_options(provider: str) -> dict[str, str]:
    """The table's default options; '@fn' values are the plugin module's fn() (a library path)."""
    entry = PROVIDERS.get(provider)
    options = dict(entry.options) if entry else {}
    for key, value in options.items():
        if value.startswith("@"):
            options[key] = str(getattr(plugin_module(provider), value[1:])())
    return options


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
                      trt_shapes: Mapping[str, tuple[int, int, int]], precision: str | None = None
                      ) -> list[dict[str, Any]]:
    """One options dict per provider in `chosen`: the table's defaults and precision pin for the
    first one (`precision`, else its default), under the caller's.

    `options` is either keyed by provider (short or full names) or a flat dict for the first
    provider; a flat `device_id` also goes to the CUDA provider behind TensorRT.
    """
    per: dict[str, dict[str, Any]] = {p: {**table_options(p)} for p in chosen}
    per[chosen[0]].update(precision_options(chosen[0], precision)[1])
    options = dict(options or {})
    by_provider = bool(options) and all(
        isinstance(v, Mapping) and (k.lower() in PROVIDER_NAMES or k in per or k.endswith("ExecutionProvider"))
        for k, v in options.items()
    )
    if by_provider:
        for k, v in options.items():
            full = normalize_provider(k)
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
    """Options for every session rnnedge makes: all graph optimisations, errors-only logging, the
    placement of each node recorded, `threads` intra-op threads (onnxruntime's default when None);
    sequential execution."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: no "nodes placed on CPU" chatter
    so.add_session_config_entry(RECORD_PLACEMENT, "1")
    if threads is not None:
        cores = os.cpu_count() or 1
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise RnnEdgeError(f"threads must be a whole number >= 1, got {threads!r}")
        if threads > 4 * cores:
            raise RnnEdgeError(f"threads {threads}: this machine has {cores} cores; expected at most {4 * cores} "
                               "(more threads than that only slow onnxruntime down)")
        so.intra_op_num_threads = threads
    return so


def _fresh(so: ort.SessionOptions) -> ort.SessionOptions:
    """Options like `so` without the providers added to it (to start again on CPU)."""
    threads = so.intra_op_num_threads
    fresh = session_options(threads if threads > 0 else None)
    fresh.log_severity_level = so.log_severity_level
    return fresh


def _start(path: Path, so, chosen, options) -> ort.InferenceSession:
    if any(p in PLUGINS for p in chosen):  # plugin providers run on the devices they offer; CPU behind them
        for p, opts in zip(chosen, options):
            if p in PLUGINS:
                so.add_provider_for_devices(plugin_devices(p), opts)
        return ort.InferenceSession(str(path), so)
    return ort.InferenceSession(str(path), so, providers=chosen, provider_options=options)


def make_session(path: Path, so, chosen, options, fallback: bool, auto: bool = False,
                 log: list | None = None) -> ort.InferenceSession:
    """The session; a GPU or plugin provider that does not start raises, or warns with `fallback`/`auto`.

    With "auto", TensorRT listed by onnxruntime-gpu but not installed is no news when CUDA runs.
    `log`: where given, a first session starts with onnxruntime's verbose log on, captured (never on
    the terminal), and its text is appended there (the providers' reasons for refusing nodes); the
    session returned logs errors only (a verbose session logs every run).
    """
    gpu = [p for p in chosen if p != CPU]
    if any(p in GPU_PROVIDERS for p in gpu) and hasattr(ort, "preload_dlls"):
        try:  # CUDA/cuDNN from pip wheels (onnxruntime-gpu[cuda,cudnn]); harmless otherwise
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - a failed preload shows up below as a provider that did not start
            pass
    if log is not None:  # a first session, verbose and captured, for the providers' reasons; then the quiet one
        verbose = _fresh(so)
        verbose.log_severity_level = 0
        capture = native_output()
        try:
            with capture:
                _start(path, verbose, chosen, options)
        except Exception:  # noqa: BLE001 - the session below raises it in its words
            pass
        log.append(capture.text)
    try:
        with native_output():  # a plugin's banner on standard output, never the user's
            session = _start(path, so, chosen, options)
    except Exception as e:  # onnxruntime's own exception types are not importable across versions
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if gpu and (fallback or auto):
            warnings.warn(f"{gpu[0]} could not start ({first}); falling back to {CPU}", RuntimeWarning, stacklevel=3)
            return make_session(path, _fresh(so), [CPU], [{}], False, log=log)
        if gpu:
            where = "its options" if gpu[0] in PLUGINS else "the CUDA/cuDNN/TensorRT libraries"
            fixes = PROVIDERS[gpu[0]].fixes if gpu[0] in PROVIDERS else ()
            where = next((fix for words, fix in fixes if words in first), f"check {where}")
            said = f"{gpu[0]} could not start for {path} ({first}); {where}, or "
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
