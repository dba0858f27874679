"""`rnnedge bench DIR --provider wasm [--baseline tfjs]`: the export on onnxruntime-web in headless
Chromium, against the same Keras model converted by TensorFlow.js (its wasm and cpu backends) in the
same page: batch 1, the zoo's length, candidates interleaved block by block, medians; the parity of
each against Keras on the timed input; and a stream's push against one bare session.run."""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnedge.check import read_golden
from rnnedge.errors import RnnEdgeError
from rnnedge.files import output_file, write_text
from rnnedge.manifest import Manifest
from rnnedge.web.assets import tfjs_files
from rnnedge.web.browser import Browser, decode, encode
from rnnedge.web.check import DRIVER_FILES, open_driver, site_model
from rnnedge.web.site import write_site

TFJS_BACKENDS = ("wasm", "cpu")
BLOCK = 5  # calls per candidate per round: rounds interleave the candidates


@dataclass(frozen=True)
class BrowserRow:
    candidate: str
    steps: int
    p50_ms: float | None
    p90_ms: float | None
    runs: int
    max_abs: float | None  # against Keras on the timed input
    note: str = ""


def timed_input(folder: Path, manifest: Manifest, steps: int | None) -> tuple[dict, np.ndarray | None]:
    """(inputs, Keras' first data output or None): batch 1 at the zoo's length (the first row of
    golden.npz's task case, else its longest case), or `steps` steps of seeded random values."""
    data = [s.name for s in manifest.data_inputs]
    if steps is not None:
        rng = np.random.default_rng(0)
        out = {}
        for s in manifest.data_inputs:
            shape = [1 if d == "batch" else steps if isinstance(d, str) else d for d in s.shape]
            if s.dtype != "float32":
                raise RnnEdgeError(f"--time makes random float inputs, but '{s.name}' takes {s.dtype}: leave --time "
                                   "out to time the zoo's own case")
            out[s.name] = rng.standard_normal(shape).astype(np.float32)
        return out, None
    cases = read_golden(folder)
    task = [c for c in cases if "split" in c[0]] or sorted(cases, key=lambda c: -max(
        (a.shape[1] if a.ndim > 1 else 1) for a in c[1].values()))
    expected = task[0][2].get(manifest.data_outputs[0].name)
    return {n: task[0][1][n][:1] for n in data}, None if expected is None else expected[:1]


def bench_browser(folder: str | Path, provider: str = "wasm", *, baselines=(), steps: int | None = None,
                  runs: int = 30, warmup: int = 5, seconds: float = 20.0, source: str | None = None,
                  say=print) -> list[BrowserRow]:
    """Time the export in Chromium (and TF.js where asked); rows with parity against Keras."""
    folder = Path(folder)
    manifest = Manifest.load(folder)
    unknown = [b for b in baselines if b != "tfjs"]
    if unknown:
        raise RnnEdgeError(f"--baseline {','.join(unknown)}: in the browser the baseline is tfjs (TensorFlow.js)")
    feeds, keras_out = timed_input(folder, manifest, steps)
    n_steps = next((a.shape[1] for a in feeds.values() if a.ndim > 1), 1)
    with tempfile.TemporaryDirectory(prefix="rnnedge-bench-") as tmp:
        site = write_site(folder, Path(tmp) / "site", providers=("wasm", "webgpu") if provider == "webgpu"
                          else ("wasm",), extra=DRIVER_FILES, ops=False)
        tfjs_why = {}
        if baselines:
            import shutil

            from rnnedge.web.tfjs import convert

            src = source or str(manifest.source.get("name") or "")
            if not src:
                raise RnnEdgeError("the TF.js baseline needs the source model: the manifest names none; pass --source")
            say(f"converting {src} for TensorFlow.js (tensorflowjs {_tfjs_version()})...")
            converted = convert(src, Path(tmp) / "conv", feeds)
            keras_out = converted["keras"].get("output")  # the source's own outputs (the golden's where the same)
            (site / "tfjs").mkdir()
            for f in tfjs_files():
                shutil.copy2(f, site / "tfjs" / f.name)
            if converted["ok"]:
                for f in (Path(tmp) / "conv" / "tfjs").iterdir():
                    shutil.copy2(f, site / "tfjs" / f.name)
            else:
                tfjs_why = {b: converted["why"] for b in TFJS_BACKENDS}
        with Browser(site, webgpu=provider == "webgpu") as browser:
            driver = open_driver(browser, provider, site_model(site))
            candidates = ["rnnedge"]
            if baselines and not tfjs_why:
                ready = driver.call("tfjsOpen", list(TFJS_BACKENDS))
                tfjs_why = {b: why for b, why in ready.items() if why}
                candidates += [f"tfjs-{b}" for b, why in ready.items() if not why]
            times, outputs = _interleaved(driver, candidates, encode(feeds), runs, warmup, seconds)
            hops = _hops(driver, manifest, feeds, runs) if manifest.streaming else None
    rows = []
    for c in candidates:
        got = outputs[c]
        diff = None if keras_out is None or got.shape != keras_out.shape else float(np.max(np.abs(got - keras_out)))
        label = f"rnnedge (onnxruntime-web {provider})" if c == "rnnedge" else f"TensorFlow.js {c[5:]}"
        rows.append(BrowserRow(label, n_steps, statistics.median(times[c]), _p90(times[c]), len(times[c]), diff))
    for b, why in tfjs_why.items():
        rows.append(BrowserRow(f"TensorFlow.js {b}", n_steps, None, None, 0, None, f"cannot load the model: {why}"))
    if hops is not None:
        rows.append(hops)
    return rows


