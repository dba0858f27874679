"""The zoo on CUDA and TensorRT: parity against Keras, placement, throughput beside Keras on the GPU.

    .venv/bin/python tools/gpu_check.py                   # or: make gpu-check
    .venv/bin/python tools/gpu_check.py --models events-gru,kws-gru --batch 1 --minutes 3

Needs onnxruntime-gpu (pip install 'rnnedge[gpu]') and an NVIDIA GPU; anywhere else it says so in
one line and exits 2. For each zoo model, batch 1 and 32: a fresh export with those shapes fixed,
`rnnedge check` on CUDA and on TensorRT (Keras' golden outputs at each provider's tolerance; the
placement onnxruntime recorded: which nodes fell back to CPU and why, e.g. hard_sigmoid, clip or
reset_after=False on CUDA), and `rnnedge bench` with CPU, CUDA, TensorRT and Keras (TensorFlow on
the GPU) interleaved in the same cases. The same code as `tools/provider_zoo.py`; no model starts
after --minutes (8 by default), so the whole run stays inside that budget plus one model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import provider_zoo  # noqa: E402 - tools/ is no package: its sibling, found by path

PROVIDERS = "cuda,tensorrt"
MINUTES = 7.0  # models start within this; the last one ends inside the 8 minutes asked for


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated zoo names (default: the whole zoo)")
    parser.add_argument("--batch", default="1,32", help="batch sizes to export and time")
    parser.add_argument("--time", type=int, default=100, help="steps fixed at export where the model leaves time free")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per case")
    parser.add_argument("--minutes", type=float, default=MINUTES, help="start no model after this long")
    parser.add_argument("--out", type=Path, default=None, help="keep the exports here")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.runs < 1 or args.time < 1:
        parser.error("--minutes must be above 0, --runs and --time at least 1")
    args.provider = PROVIDERS
    return args


def cuda_missing() -> str | None:
    """Why CUDA cannot run here, in one line; None where it can."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (f"gpu_check: onnxruntime {ort.__version__} here has no CUDA provider (it offers "
                f"{', '.join(ort.get_available_providers())}); run it on a machine with an NVIDIA GPU after "
                "pip install 'rnnedge[gpu]'")
    if not Path("/dev/nvidiactl").exists() and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return "gpu_check: onnxruntime-gpu is installed but this machine shows no NVIDIA GPU (/dev/nvidiactl)"
    return None


def main(argv=None) -> int:
    args = parse(argv)
    missing = cuda_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    started = time.monotonic()
    print(f"CPU: {provider_zoo.cpu_name()}; providers {args.provider}, batch {args.batch}", flush=True)
    rows = provider_zoo.run(args, baselines=("keras",), deadline=started + 60 * args.minutes)
    print(f"{time.monotonic() - started:.0f} s in all", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str) + "\n")
    failed = [r for r in rows if any(not c.get("passed", True) for c in r.get("checks", []))]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
