"""What one streaming hop costs: `stream.push` against the best bare onnxruntime call of the same
graph, and against re-running a whole window at every hop.

    .venv/bin/python tools/bench_hop.py exported/kws-gru exported/kws-crnn exported/kws-tcresnet --runs 5000
    .venv/bin/python tools/bench_hop.py zoo:kws-crnn zoo:kws-tcresnet   # exported --streaming first (TensorFlow)

For each streaming export, one hop (one frame, or the model's time stride in frames) per push,
batch 1, one thread, interleaved in one process:
- push: `rnnedge.load(DIR).stream().push(frame)` (input checks, state carried on the device);
- run: a bare `session.run` with the states fed back by hand (numpy in and out);
- iobinding: the best bare call: I/O binding to preallocated buffers, the state outputs bound to
  the next call's state inputs (two sets, swapped each hop), the frame copied into a bound buffer;
- window: re-running the last `--window` frames from a zero state at every hop (what an
  application without streaming does).
Prints p50/p99 per candidate and the ratios the README and BENCHMARKS.md quote.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="streaming export folders, or zoo:NAME to export one first")
    p.add_argument("--runs", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--window", type=int, default=100, help="frames re-run per hop by the window candidate")
    p.add_argument("--write", type=Path, help="also write the table into this markdown file's hop section "
                                              "(exported/BENCHMARKS.md: `make exported` keeps it)")
    return p.parse_args(argv)


def candidates(folder: Path, window: int):
    import onnxruntime as ort

    import rnnedge
    from rnnedge.runtime import session_options

    model = rnnedge.load(folder, "cpu", threads=1)
    m = model.manifest
    (data,) = m.data_inputs
    hop = int(m.time_stride)  # a strided model takes its chunks in multiples of its stride
    window = -(-window // hop) * hop
    frame = np.random.default_rng(0).normal(size=(1, hop, *data.shape[2:])).astype(np.float32)
    stream = model.stream(1)
    session = ort.InferenceSession(str(folder / "model.onnx"), session_options(1), providers=["CPUExecutionProvider"])
    names = [o.name for o in m.outputs]
    feeds_of = {o.name: o.feeds for o in m.state_outputs}
    state = {s.name: np.zeros((1, *s.shape[1:]), np.float32) for s in m.state_inputs}

    def run():
        out = session.run(names, {data.name: frame, **state})
        for name, value in zip(names, out):
            if name in feeds_of:
                state[feeds_of[name]] = value
        return out[0]

    values = [{n: ort.OrtValue.ortvalue_from_numpy(np.zeros((1, *s.shape[1:]), np.float32)) for n, s in
               ((s.name, s) for s in m.state_inputs)} for _ in range(2)]
    buffer = np.zeros_like(frame)
    bound_frame = ort.OrtValue.ortvalue_from_numpy(buffer)
    bindings = []
    for k in range(2):
        io = session.io_binding()
        io.bind_ortvalue_input(data.name, bound_frame)
        for s in m.state_inputs:
            io.bind_ortvalue_input(s.name, values[k][s.name])
        for o in m.outputs:
            if o.name in feeds_of:
                io.bind_ortvalue_output(o.name, values[1 - k][feeds_of[o.name]])
            else:
                io.bind_output(o.name, "cpu")
        bindings.append(io)
    turn = [0]

    def iobinding():
        buffer[...] = frame
        io = bindings[turn[0]]
        session.run_with_iobinding(io)
        turn[0] = 1 - turn[0]
        return io.get_outputs()[0].numpy()

    frames = np.random.default_rng(1).normal(size=(1, window, *data.shape[2:])).astype(np.float32)
    zeros = {s.name: np.zeros((1, *s.shape[1:]), np.float32) for s in m.state_inputs}

    def rerun_window():
        return session.run(names[:1], {data.name: frames, **zeros})[0]

    return {"push": lambda: stream.push(frame), "run": run, "iobinding": iobinding, f"window {window}": rerun_window}


def streaming_folder(source: str, scratch: Path) -> Path:
    """`source` itself, or for zoo:NAME the zoo model exported with --streaming into `scratch`."""
    if not source.startswith("zoo:"):
        return Path(source)
    from rnnedge.pipeline import export

    out = scratch / source[4:]
    export(source, out, streaming=True)
    return out


def main(argv=None) -> int:
    args = parse(argv)
    import tempfile

    import onnxruntime as ort

    from rnnedge.timing import measure, percentiles

    lines = [f"One hop per push (a frame, or the model's time stride in frames), batch 1, 1 thread, onnxruntime "
             f"{ort.__version__}; {args.runs} runs after "
             f"{args.warmup} warm-up, candidates interleaved (`tools/bench_hop.py`): `push` is "
             "`rnnedge.load(DIR).stream().push(frame)`, `iobinding` the best bare onnxruntime call of the same "
             f"graph, `window {args.window}` re-running the last {args.window} frames at every hop.", "",
             "| export | candidate | p50 us | p99 us | vs iobinding (p50) |", "|---|---|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    scratch = tempfile.TemporaryDirectory(prefix="bench-hop-")
    for source in args.folders:
        folder = streaming_folder(source, Path(scratch.name))
        calls = candidates(folder, args.window)
        timings = {n: percentiles(ms) for n, ms in measure(calls, runs=args.runs, warmup=args.warmup).items()}
        best = timings["iobinding"][0]
        rows = [f"| {folder.name} | {name} | {p50 * 1e3:.1f} | {p99 * 1e3:.1f} | {p50 / best:.2f}x |"
                for name, (p50, _, p99) in timings.items()]
        window = next(t for n, t in timings.items() if n.startswith("window"))[0]
        rows.append(f"| {folder.name} | re-run window / push (p50) | | | {window / timings['push'][0]:.1f}x |")
        print("\n".join(rows), flush=True)
        lines += rows
    if args.write:
        from rnnedge.demo import HOP_SECTION, replace_section

        text = args.write.read_text() if args.write.is_file() else ""
        args.write.write_text(replace_section(text, HOP_SECTION, "## One streaming hop\n\n" + "\n".join(lines)))
        print(f"wrote the hop section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
