"""int8 settings measured: every candidate `rnnedge quantize` tries, on LSTM, GRU and SimpleRNN models.

    .venv/bin/python tools/bench_int8.py                    # 128 and 256 units
    .venv/bin/python tools/bench_int8.py --units 256 --cells LSTM

For each cell and width: a Keras model (x [batch, 100, 32] -> one recurrent layer -> Dense(10)),
with Keras' initial weights (`--trained` fits it for a few epochs on a toy task first), exported
by `rnnedge.export(..., quantize=["int8"])`. Inputs are drawn from N(0, 1). Prints, per candidate
setting, its error against Keras (max |diff| and as a share of the output's range, on the
export's golden cases), its size against fp32, its latency (batch 1, one thread, interleaved
with fp32), whether it is portable (no u8s8 saturation possible) and which one was kept, and why.
Also prints this CPU's int8 instruction sets, since the 8-bit setting's error depends on them.
Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
CELLS = ("LSTM", "GRU", "SimpleRNN")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", default="128,256", help="comma-separated widths")
    p.add_argument("--cells", default=",".join(CELLS))
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--trained", action="store_true", help="fit each model briefly before export")
    p.add_argument("--runs", type=int, default=300)
    return p.parse_args(argv)


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
        model = next(line for line in open("/proc/cpuinfo") if line.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        return "unknown CPU"
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{model}: {', '.join(isa) or 'no AVX2'}"


def build(cell: str, units: int, steps: int, features: int, trained: bool):
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    layer = {"LSTM": keras.layers.LSTM, "GRU": keras.layers.GRU, "SimpleRNN": keras.layers.SimpleRNN}[cell]
    x = keras.Input((None, features))
    model = keras.Model(x, keras.layers.Dense(10)(layer(units)(x)), name=f"{cell.lower()}{units}")
    if trained:
        rng = np.random.default_rng(0)
        data = rng.normal(size=(256, steps, features)).astype("float32")
        target = np.stack([data[:, :, k].mean(1) for k in range(10)], 1)
        model.compile("adam", "mse")
        model.fit(data, target, epochs=3, batch_size=32, verbose=0)
    return model


def main(argv=None) -> int:
    args = parse(argv)
    from rnnedge import export

    print(cpu_flags())
    print(f"{'model':<16} {'setting':<20} {'port.':<5} {'max|diff|':>9} {'% range':>8} {'size':>6} "
          f"{'p50 ms':>8} {'vs fp32':>7}  kept")
    for units in (int(u) for u in args.units.split(",")):
        for cell in args.cells.split(","):
            model = build(cell, units, args.steps, args.features, args.trained)
            with tempfile.TemporaryDirectory() as tmp:
                result = export(model, Path(tmp) / "m", quantize=["int8"])
                v = result.manifest.variants
                int8 = v["int8"]
                name = f"{cell}-{units}"
                print(f"{name:<16} {'fp32':<20} {'yes':<5} {0:>9.2e} {0:>7.2%} {1:>6.0%} "
                      f"{v['fp32']['latency_ms_p50']:>8.3f} {1:>6.2f}x")
                for c in int8["candidates"]:
                    err = max(c["max_abs_error"].values())
                    ratio = sorted(c["ratios"])[len(c["ratios"]) // 2]
                    kept = "<-" if c["name"] == int8["setting"]["name"] else ""
                    print(f"{name:<16} {c['name']:<20} {'yes' if c['portable'] else 'NO':<5} {err:>9.2e} "
                          f"{c['error']:>7.2%} {c['size_ratio']:>6.0%} {c['latency_ms_p50']:>8.3f} "
                          f"{ratio:>6.2f}x  {kept}")
                print(f"{'':<16} kept {int8['setting']['name']}: {int8['chosen_because']}; "
                      f"gate {'pass' if int8['gate']['passed'] else 'FAIL'}; "
                      f"recommended on CPU: {result.manifest.recommended['CPUExecutionProvider']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
