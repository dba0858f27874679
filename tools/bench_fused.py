"""Fused recurrent nodes (rnnedge) against the plain tf2onnx graph and Keras, on the same models.

    .venv/bin/python tools/bench_fused.py                  # 128 units
    .venv/bin/python tools/bench_fused.py --units 256 --int8
    .venv/bin/python tools/bench_fused.py --frontend conv2d     # Conv2D(8, 3x3) before the layer

For each cell (LSTM, GRU, SimpleRNN): one Keras model, batch 1, 100 steps, 32 features, one
recurrent layer returning its last output (with --frontend conv2d, the input is [batch, 100, 32, 1]
and a 3x3 Conv2D with 8 filters runs first, reshaped into 100 steps of 256 features: rnnedge
converts the Conv2D itself and fuses the recurrent layer). It is exported twice, by
`rnnedge.exporter.convert` (one fused LSTM/GRU/RNN node) and by `rnnedge.exporter.tf2onnx_export`
(tf2onnx: a `Loop` for GRU and SimpleRNN, a fused LSTM), and both run in onnxruntime with one
thread; Keras runs under
`tf.function` with one TensorFlow thread; LiteRT runs the Keras model as TensorFlow Lite's
converter writes it for these fixed shapes (`rnnedge.bench.baselines.litert_export`), in its interpreter
with one thread and XNNPACK. With --int8 the fused model's int8 variant
(`rnnedge.quantize.quantize_file`) is timed too, beside LiteRT's dynamic-range int8
("litert-int8"). Every candidate of every cell is interleaved in one process
(`rnnedge.timing.measure`): each round calls all of them once in a shuffled order.

Prints p50/p90 per candidate, the ratios, the op counts of both graphs, the max |diff| against
Keras, and a markdown table for the README. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CELLS = ("LSTM", "GRU", "SimpleRNN")
# What the issue expects (ratios of p50), printed beside the figures, never asserted: at 128 units
# fused GRU/SimpleRNN >= 4x faster than tf2onnx, LSTM no slower (0.95: within 5% noise), every
# cell >= 6x faster than Keras; at 256 units the int8 LSTM >= 1.5x faster than fp32.
TARGETS = {"tf2onnx": {"LSTM": 0.95, "GRU": 4.0, "SimpleRNN": 4.0}, "keras": 6.0, "int8_lstm": 1.5}
TARGET_UNITS = {"tf2onnx": 128, "keras": 128, "int8_lstm": 256}
# With --frontend conv2d (the recurrent layer doing most of the work): GRU >= 3x tf2onnx, LSTM no slower.
CONV_TARGETS = {"LSTM": 0.95, "GRU": 3.0}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=128)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--cells", default=",".join(CELLS), help="comma-separated: LSTM,GRU,SimpleRNN")
    p.add_argument("--int8", action="store_true", help="also time the int8 variant of the fused model")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frontend", choices=("none", "conv2d"), default="none",
                   help="conv2d: a 3x3 Conv2D with 8 filters over [time, features, 1] before the layer")
    return p.parse_args(argv)


def graph_summary(model) -> str:
    """'1 GRU, 4 nodes' / '1 Loop (body 38 nodes), 21 nodes': recurrent ops and node counts."""
    nodes = model.graph.node
    ops = Counter(n.op_type for n in nodes)
    parts = []
    for op in ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM", "Conv", "Loop", "Scan"):
        if ops[op]:
            text = f"{ops[op]} {op}"
            if op in ("Loop", "Scan"):
                body = sum(len(a.g.node) for n in nodes if n.op_type == op for a in n.attribute if a.name == "body")
                text += f" (body {body} nodes)"
            parts.append(text)
    return ", ".join(parts + [f"{len(nodes)} nodes"])


def build(cell: str, args):
    import keras

    layer = {"LSTM": keras.layers.LSTM, "GRU": keras.layers.GRU, "SimpleRNN": keras.layers.SimpleRNN}[cell]
    if args.frontend == "conv2d":
        x = keras.Input((None, args.features, 1), name="x")
        h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
        h = keras.layers.Reshape((-1, args.features * 8), name="steps")(h)
        return keras.Model(x, layer(args.units, name=cell.lower())(h), name=f"bench_conv_{cell.lower()}")
    x = keras.Input((None, args.features), name="x")
    return keras.Model(x, layer(args.units, name=cell.lower())(x), name=f"bench_{cell.lower()}")


def main(argv=None) -> int:
    args = parse(argv)
    import numpy as np
    import onnx
    import onnxruntime as ort
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    from rnnedge.bench.baselines import litert_call, litert_export, litert_interpreter
    from rnnedge.exporter import tf2onnx_export
    from rnnedge.exporter.convert import convert
    from rnnedge.logs import quiet_native_stderr
    from rnnedge.quantize import quantize_file
    from rnnedge.runtime import session_options
    from rnnedge.timing import measure, percentiles

    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        sys.exit(f"unknown cell {unknown[0]!r}: expected {', '.join(CELLS)}")
    keras.utils.set_random_seed(args.seed)
    shape = (1, args.steps, args.features) + ((1,) if args.frontend == "conv2d" else ())
    x = np.random.default_rng(args.seed).normal(0, 1, shape).astype(np.float32)
    so = session_options(1)
    calls, facts = {}, {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-fused-"))
    for cell in cells:
        model = build(cell, args)
        fused = convert(model).onnx_model
        plain = tf2onnx_export(model)
        fused_path, plain_path = tmp / f"{cell}.fused.onnx", tmp / f"{cell}.tf2onnx.onnx"
        onnx.save(fused, fused_path)
        onnx.save(plain, plain_path)
        sessions = {"fused": ort.InferenceSession(str(fused_path), so, providers=["CPUExecutionProvider"]),
                    "tf2onnx": ort.InferenceSession(str(plain_path), so, providers=["CPUExecutionProvider"])}
        info = {"fused graph": graph_summary(fused), "tf2onnx graph": graph_summary(plain),
                "fp32 size": fused_path.stat().st_size}
        if args.int8:
            q = tmp / f"{cell}.int8.onnx"
            quantize_file(fused_path, q, "int8")
            sessions["int8"] = ort.InferenceSession(str(q), so, providers=["CPUExecutionProvider"])
            info["int8 size"] = q.stat().st_size
            info["int8 graph"] = graph_summary(onnx.load(q))
        fn = tf.function(lambda t, m=model: m(t, training=False), jit_compile=False, reduce_retracing=True)
        xt = tf.constant(x)
        truth = fn(xt).numpy()
        for name, s in sessions.items():
            feeds = {s.get_inputs()[0].name: x}
            info[f"{name} diff"] = float(np.abs(s.run(None, feeds)[0] - truth).max())
            calls[f"{cell}/{name}"] = lambda s=s, feeds=feeds: s.run(None, feeds)
        calls[f"{cell}/keras"] = lambda fn=fn, xt=xt: fn(xt).numpy()
        for name in ("litert", "litert-int8") if args.int8 else ("litert",):
            with quiet_native_stderr():
                lite = litert_interpreter(litert_export(model, [x.shape], int8=name == "litert-int8"), threads=1)
            litert = litert_call(lite, {"x": x})
            info[f"{name} diff"] = float(np.abs(litert()[0] - truth).max())
            calls[f"{cell}/{name}"] = litert
        facts[cell] = info

    print(f"batch 1, {args.steps} steps, {args.features} features, {args.units} units; onnxruntime "
          f"{ort.__version__} and TensorFlow {tf.__version__} on 1 thread; {args.runs} runs after "
          f"{args.warmup} warm-up, {len(calls)} candidates interleaved", flush=True)
    ms = measure(calls, runs=args.runs, warmup=args.warmup, seed=args.seed)
    p = {k: percentiles(v) for k, v in ms.items()}

    rows = []
    for cell in cells:
        f = facts[cell]
        p50 = {k.split("/")[1]: v[0] for k, v in p.items() if k.startswith(cell + "/")}
        p90 = {k.split("/")[1]: v[1] for k, v in p.items() if k.startswith(cell + "/")}
        r_plain, r_keras = p50["tf2onnx"] / p50["fused"], p50["keras"] / p50["fused"]
        r_lite = p50["litert"] / p50["fused"]
        print(f"\n{cell}")
        for name in p50:
            diff = f"  max|diff| vs Keras {f[name + ' diff']:.1e}" if name != "keras" else ""
            print(f"  {name:<8} p50 {p50[name]:7.3f} ms  p90 {p90[name]:7.3f} ms{diff}")
        def verdict(key: str, ratio: float, target: float) -> str:
            if args.units != TARGET_UNITS[key]:
                return ""
            return f"   (target >= {target:g}x at {args.units} units: {'met' if ratio >= target else 'NOT met'})"

        plain_target = (CONV_TARGETS if args.frontend == "conv2d" else TARGETS["tf2onnx"]).get(cell)
        print(f"  tf2onnx / fused {r_plain:5.2f}x"
              + (verdict("tf2onnx", r_plain, plain_target) if plain_target else ""))
        print(f"  keras / fused   {r_keras:5.2f}x{verdict('keras', r_keras, TARGETS['keras'])}")
        print(f"  litert / fused  {r_lite:5.2f}x")
        row = {"cell": cell, "fused": p50["fused"], "tf2onnx": p50["tf2onnx"], "r_plain": r_plain,
               "keras": p50["keras"], "r_keras": r_keras, "litert": p50["litert"], "r_lite": r_lite,
               "fused graph": f["fused graph"],
               "tf2onnx graph": f["tf2onnx graph"]}
        if args.int8:
            r_int8, size = p50["fused"] / p50["int8"], f["int8 size"] / f["fp32 size"]
            target = verdict("int8_lstm", r_int8, TARGETS["int8_lstm"])
            print(f"  litert-int8 / int8 {p50['litert-int8'] / p50['int8']:5.2f}x")
            print(f"  fp32 / int8     {r_int8:5.2f}x   int8 size / fp32 {size:.2f} "
                  f"({f['int8 size'] / 1024:.0f} KB / {f['fp32 size'] / 1024:.0f} KB)"
                  + (target if cell == "LSTM" else "   (weight-only int8: computed in float)"))
            row.update({"int8": p50["int8"], "r_int8": r_int8, "size": size, "int8 graph": f["int8 graph"],
                        "litert-int8": p50["litert-int8"], "r_lite8": p50["litert-int8"] / p50["int8"]})
        print(f"  graphs: fused {f['fused graph']}; tf2onnx {f['tf2onnx graph']}"
              + (f"; int8 {f['int8 graph']}" if args.int8 else ""))
        rows.append(row)

    print(f"\n{markdown(rows, args)}")
    return 0


def markdown(rows: list[dict], args) -> str:
    head = ["cell", "units", "fused p50", "tf2onnx p50", "tf2onnx / fused", "Keras p50", "Keras / fused",
            "LiteRT p50", "LiteRT / fused"]
    if args.int8:
        head += ["int8 p50", "fp32 / int8", "int8 size", "LiteRT int8 p50", "LiteRT int8 / int8"]
    head += ["fused graph", "tf2onnx graph"]
    lines = [f"Batch 1, {args.steps} steps, {args.features} features, 1 thread, p50 of {args.runs} interleaved runs.",
             "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 3) + "---|---|"]
    for r in rows:
        cells = [r["cell"], str(args.units), f"{r['fused']:.3f} ms", f"{r['tf2onnx']:.3f} ms", f"{r['r_plain']:.2f}x",
                 f"{r['keras']:.2f} ms", f"{r['r_keras']:.1f}x", f"{r['litert']:.3f} ms", f"{r['r_lite']:.1f}x"]
        if args.int8:
            cells += [f"{r['int8']:.3f} ms", f"{r['r_int8']:.2f}x", f"{r['size']:.2f}x", f"{r['litert-int8']:.3f} ms",
                      f"{r['r_lite8']:.2f}x"]
        cells += [r["fused graph"], r["tf2onnx graph"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
