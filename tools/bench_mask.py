"""What exact masks cost: a masked export against the same model unmasked, in onnxruntime.

    .venv/bin/python tools/bench_mask.py                  # 128 units, 100 steps, 25 padded in front
    .venv/bin/python tools/bench_mask.py --cells GRU --pad 0

For each cell (LSTM, GRU, SimpleRNN): one recurrent layer (batch 1, 32 features, last output),
exported by `rnnedge.exporter.convert` three ways with the same weights:

- unmasked: the layer alone, fed all steps;
- masking: behind `Masking(0.0)`, fed a row whose first --pad steps are padding (the front
  padding `keras.utils.pad_sequences` writes by default);
- mask input: the layer called with an explicit bool mask input, the same row and mask.

A masked export compacts each row's valid steps to the front (TopK + GatherND), runs the fused node
with sequence_lens, and gathers Keras' per-step outputs back; "--pad 0" times that overhead with
every step valid (the fused node then does the same work as unmasked). All candidates run on one
onnxruntime thread, interleaved in one process (`rnnedge.timing.measure`). Prints p50/p90, the
ratio to unmasked (the target: masked front-padded within 1.15x of unmasked), the node counts and
the max |diff| against Keras. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CELLS = ("LSTM", "GRU", "SimpleRNN")
TARGET = 1.15  # masked p50 / unmasked p50, printed beside the figures


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=128)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--pad", type=int, default=25, help="padding steps at the front of the row")
    p.add_argument("--cells", default=",".join(CELLS), help="comma-separated: LSTM,GRU,SimpleRNN")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if not 0 <= args.pad < args.steps:
        sys.exit(f"--pad must be in [0, {args.steps}), got {args.pad}")
    import keras
    import numpy as np
    import onnxruntime as ort

    from rnnedge.bench import measure, percentiles, session_options
    from rnnedge.exporter.convert import convert

    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        sys.exit(f"unknown cell {unknown[0]!r}: expected {', '.join(CELLS)}")
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x = rng.normal(0, 1, (1, args.steps, args.features)).astype(np.float32)
    mask = np.ones((1, args.steps), bool)
    mask[:, : args.pad] = False
    x_padded = np.where(mask[..., None], x, 0).astype(np.float32)
    so = session_options(1)
    calls, facts = {}, {}
    for cell in cells:
        Layer = getattr(keras.layers, cell)
        rnn = Layer(args.units, name=cell.lower())
        inp = keras.Input((None, args.features), name="x")
        m = keras.Input((None,), dtype="bool", name="m")
        models = {
            "unmasked": (keras.Model(inp, rnn(inp)), {"x": x}),
            "masking": (keras.Model(inp, rnn(keras.layers.Masking(0.0)(inp))), {"x": x_padded}),
            "mask input": (keras.Model([inp, m], rnn(inp, mask=m)), {"x": x, "m": mask}),
        }
        for name, (model, feeds) in models.items():
            proto = convert(model).onnx_model
            s = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
            given = [feeds[k] for k in ("x", "m") if k in feeds]
            truth = np.asarray(model(given if len(given) > 1 else given[0], training=False))
            facts[f"{cell}/{name}"] = (len(proto.graph.node), float(np.abs(s.run(None, feeds)[0] - truth).max()))
            calls[f"{cell}/{name}"] = lambda s=s, feeds=feeds: s.run(None, feeds)

    print(f"batch 1, {args.steps} steps ({args.pad} padded at the front in the masked rows), {args.features} "
          f"features, {args.units} units; onnxruntime {ort.__version__} on 1 thread; {args.runs} runs after "
          f"{args.warmup} warm-up, {len(calls)} candidates interleaved", flush=True)
    ms = measure(calls, runs=args.runs, warmup=args.warmup, seed=args.seed)
    p = {k: percentiles(v) for k, v in ms.items()}
    for cell in cells:
        base = p[f"{cell}/unmasked"][0]
        print(f"\n{cell}")
        for name in ("unmasked", "masking", "mask input"):
            key = f"{cell}/{name}"
            nodes, diff = facts[key]
            ratio = p[key][0] / base
            verdict = "" if name == "unmasked" else (f"  {ratio:4.2f}x unmasked "
                                                     f"({'met' if ratio <= TARGET else 'NOT met'}: <= {TARGET}x)")
            print(f"  {name:<10} p50 {p[key][0]:7.3f} ms  p90 {p[key][1]:7.3f} ms  {nodes:3d} nodes  "
                  f"max|diff| vs Keras {diff:.1e}{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
