"""Per-step streaming latency of the zoo's unidirectional models, against the floor.

    .venv/bin/python tools/bench_stream.py                       # every unidirectional zoo model
    .venv/bin/python tools/bench_stream.py --models events-gru,airline-lstm --runs 2000

Each model is trained (or read from the zoo cache), exported with `streaming=True` and timed with
`rnnedge.bench.bench_dir(stream=True)`: `model.stream(batch).push(one step)` interleaved with the
same push on the floor, a graph of Identity nodes with the same inputs (what a push costs when the
model computes nothing: rnnedge's input checks, IOBinding, onnxruntime's call). Batch 1, one
thread. A model whose streaming export raises RnnEdgeError is reported and skipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BIDIRECTIONAL = ("sentiment-bilstm",)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="", help="comma-separated zoo names (default: every unidirectional one)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=None,
                   help="steps per push (default: 1, or the model's fixed time axis)")
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--out", type=Path, default=None, help="keep the streaming exports here (default: a temp dir)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    import onnxruntime as ort

    from rnnedge import zoo
    from rnnedge.bench import FLOOR, STREAM_PREFIX, bench_dir
    from rnnedge.errors import RnnEdgeError
    from rnnedge.pipeline import export

    names = [n.strip() for n in args.models.split(",") if n.strip()] or [n for n in zoo.NAMES if n not in BIDIRECTIONAL]
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-stream-"))
    results, skipped = [], []
    for name in names:
        started = time.perf_counter()
        try:
            entry = zoo.load(name)
            result = export(entry, out / name, streaming=True, force=True)
        except RnnEdgeError as e:
            skipped.append((name, str(e)))
            print(f"{name}: skipped ({e})", flush=True)
            continue
        rows = bench_dir(out / name, stream=True, batches=(args.batch,),
                         times=None if args.steps is None else (args.steps,),
                         runs=args.runs, warmup=args.warmup)
        push = next(r for r in rows if r.candidate == STREAM_PREFIX + "fp32")
        floor = next(r for r in rows if r.candidate == FLOOR)
        m = result.manifest
        shapes = ", ".join(f"{s.name}[{', '.join(map(str, s.shape))}]" for s in m.data_inputs)
        states = f"{len(m.state_inputs)} x " + "/".join(dict.fromkeys(str(s.shape[-1]) for s in m.state_inputs))
        results.append((name, entry.cell, shapes, states, push, floor))
        print(f"{name}: push p50 {push.p50_ms * 1e3:.1f} us, floor {floor.p50_ms * 1e3:.1f} us "
              f"({time.perf_counter() - started:.0f} s)", flush=True)

    steps = args.steps or 1
    print(f"\nbatch {args.batch}, {steps} step(s) per push, 1 thread, onnxruntime {ort.__version__}; "
          f"{args.runs} pushes after {args.warmup} warm-up, model and floor interleaved\n")
    head = ["model", "cell", "data inputs", "states x units", "push p50", "push p99", "floor p50", "floor p99",
            "push - floor", "steps/s"]
    print("| " + " | ".join(head) + " |")
    print("|---|---|---|" + "---:|" * (len(head) - 3))
    for name, cell, shapes, states, push, floor in results:
        print(f"| {name} | {cell} | {shapes} | {states} | {push.p50_ms * 1e3:.1f} us | {push.p99_ms * 1e3:.1f} us | "
              f"{floor.p50_ms * 1e3:.1f} us | {floor.p99_ms * 1e3:.1f} us | "
              f"{(push.p50_ms - floor.p50_ms) * 1e3:.1f} us | {push.steps_per_s:,.0f} |")
    for name, reason in skipped:
        print(f"\nskipped {name}: {reason}")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
