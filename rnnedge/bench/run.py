"""`bench_dir`: time an export folder's variants, streams and baselines case by case."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from rnnedge.bench.candidates import (
    FLOOR,
    STREAM_PREFIX,
    baseline_runners,
    floor_folder,
    keras_source,
    load_variant,
    stream_calls,
    variant_files,
    whole_sequence_calls,
)
from rnnedge.bench.cases import cases_for, time_axes_of
from rnnedge.bench.results import BenchRow
from rnnedge.check.folder import check_runner
from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import Manifest
from rnnedge.runtime.providers import normalize_provider, precision_options
from rnnedge.runtime.runner import OrtRunner
from rnnedge.samples import random_inputs
from rnnedge.tables import BASELINES, CPU, VARIANTS, label
from rnnedge.timing import measure, percentiles, whole


def bench_dir(
    folder: str | os.PathLike,
    *,
    provider: str | Sequence[str] = "cpu",
    batches: Sequence[int] | None = None,
    times: Sequence[int] | None = None,
    threads: int = 1,
    variants: Sequence[str] | None = None,
    baselines: Sequence[str] = (),
    stream: bool = False,
    runs: int = 200,
    warmup: int = 20,
    source=None,
    progress=None,
    seed: int = 0,
    verify: bool = True,
    precision: str | None = None,
    placements: dict | None = None,
) -> list[BenchRow]:
    """Time an export folder's `variants` (and `baselines`) for every batch x time; one row per case x candidate.

    batches / times: sizes to time. None (the CLI's "not given") means 1 for batch and, for time,
        the fixed time axis where the model has one, else 100 steps (1 step per push with
        `stream`). A size that differs from a fixed axis of an input raises RnnEdgeError.
    variants: "fp32" and keys of the manifest's `variants` ("int8", "fp16": `rnnedge quantize`); None:
        every one the folder has.
    baselines: any of "keras", "tf2onnx", "litert", "litert-int8", timed with the same inputs; they
        need TensorFlow and the Keras model: `source` (a keras.Model, a .keras path, zoo:NAME or a
        `rnnedge.zoo.ZooModel`), else the manifest's source when it is a file here or zoo:NAME.
    stream: per-push latency of `model.stream(batch).push(chunk)` of `time` steps for every
        variant ("stream-fp32", ...) and of the "floor" (see `floor_folder`); needs a streaming
        export, and takes no baselines.
    progress: called with 1 after each case (len(batches) x len(times) of them), or a rich
        `Progress` that gets a task of its own. Nothing is printed.
    provider: one provider, or several ("cpu,openvino,qnn" or a list): each variant is timed on each,
        interleaved in the same cases, as "fp32@QNN" and so on, with "vs" the first provider's first
        variant (`fastest` names the quickest per case).
    precision: pinned on each provider that can take it (OpenVINO f32/bf16/f16, QNN fp16); a
        precision none of them takes is refused.
    placements: a dict that gets candidate -> the placement onnxruntime recorded (off-CPU providers).
    """
    folder = Path(folder)
    manifest = Manifest.load(folder)
    whole("threads", threads, 1)
    whole("runs", runs, 1)
    whole("warmup", warmup, 0)
    if variants is None:  # every variant present
        variants = [v for v in VARIANTS if v == "fp32" or v in manifest.variants]
    variants = list(dict.fromkeys(variants))
    baselines = list(dict.fromkeys(baselines))
    if not variants:
        raise RnnEdgeError("give at least one variant to bench (fp32, int8, fp16)")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise RnnEdgeError(f"unknown baseline {unknown[0]!r}: "
                           f"expected a comma-separated list of {', '.join(BASELINES)}")
    variant_files(folder, manifest, variants)
    if stream and not manifest.state_inputs:
        raise RnnEdgeError(f"{folder} has no state inputs, so it cannot stream: re-export it with "
                           "`rnnedge export --streaming` (forward-direction recurrent layers) to bench streaming")
    if stream and baselines:
        raise RnnEdgeError("baselines time whole sequences; with --stream the reference is the floor "
                           "(leave --baseline out, or bench without --stream)")
    providers = provider_list(provider)
    if stream and len(providers) > 1:
        raise RnnEdgeError("--stream times one provider at a time: give one --provider")
    pins = {p: precision if precision is not None and pins_precision(p, precision) else None for p in providers}
    if precision is not None and not any(pins.values()):
        precision_options(normalize_provider(providers[0]), precision)  # refused in its words
    cases = cases_for(manifest, batches, times, stream)

    keras_model = keras_source(source, manifest, baselines, threads) if baselines else None
    if keras_model is not None:
        _baseline_fits(keras_model, manifest, cases)
    models = {}
    for p in providers:
        cpu = normalize_provider(p) == CPU
        for v in variants:
            model = load_variant(folder, p, v, threads, verify, pins[p], explain=not cpu)
            models[v if len(providers) == 1 else f"{v}@{label(model.provider)}"] = model
            if placements is not None and not cpu:
                placements[f"{v}@{label(model.provider)}"] = model.placement()
    first = next(iter(models.values()))
    references_of_providers = [next(iter(models))] if len(providers) > 1 else []
    runners = {v: OrtRunner(m.session, v) for v, m in models.items()}
    errors = {}
    if keras_model is not None:
        made = baseline_runners(keras_model, manifest, baselines, first.session, threads)
        runners.update(made)
        errors = {b: baseline_error(runner, folder) for b, runner in made.items()}
    with tempfile.TemporaryDirectory(prefix="rnnedge-bench-") as tmp:
        floor = (load_variant(floor_folder(manifest, Path(tmp) / "floor"), providers[0], "fp32", threads)
                 if stream else None)
        advance = _progress(progress, len(cases))
        rows: list[BenchRow] = []
        for batch, steps in cases:
            feeds = random_inputs(manifest, batch, steps, seed)
            if stream:
                calls = stream_calls(models, floor, manifest, feeds, batch)
                references = [FLOOR]
            else:
                calls = whole_sequence_calls(runners, manifest, feeds)
                references = [*references_of_providers, *baselines]
            ms = measure(calls, runs=runs, warmup=warmup, seed=seed)
            p50 = {n: percentiles(v)[0] for n, v in ms.items()}
            for name, samples in ms.items():
                a, b, c = percentiles(samples)
                per_s = batch * 1e3 / a if a > 0 else math.inf
                model = models.get(name.removeprefix(STREAM_PREFIX))
                rows.append(BenchRow(
                    candidate=name, provider=BASELINES.get(name) or (model or first).provider, batch=batch, time=steps,
                    threads=threads, p50_ms=a, p90_ms=b, p99_ms=c, seq_per_s=per_s, steps_per_s=per_s * (steps or 1),
                    ratios={r: p50[r] / a if a > 0 else math.inf for r in references}, runs=runs,
                    error=errors[name] if name in errors else
                    variant_error(manifest, name.removeprefix(STREAM_PREFIX).split("@")[0],
                                  model.provider if model is not None else CPU,
                                  model.precision if model is not None else "fp32"),
                ))
            advance(1)
    return rows


def provider_list(provider: str | Sequence[str]) -> list[str]:
    """'cpu,openvino' or ['cpu', 'openvino'] -> ['cpu', 'openvino'] (each once)."""
    names = provider.split(",") if isinstance(provider, str) else list(provider)
    names = list(dict.fromkeys(n.strip() for n in names if str(n).strip()))
    if not names:
        raise RnnEdgeError("give at least one provider, e.g. --provider cpu or --provider cpu,openvino,qnn")
    return names


def pins_precision(provider: str, precision: str) -> bool:
    try:
        precision_options(normalize_provider(provider), precision)
    except RnnEdgeError:
        return False
    return True


def variant_error(manifest: Manifest, variant: str, provider: str = CPU, precision: str = "fp32") -> float | None:
    """A variant's max |diff| against Keras' golden outputs, as recorded at export and quantize time,
    or by `rnnedge check` on another provider (None where that provider was never checked)."""
    if provider != CPU:
        checked = manifest.providers.get(f"{provider} {precision}", {}) if variant == "fp32" else {}
        errors = checked.get("max_abs_error")
        return float(max(errors.values())) if errors else None
    if variant == "fp32":
        worst = manifest.parity.get("worst_abs")
        return None if worst is None else float(worst)
    errors = manifest.variants.get(variant, {}).get("max_abs_error")
    return float(max(errors.values())) if errors else None


def baseline_error(runner, folder: Path) -> float | None:
    """A baseline's max |diff| against Keras' golden outputs, measured on the golden cases it can
    take (those from a fresh state); None where it can take none of them."""
    try:
        report = check_runner(runner, folder, verify=False)
    except Exception:  # noqa: BLE001 - a baseline that cannot run a golden case (a fixed length) has no figure
        return None
    return float(report.worst_abs) if report.cases else None


def _baseline_fits(keras_model, manifest: Manifest, cases) -> None:
    """The Keras model (and so its tf2onnx graph) may fix a time axis that a streaming export frees."""
    for t, spec in zip(keras_model.inputs, manifest.data_inputs):
        fixed = t.shape[1] if len(t.shape) > 1 else None
        for _, steps in cases:
            if fixed is not None and steps is not None and time_axes_of(spec) and steps != fixed:
                raise RnnEdgeError(f"baselines: the Keras model's input '{spec.name}' takes {fixed} steps, "
                                   f"not {steps}; pass --time {fixed} to compare with the baselines")


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
