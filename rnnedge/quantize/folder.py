"""Variants of an export folder: write them, measure them against Keras' golden outputs and the
task metric, gate them, keep the best int8 setting, and recommend a variant per provider."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from rnnedge import metrics
from rnnedge.check import read_golden
from rnnedge.errors import RnnEdgeError
from rnnedge.files import changing, committed, disk_error, place
from rnnedge.manifest import GOLDEN, MANIFEST, MODEL, Manifest
from rnnedge.quantize import gate
from rnnedge.quantize.common import DISK_ERRNOS
from rnnedge.quantize.fp16 import quantize_fp16
from rnnedge.quantize.int8 import candidate_settings, quantize_int8, setting_named
from rnnedge.runtime import Model, load, session_options
from rnnedge.runtime.datafiles import read_npz
from rnnedge.samples import random_inputs
from rnnedge.tables import CPU, GPU_PROVIDERS, VARIANTS
from rnnedge.timing import measure

# Providers that compute fp16 kernels natively (CPU computes the recurrent ops in fp32 behind Casts).
FP16_PROVIDERS = GPU_PROVIDERS


def parse_variants(text: str | list[str]) -> list[str]:
    """'int8,fp16' -> ['int8', 'fp16'], refusing unknown names in one line."""
    names = [v.strip() for v in (text.split(",") if isinstance(text, str) else text) if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise RnnEdgeError(f"unknown variant(s) {', '.join(unknown) or '(none given)'}: expected a comma-separated "
                           f"list of {', '.join(VARIANTS)}")
    return list(dict.fromkeys(names))


def read_data(path: str | Path, manifest) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """(inputs by name, targets `y` or None) from a user's .npz for calibration and evaluation."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".npz":
        raise RnnEdgeError(f"--data {path}: expected an existing .npz file holding the model's inputs by name "
                           f"({', '.join(s.name for s in manifest.data_inputs)}) and optionally targets 'y'")
    arrays = read_npz(path)
    names = [s.name for s in manifest.data_inputs]
    if len(names) == 1 and names[0] not in arrays and "x" in arrays:
        arrays[names[0]] = arrays.pop("x")
    missing = [n for n in names if n not in arrays]
    if missing:
        raise RnnEdgeError(f"--data {path}: no array for input(s) {', '.join(missing)}; it holds "
                           f"{', '.join(arrays) or 'nothing'} (name the arrays after the inputs, targets as 'y')")
    inputs = {n: arrays[n] for n in names}
    return inputs, _checked_targets(path, arrays.get("y"), inputs)


