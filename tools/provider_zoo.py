"""The reference zoo on other execution providers: placement, parity against Keras, speed beside CPU.

    .venv/bin/python tools/provider_zoo.py --provider qnn               # every zoo model, QNN's HTP simulator
    .venv/bin/python tools/provider_zoo.py --provider openvino,qnn --models events-gru,events-lstm

Each zoo model is exported fresh (into --out, a temporary folder by default) with its batch (and
time, where the model leaves it free) fixed by `--static`, as accelerators that compile a graph want,
then for each provider: `rnnedge.check.check_dir` (Keras' golden outputs, the provider's tolerance
or, for fp16 providers, the quantized variants' range gate), onnxruntime's recorded placement (nodes
on the provider / elsewhere, and why), and `rnnedge.bench.bench_dir` with every provider interleaved
in the same cases. A provider that is not installed or finds no device here is one line, not a
failure of the others. Timings are printed, never asserted. `tools/gpu_check.py` runs the same code
on CUDA and TensorRT.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse(argv=None, providers: str = "openvino,qnn") -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--provider", default=providers, help="comma-separated providers besides CPU")
    p.add_argument("--models", default="", help="comma-separated zoo names (default: the whole zoo)")
    p.add_argument("--batch", default="1", help="batch sizes to export and time, e.g. 1,32")
    p.add_argument("--time", type=int, default=16, help="steps fixed at export where the model leaves time free")
    p.add_argument("--runs", type=int, default=50, help="timed runs per case")
    p.add_argument("--out", type=Path, default=None, help="keep the exports here (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    return p.parse_args(argv)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def export_static(name: str, out: Path, batch: int, steps: int) -> Path:
    """The zoo model NAME (its trained Keras model, so that the golden cases are random rows of the
    static shape rather than its test split) exported with batch (and time, where free) fixed."""
    from rnnedge import zoo
    from rnnedge.errors import RnnEdgeError
    from rnnedge.pipeline import export

    model = zoo.load(name).model
    try:
        export(model, out, force=True, static={"batch": batch, "time": steps})
    except RnnEdgeError as e:
        if "time" not in str(e):
            raise
        export(model, out, force=True, static={"batch": batch})  # its time axis is fixed already
    return out


def check_one(folder: Path, provider: str) -> dict:
    """Parity and placement on one provider, or why it did not run."""
    from rnnedge.check import check_dir
    from rnnedge.errors import RnnEdgeError

    try:
        report = check_dir(folder, provider)
    except RnnEdgeError as e:
        return {"provider": provider, "error": str(e)}
    placement = report.placement
    return {"provider": report.provider, "precision": report.precision, "passed": report.passed,
            "worst_abs": report.worst_abs, "rule": report.rule or "atol + rtol",
            "atol": report.tolerance.atol, "summary": placement.summary() if placement else "",
            "counts": placement.counts() if placement else {},
            "recurrent_on": sum(n.provider == report.provider for n in placement.fused) if placement else 0,
            "recurrent": len(placement.fused) if placement else 0,
            "refused": [f"{n.node} ({n.layer}): {n.reason}" for n in placement.elsewhere][:4] if placement else []}


def bench_one(folder: Path, providers: list[str], batch: int, runs: int, baselines=(), source=None
              ) -> dict[str, float]:
    """p50 ms per provider (and baseline: "keras" runs on the GPU where TensorFlow has one) on the same
    cases, interleaved."""
    from rnnedge.bench import bench_dir
    from rnnedge.errors import RnnEdgeError

    try:
        rows = bench_dir(folder, provider=providers, batches=[batch], runs=runs, warmup=max(2, runs // 10),
                         baselines=baselines, source=source)
    except RnnEdgeError as e:
        return {"error": str(e)}
    return {r.candidate: r.p50_ms for r in rows}


def run(args: argparse.Namespace, baselines=(), deadline: float | None = None) -> list[dict]:
    """One row per zoo model x batch; `baselines` ("keras") timed beside the providers; no model is
    started after `deadline` (time.monotonic()), and the rows say which were left out."""
    from rnnedge import zoo
    from rnnedge.tables import ZOO

    names = [n for n in args.models.split(",") if n] or list(ZOO)
    providers = [p for p in args.provider.split(",") if p]
    batches = [int(b) for b in args.batch.split(",") if b]
    out = args.out or Path(tempfile.mkdtemp(prefix="rnnedge-providers-"))
    rows = []
    for name in names:
        for batch in batches:
            if deadline is not None and time.monotonic() > deadline:
                rows.append({"model": name, "batch": batch, "error": "not run: the time budget was spent"})
                print(line(rows[-1]), flush=True)
                continue
            started = time.perf_counter()
            folder = out / f"{name}-b{batch}"
            try:
                export_static(name, folder, batch, args.time)
            except Exception as e:  # noqa: BLE001 - one model that does not export is a row, not the end
                rows.append({"model": name, "batch": batch, "error": f"export: {str(e).splitlines()[0]}"})
                print(f"{name} b{batch}: export failed: {str(e).splitlines()[0]}", flush=True)
                continue
            checks = [check_one(folder, p) for p in providers]
            runnable = ["cpu", *(c["provider"] for c in checks if "error" not in c)]
            source = zoo.load(name).model if baselines else None
            row = {"model": name, "batch": batch, "checks": checks,
                   "p50_ms": bench_one(folder, runnable, batch, args.runs, baselines, source)}
            row["seconds"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            print(line(row), flush=True)
    return rows


def line(row: dict) -> str:
    if "error" in row:
        return f"{row['model']} b{row['batch']}: {row['error']}"
    parts = [f"{row['model']} b{row['batch']}:"]
    cpu = next((v for k, v in row["p50_ms"].items() if k.endswith("@CPU")), None)
    for c in row["checks"]:
        if "error" in c:
            parts.append(f"  {c['provider']}: not run ({c['error']})")
            continue
        from rnnedge.tables import label

        name = label(c["provider"])
        ms = row["p50_ms"].get(f"fp32@{name}")
        speed = f", {cpu / ms:.2f}x CPU's speed ({ms:.3f} ms p50)" if cpu and ms else ""
        parts.append(f"  {name} ({c['precision']}): {'PASS' if c['passed'] else 'FAIL'} worst |diff| "
                     f"{c['worst_abs']:.2e}; {c['summary']}{speed}")
    keras = row["p50_ms"].get("keras")
    if keras:
        parts.append("  keras: " + f"{keras:.3f} ms p50; " + ", ".join(
            f"{k} {keras / v:.2f}x Keras' speed" for k, v in row["p50_ms"].items() if k != "keras" and v))
    return "\n".join(parts)


def main(argv=None) -> int:
    args = parse(argv)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; python {sys.version.split()[0]}", flush=True)
    rows = run(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