def _tfjs_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tensorflowjs")
    except PackageNotFoundError:
        return "not installed"


def _interleaved(driver, candidates, arrays, runs, warmup, seconds):
    """Blocks of BLOCK calls per candidate in turn, until each has `runs` (or `seconds` of calls)."""
    times = {c: [] for c in candidates}
    outputs = {}
    for c in candidates:  # warm-up: first calls load kernels, move weights to the backend
        reply = driver.call("timeBlock", c, arrays, 1)
        more = min(warmup - 1, int(seconds / 4 / max(reply["times"][0], 1e-3) * 1e3))  # a slow one: a quarter budget
        if more > 0:
            reply = driver.call("timeBlock", c, arrays, more)
        outputs[c] = next(iter(decode({"y": reply["output"]}).values()))
    spent = {c: 0.0 for c in candidates}
    while any(len(times[c]) < runs and spent[c] < seconds for c in candidates):
        for c in candidates:
            if len(times[c]) >= runs or spent[c] >= seconds:
                continue
            start = time.perf_counter()
            reply = driver.call("timeBlock", c, arrays, min(BLOCK, runs - len(times[c])))
            spent[c] += time.perf_counter() - start
            times[c] += reply["times"]
    return times, outputs


def _hops(driver, manifest: Manifest, feeds: dict, runs: int) -> BrowserRow:
    hop = max(1, manifest.time_stride)
    one = {n: a[:, :hop] if a.ndim > 1 else a for n, a in feeds.items()}
    reply = driver.call("timeHops", encode(one), max(runs, 50))
    push, bare = statistics.median(reply["push"]), statistics.median(reply["bare"])
    return BrowserRow(f"stream push of {hop} step(s)", hop, push, _p90(reply["push"]), len(reply["push"]), None,
                      f"one bare session.run: {bare:.3f} ms; push / run {push / bare:.2f}x")


def _p90(xs) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))]


def table_lines(rows: list[BrowserRow], title: str) -> list[str]:
    """The rows as aligned lines, with rnnedge's speed-up over TF.js's fastest backend."""
    head = f"{'candidate':<38} {'steps':>5} {'p50 ms':>9} {'p90 ms':>9} {'runs':>5} {'max|diff| Keras':>15}  note"
    lines = [title, head]
    for r in rows:
        p50 = f"{r.p50_ms:9.3f}" if r.p50_ms is not None else f"{'-':>9}"
        p90 = f"{r.p90_ms:9.3f}" if r.p90_ms is not None else f"{'-':>9}"
        diff = f"{r.max_abs:15.2e}" if r.max_abs is not None else f"{'-':>15}"
        lines.append(f"{r.candidate:<38} {r.steps:>5} {p50} {p90} {r.runs:>5} {diff}  {r.note}")
    ours = rows[0].p50_ms
    tfjs = [r for r in rows if r.candidate.startswith("TensorFlow.js") and r.p50_ms is not None]
    if tfjs and ours:
        best = min(tfjs, key=lambda r: r.p50_ms)
        lines.append(f"rnnedge is {best.p50_ms / ours:.1f}x faster than TensorFlow.js' fastest backend here "
                     f"({best.candidate[14:]}, {best.p50_ms:.3f} ms) at batch 1, {rows[0].steps} steps (target >= 10x)")
    return lines


def bench_cli(folder: Path, provider: str, baseline: str | None, source: str | None, times: str | None, runs: int,
              warmup: int, seconds: float, json_out: Path | None, force: bool, not_here=()) -> None:
    """`rnnedge bench DIR --provider wasm|webgpu [--baseline tfjs]`: prints the table (and writes --json).
    `not_here`: options given that the browser's bench does not take (refused)."""
    import dataclasses
    import json

    import typer

    from rnnedge.bench import int_list

    if not_here:
        raise RnnEdgeError(f"{', '.join(not_here)}: not for the browser's bench, which times fp32 at batch 1 on one "
                           "thread (each --time length), streams included, and writes --json")
    if json_out is not None:
        output_file(json_out, force=force)
    lengths = int_list(times, "--time") or [None]
    baselines = [b for b in (baseline or "").split(",") if b]
    rows = []
    for steps in lengths:
        found = bench_browser(folder, provider, baselines=baselines, steps=steps, runs=runs, warmup=warmup,
                              seconds=seconds, source=source, say=typer.echo)
        for line in table_lines(found, f"{Path(folder).name} in headless Chromium (1 thread, batch 1)"):
            typer.echo(line)
        rows += found
    if json_out is not None:
        write_text(json_out, json.dumps([dataclasses.asdict(r) for r in rows], indent=1), result=True)
        typer.echo(f"wrote {json_out}")
