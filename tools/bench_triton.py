"""Serve a zoo streaming model with a local Triton server (python backend) and load-test it.

    python tools/bench_triton.py                      # exported/airline-gru
    python tools/bench_triton.py --model events-gru --steps 4 --chunks 8

1. `rnnedge triton exported/MODEL --out TMP/repo --backend python` writes the repository.
2. `rnnedge.serve.server.local_server` starts the nvidia-pytriton wheel's tritonserver on it
   (127.0.0.1, free ports; always stopped).
3. At concurrency 1, 8 and 32: sequences/s and p50/p99 per chunk through Triton (gRPC, one
   client per thread), and the in-process runtime at the same concurrency (threads sharing one
   `rnnedge.load` model, one `model.stream(1)` per sequence), on the same sequences.
4. N concurrent streams through the one server (--streams 16,256,1024; default 64): every stream's
   outputs compared with the whole sequence run at once (a lost or mixed-up state is a mismatch; the
   sequences are golden rows under which a mixed-up state shows), and every request must succeed.
   Chunks are numbered: a retried chunk is answered once, never applied twice.

    python tools/bench_triton.py --model events-gru --streams 16,256,1024 --no-levels

Every loop is bounded in count and time. Exits 1 if any request failed or any stream mismatched.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rnnedge.bench import markdown  # noqa: E402
from rnnedge.cli import app  # noqa: E402
from rnnedge.demo import TRITON_SECTION, replace_section  # noqa: E402
from rnnedge.serve.loadtest import load_test  # noqa: E402
from rnnedge.serve.server import local_server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="airline-gru", help="a streaming export under exported/")
    parser.add_argument("--sequences", type=int, default=256, help="sequences per concurrency level")
    parser.add_argument("--chunks", type=int, default=16, help="requests per sequence")
    parser.add_argument("--steps", type=int, default=4, help="steps per chunk")
    parser.add_argument("--seconds", type=float, default=30.0, help="time budget per level and candidate")
    parser.add_argument("--streams", default="64", help="concurrent streams in the correctness runs, e.g. 16,256,1024")
    parser.add_argument("--no-levels", action="store_true", help="skip the concurrency 1/8/32 comparison")
    parser.add_argument("--instances", type=int, default=1, help="model instances (python backend processes)")
    parser.add_argument("--write", type=Path, help="also write the figures into this markdown file's Triton "
                                                   "section (exported/BENCHMARKS.md; `make demo` keeps it)")
    args = parser.parse_args()
    folder = ROOT / "exported" / args.model

    with tempfile.TemporaryDirectory(prefix="rnnedge-bench-triton-") as tmp:
        repo = Path(tmp) / "repo"
        streams = [int(n) for n in args.streams.split(",")]
        app(["triton", str(folder), "--out", str(repo), "--backend", "python", "--max-batch", "64",
             "--instances", str(args.instances), "--max-sequences", str(max(1024, *streams))],
            standalone_mode=False)
        t0 = time.perf_counter()
        with local_server(repo) as server:
            print(f"tritonserver ready in {time.perf_counter() - t0:.1f} s at grpc://{server.grpc_url}")
            url = "grpc://" + server.grpc_url
            rows, reports = [], []
            if not args.no_levels:
                rows, reports = load_test(folder, url, concurrency=(1, 8, 32), sequences=args.sequences,
                                          chunks=args.chunks, steps=args.steps, seconds=args.seconds)
                print(f"\n{args.model}: {args.chunks} chunks of {args.steps} step(s) per sequence, "
                      f"{args.sequences} sequences per level; p50/p99 per chunk, sequences/s over the wall time\n")
                print(markdown(rows))
                for r in reports:
                    print(r.line())
            runs = []
            for n in streams:
                stream_rows, (s,) = load_test(folder, url, concurrency=(n,), sequences=n, chunks=args.chunks,
                                              steps=args.steps, seconds=args.seconds * 2, runtime=False, seed=1)
                row = stream_rows[0]
                chunks_per_s = s.requests / s.seconds if s.seconds > 0 else 0.0
                print(f"\n{n} concurrent streams through one server: {s.sequences} of {n} streams equal to their "
                      f"whole-sequence run (max |diff| {s.max_abs:.1e}), {s.max_open} open at once, {s.mismatched} "
                      f"mismatched, {s.requests} requests, {s.failed} failed, {s.seconds:.1f} s; "
                      f"{chunks_per_s:,.0f} chunks/s, p50 {row.p50_ms:.1f} ms, p99 {row.p99_ms:.1f} ms per chunk"
                      + (f"; first error: {s.first_error}" if s.first_error else ""))
                runs.append((n, s))
            ok = all(r.ok for r in reports) and all(s.ok and s.sequences == n for n, s in runs)
            print("PASS" if ok else "FAIL")
            if args.write:
                body = "\n".join([
                    f"## Triton ({args.model}, python backend, one instance, localhost)", "",
                    f"`tools/bench_triton.py`: {args.chunks} chunks of {args.steps} step(s) per sequence, "
                    f"{args.sequences} sequences per concurrency level; `triton` rows go through one tritonserver "
                    "(gRPC, one client per thread), `runtime` rows are the in-process runtime (threads sharing one "
                    "model) on the same sequences. Latencies are per chunk; seq/s over the wall time.", "",
                    markdown(rows).rstrip(), "",
                    *[f"- {r.line()}" for r in reports],
                    *[f"- {n} concurrent streams through one server: {s.sequences} of {n} equal to their "
                      f"whole-sequence run (max |diff| {s.max_abs:.1e}), {s.mismatched} mismatched, "
                      f"{s.requests} requests, {s.failed} failed" for n, s in runs]])
                text = args.write.read_text() if args.write.is_file() else ""
                args.write.write_text(replace_section(text, TRITON_SECTION, body))
                print(f"wrote the Triton section of {args.write}")
            return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