def calibration_feeds(model, inputs: dict[str, np.ndarray], chunk: int = 16) -> dict | list[dict]:
    """What int8 calibration feeds the graph: the data as given; for a streaming export (state
    inputs beside the data), the data streamed through the fp32 model about `chunk` steps at a
    time (a multiple of its time stride), each chunk with the state it starts from (zeros first),
    so the states' ranges are those the user's data gives."""
    if not model.state_slots:
        return inputs
    timed = {s.name for s in model.data_slots if s.time_axis == 1}
    stride = int(model.manifest.time_stride)
    step = stride * max(1, chunk // stride)
    steps = min(int(np.asarray(inputs[n]).shape[1]) for n in timed) if timed else 1
    stream = model.stream(int(np.asarray(next(iter(inputs.values()))).shape[0]))
    feeds = []
    for start in range(0, max(steps - steps % stride, 1), step):
        part = {n: (np.asarray(a)[:, start:start + step] if n in timed else a) for n, a in inputs.items()}
        feeds.append({**part, **stream.state})
        stream.push(**part)
    return feeds


def _checked_targets(path: Path, y: np.ndarray | None, inputs: dict[str, np.ndarray]) -> np.ndarray | None:
    """Targets that can be scored: real numbers, all finite, one row per input row. Anything else
    would end as a NaN metric in the manifest or a numpy traceback halfway through quantizing."""
    if y is None:
        return None
    if y.dtype.kind not in "biuf":
        raise RnnEdgeError(f"--data {path}: targets 'y' are {y.dtype}, expected real numbers (class ids, labels or "
                           "values): save 'y' as a numeric array")
    if y.ndim == 0 or y.size == 0:
        raise RnnEdgeError(f"--data {path}: targets 'y' have shape {list(y.shape)}, expected one row per input row: "
                           "save 'y' with the inputs' batch as its first dimension")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        bad = int(np.sum(~np.isfinite(y)))
        raise RnnEdgeError(f"--data {path}: targets 'y' hold {bad} NaN or infinite value(s), expected finite "
                           "numbers: drop or fix those rows")
    batches = {n: a.shape[0] for n, a in inputs.items() if a.ndim}
    if batches and set(batches.values()) != {y.shape[0]}:
        found = ", ".join(f"'{n}' {b}" for n, b in batches.items())
        raise RnnEdgeError(f"--data {path}: targets 'y' have {y.shape[0]} rows but the inputs have {found}: "
                           "give 'y' one row per input row")
    return y


def quantize_dir(folder: str | Path, variants, *, evaluate=None, data: str | Path | None = None,
                 metric: str | None = None, latency_runs: int = 100, setting: str | None = None,
                 verify: bool = True) -> dict:
    """Add quantized variants to an export folder; returns manifest.variants.

    For int8, every candidate setting (`int8.candidate_settings`, or only `setting`) is written
    and measured: its error against Keras' golden outputs, its task metric, its latency (CPU,
    batch 1, one thread, interleaved with fp32), its size; `gate.choose_int8` keeps one, and the
    manifest records every candidate and why. Each variant gets its gate (`gate` module) and a
    tolerance for `rnnedge check --variant`; `recommended` names the variant to run per provider.

    `evaluate(model) -> float` scores a loaded runtime model on a test split (the zoo passes one);
    otherwise `data` (.npz with the inputs and targets `y`) and `metric` (or the manifest's) are used.
    Without either, variants are judged on the golden outputs alone (no TensorFlow needed).
    One run at a time changes a folder (`rnnedge.files.changing`). `verify`: refuse a model.onnx or
    golden.npz whose sha256 differs from the manifest's (unverified, their recorded checksums stay).
    """
    with changing(Path(folder)):
        return _quantize_dir(Path(folder), variants, evaluate, data, metric, latency_runs, setting, verify)


def _quantize_dir(folder: Path, variants, evaluate, data, metric, latency_runs, setting, verify=True) -> dict:
    manifest = Manifest.load(folder)
    keep = () if verify else (MODEL, GOLDEN)  # read unverified: a change is not recorded as exported
    if verify:
        manifest.verify(folder, [MODEL, GOLDEN])
    names = [v for v in parse_variants(variants) if v != "fp32"]
    calibration, targets = read_data(data, manifest) if data is not None else (None, None)
    if metric and evaluate is None and targets is None:
        raise RnnEdgeError(f"--metric {metric} needs targets to score: pass --data with an array 'y' beside the "
                           "inputs" + (f" ({data} has none)" if data is not None else ""))
    metric = metric or manifest.task.get("metric")
    if evaluate is None and calibration is not None:
        load(folder, "cpu").run(**calibration)  # refuse arrays that do not fit, in one line
        if targets is not None and metric:
            evaluate = lambda m: metrics.score(metric, m.run(**calibration).data[0], targets)  # noqa: E731
    fp32_model = onnx.load(folder / MODEL)
    kinds = gate.output_kinds(fp32_model)
    golden = read_golden(folder)
    steps = 100 if any(isinstance(d, str) and d != "batch"
                       for s in manifest.data_inputs for d in s.shape[1:2]) else None
    feeds = random_inputs(manifest, 1, steps)
    fp32_size = (folder / MODEL).stat().st_size

    for stale in folder.glob(".quantize-*"):  # scratch of a run that was killed
        shutil.rmtree(stale, ignore_errors=True)
    for name in (MANIFEST, "model.int8.onnx", "model.fp16.onnx"):  # a killed run's half-written file
        for stale in folder.glob(f".{name}.*.tmp"):  # (rnnedge.files.atomic_path's name for it)
            if stale.is_file():
                stale.unlink(missing_ok=True)
    try:
        scratch = tempfile.TemporaryDirectory(prefix=".quantize-", dir=folder)
    except OSError as e:
        raise disk_error(folder, e) from None
    with scratch as tmp:
        written: dict[str, tuple[dict, Path]] = {}  # candidate -> (facts, file)
        if "int8" in names:
            graph_feeds = calibration_feeds(load(folder, "cpu"), calibration) if calibration is not None else None
            settings = ([setting_named(setting)] if setting
                        else candidate_settings(fp32_model, calibrated=calibration is not None))
            for s in settings:
                path = Path(tmp) / f"int8-{s.name}.onnx"
                with _scratch_write(folder / "model.int8.onnx"):
                    written[f"int8:{s.name}"] = (quantize_int8(folder / MODEL, path, calibration=graph_feeds,
                                                               setting=s), path)
        if "fp16" in names:
            path = Path(tmp) / "fp16.onnx"
            with _scratch_write(folder / "model.fp16.onnx"):
                written["fp16"] = (quantize_fp16(folder / MODEL, path), path)

        models = {"fp32": _cpu_model(folder, manifest, folder / MODEL, "fp32")}
        models.update({k: _cpu_model(folder, manifest, p, k.split(":")[0]) for k, (_, p) in written.items()})
        measured = {k: _accuracy(m, golden, kinds) for k, m in models.items()}
        scores = {k: float(evaluate(m)) if evaluate else None for k, m in models.items()}
        calls = {k: (lambda m=m: m.run(**feeds)) for k, m in models.items()}
        times = measure(calls, runs=_runs(calls, latency_runs), warmup=max(5, latency_runs // 10))
        reference = scores["fp32"]
        if manifest.task.get("keras") is not None and metric == manifest.task.get("metric"):
            reference = manifest.task["keras"]

        def judged(key: str, facts: dict) -> dict:
            golden_gate = measured[key]
            facts["max_abs_error"] = {n: o["max_abs"] for n, o in golden_gate["outputs"].items()}
            facts["metric"] = scores[key]
            facts["latency_ms_p50"] = round(float(np.percentile(times[key], 50)), 4)
            facts["speedup_rounds"] = gate.round_ratios(times["fp32"], times[key])
            facts["tolerance"] = {n: o["limit"] for n, o in golden_gate["outputs"].items()}
            task = gate.task_gate(metric, reference, scores[key]) if (
                metric in gate.TASK_GATE and scores[key] is not None and reference is not None) else None
            facts["gate"] = {"passed": task["passed"] if task else golden_gate["passed"],
                             "by": "task metric" if task else "golden outputs",
                             "rule": task["rule"] if task else golden_gate["rule"],
                             "golden": golden_gate, **({"task": task} if task else {})}
            return facts

        if any(n in manifest.variants for n in names):
            # variants made again: first a manifest without them, so that a run killed while placing
            # the new files leaves a folder whose manifest names only files it matches
            interim = Manifest.load(folder)
            for n in names:
                interim.variants.pop(n, None)
            interim.recommended = recommend(interim.variants)
            interim.save(folder, keep)
        if "int8" in names:
            candidates = []
            for key, (facts, _) in written.items():
                if key.startswith("int8:"):
                    facts = judged(key, facts)
                    worst = max((o["share_of_range"] for o in facts["gate"]["golden"]["outputs"].values()), default=0.0)
                    candidates.append({"name": key[5:], "method": facts["method"],
                                       "portable": facts["setting"]["portable"], "size": facts["size"],
                                       "size_ratio": facts["size_ratio"], "error": worst,
                                       "max_abs_error": facts["max_abs_error"], "metric": facts["metric"],
                                       "latency_ms_p50": facts["latency_ms_p50"], "ratios": facts["speedup_rounds"],
                                       "u8s8_weight_range": facts["u8s8_weight_range"],
                                       "passed": facts["gate"]["passed"],
                                       "smaller_than_fp32": facts["size"] < fp32_size})
            chosen, why = gate.choose_int8(candidates, fp32_size)
            manifest.variants.pop("int8", None)
            manifest.not_kept.pop("int8", None)
            if chosen is None:
                manifest.not_kept["int8"] = {"because": why, "candidates": candidates}
            else:
                facts, path = written[f"int8:{chosen}"]
                facts["candidates"], facts["chosen_because"] = candidates, why
                place(path, folder / "model.int8.onnx")
                facts["file"] = "model.int8.onnx"
                manifest.variants["int8"] = facts
        if "fp16" in names:
            facts, path = written["fp16"]
            place(path, folder / "model.fp16.onnx")
            facts["file"] = "model.fp16.onnx"
            manifest.variants["fp16"] = judged("fp16", facts)
        fp32 = manifest.variants.setdefault("fp32", {"file": MODEL})
        fp32.update({"size": fp32_size, "max_abs_error": {n: 0.0 for n in measured["fp32"]["outputs"]},
                     "metric": scores["fp32"], "latency_ms_p50": round(float(np.percentile(times["fp32"], 50)), 4),
                     "gate": {"passed": True, "by": "reference",
                              "rule": "the reference every variant is judged against"}})
        for v in [v for v in manifest.variants if v not in ("fp32", *names)]:  # variants made earlier: re-time
            manifest.variants[v].pop("speedup_rounds", None)

    manifest.recommended = recommend(manifest.variants)
    try:
        manifest.save(folder, keep)
    except BaseException:  # a full disk, Ctrl-C: no file left that the manifest on disk does not name
        named = Manifest.load(folder).file_names()
        for n in names:
            entry = manifest.variants.get(n, {})
            if entry.get("file") and entry["file"] not in named:
                (folder / entry["file"]).unlink(missing_ok=True)
        raise
    committed(folder / MANIFEST)
    if "int8" in manifest.not_kept:  # an earlier run's int8 file, which the manifest no longer names
        (folder / "model.int8.onnx").unlink(missing_ok=True)
    return manifest.variants


def recommend(variants: dict) -> dict[str, str]:
    """The variant to run per provider: on CPU the fastest that passes its gate, if it is faster
    than fp32 by gate.SPEEDUP in repeated rounds (else fp32); on CUDA/TensorRT fp16 if it passes."""
    cpu, best = "fp32", 1.0
    for v, facts in variants.items():
        ratios = facts.get("speedup_rounds") or []
        if v != "fp32" and facts.get("gate", {}).get("passed") and gate.faster_than(ratios):
            if float(np.median(ratios)) > best:
                cpu, best = v, float(np.median(ratios))
    fp16_ok = variants.get("fp16", {}).get("gate", {}).get("passed", False)
    return {CPU: cpu, **{p: "fp16" if fp16_ok else "fp32" for p in FP16_PROVIDERS}}


def _runs(calls: dict, at_least: int, seconds: float = 1.5) -> int:
    """Interleaved runs for about `seconds` in all (small models get more, so rounds agree), from
    `at_least` to 10x that."""
    import time

    for call in calls.values():
        call()
    start = time.perf_counter()
    for call in calls.values():
        call()
    per_round = max(time.perf_counter() - start, 1e-6)
    return int(min(max(seconds / per_round, at_least, gate.ROUNDS), 10 * max(at_least, gate.ROUNDS)))


def _cpu_model(folder: Path, manifest, path: Path, variant: str):
    """A runtime Model of `path` on CPU with one thread, whatever the manifest lists."""
    session = ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])
    return Model(folder, manifest, session, variant=variant, path=path)


def _accuracy(model, golden, kinds) -> dict:
    pairs = [(expected, dict(model.run(**inputs))) for _, inputs, expected in golden]
    return gate.golden_gate(pairs, kinds)


@contextmanager
def _scratch_write(final: Path):
    """A variant is written in the folder's scratch before it is placed: a full disk there is one
    line naming the file it would have become (onnx.save's OSError names no file)."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        raise disk_error(final, e) from None



def zoo_scorer(entry, static: dict):
    """The zoo's task metric of a loaded model on its test split, fed in slices of a batch that
    `--static` fixed (the last one padded, the padding's rows dropped); None where `--static` fixed a
    time the split's sequences do not have (cutting them would score another task)."""
    x = [np.asarray(a) for a in entry.x_test]
    time_, batch = static.get("time"), static.get("batch")
    if time_ is not None and any(a.ndim >= 2 and a.shape[1] != time_ for a in x):
        return None
    if not batch:
        return lambda m: entry.score(m.run(*x).data)

    def score(m):
        parts = []
        for i in range(0, len(x[0]), batch):
            rows = [a[i:i + batch] for a in x]
            real = len(rows[0])
            rows = [np.concatenate([r, np.zeros((batch - real, *r.shape[1:]), r.dtype)]) for r in rows]
            parts.append([o[:real] for o in m.run(*rows).data])
        return entry.score([np.concatenate(p) for p in zip(*parts)])

    return score


def zoo_evaluator(source: str, static: dict | None = None):
    """(the zoo model's task metric on its test split as a function of a loaded variant, a note or
    None) for an export whose source is `zoo:NAME`; (None, None) for any other source. Without
    TensorFlow the test split cannot be rebuilt: (None, a note saying how variants are judged)."""
    if not source.startswith("zoo:"):
        return None, None
    try:
        from rnnedge import zoo
    except ImportError:
        return None, ("note: TensorFlow is not installed, so the zoo's test split cannot be rebuilt: variants are "
                      "judged on Keras' golden outputs (pass --data with targets 'y' for a task metric)")
    entry = zoo.load(source[4:])
    score = zoo_scorer(entry, static or {})
    if score is None:
        return None, ("note: the zoo's test split does not fit the export's --static time: variants are judged on "
                      "Keras' golden outputs")
    return score, None
