"""Import-to-first-result time of the runtime, in a fresh process each run.

    .venv/bin/python tools/bench_import.py [DIR] [--runs 10] [--provider cpu]

Each run starts a new Python that does `import rnnedge; m = rnnedge.load(DIR); m.run(x)` and
reports how long each phase took (perf_counter inside the child; the import of numpy and
onnxruntime that `load` triggers is shown on its own), plus the wall time of the whole process
seen from here (interpreter start-up included). Also says whether TensorFlow,
Keras or onnx were imported along the way (the runtime needs numpy and onnxruntime only).

DIR defaults to the first folder under exported/ holding a manifest.json; with none there, a
tiny GRU model is exported to a temporary folder (needs TensorFlow, in this process only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time, json
t0 = time.perf_counter()
import rnnedge
t1 = time.perf_counter()
import rnnedge.runtime  # what rnnedge.load imports first: numpy, onnxruntime
t1b = time.perf_counter()
m = rnnedge.load(sys.argv[1], sys.argv[2])
t2 = time.perf_counter()
import numpy as np
with np.load(sys.argv[3]) as z:
    x = {k: z[k] for k in z.files}
t3 = time.perf_counter()
out = m.run(**x)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "runtime": t1b - t1, "load": t2 - t1b, "run": t4 - t3,
                  "total": (t4 - t0) - (t3 - t2),
                  "imported": [k for k in ("tensorflow", "keras", "tf2onnx", "onnx") if k in sys.modules],
                  "provider": m.provider}))
"""


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", type=Path, default=None, help="an export folder (default: see above)")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--provider", default="auto")
    p.add_argument("--time", type=int, default=None, help="steps in the input (default: 100 or the fixed axis)")
    return p.parse_args(argv)


def find_folder() -> Path | None:
    root = REPO / "exported"
    found = sorted(p.parent for p in root.glob("*/manifest.json")) if root.is_dir() else []
    return found[0] if found else None


def tiny_export(folder: Path) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from rnnedge.pipeline import export

    x = keras.Input((None, 8), name="x")
    model = keras.Model(x, keras.layers.Dense(2)(keras.layers.GRU(16)(x)), name="tiny_gru")
    export(model, folder)
    return folder


def main(argv=None) -> int:
    args = parse(argv)
    import numpy as np

    from rnnedge.bench import cases_for, random_inputs
    from rnnedge.manifest import Manifest

    tmp = tempfile.TemporaryDirectory(prefix="bench-import-")
    folder = args.folder or find_folder()
    if folder is None:
        print("no export under exported/: exporting a tiny GRU model to a temporary folder", flush=True)
        folder = tiny_export(Path(tmp.name) / "tiny")
    manifest = Manifest.load(folder)
    batch, steps = cases_for(manifest, None, None if args.time is None else (args.time,), False)[0]
    feeds = random_inputs(manifest, batch, steps)
    x = Path(tmp.name) / "x.npz"
    np.savez(x, **{s.name: feeds[s.name] for s in manifest.data_inputs})

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    phases: dict[str, list[float]] = {k: [] for k in ("import", "runtime", "load", "run", "total", "process")}
    last = {}
    for _ in range(args.runs):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHILD, str(folder), args.provider, str(x)],
                              capture_output=True, text=True, env=env, cwd=tmp.name)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        last = json.loads(done.stdout.strip().splitlines()[-1])
        for k in ("import", "runtime", "load", "run", "total"):
            phases[k].append(last[k])
        phases["process"].append(wall)
    tmp.cleanup()

    print(f"{folder} (batch {batch}, {steps} steps) on {last['provider']}; {args.runs} fresh processes, "
          f"{sys.executable}")
    for name, label in [("import", "import rnnedge"), ("runtime", "import rnnedge.runtime (numpy, onnxruntime)"),
                        ("load", "rnnedge.load (manifest, session)"),
                        ("run", "first m.run(x)"), ("total", "import to first result"),
                        ("process", "whole process (interpreter start included)")]:
        v = np.asarray(phases[name]) * 1e3
        print(f"  {label:<44} p50 {np.percentile(v, 50):7.1f} ms   min {v.min():7.1f} ms   max {v.max():7.1f} ms")
    heavy = last["imported"]
    print(f"  imported along the way: {', '.join(heavy) if heavy else 'no tensorflow, keras, tf2onnx or onnx'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
