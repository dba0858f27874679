"""What several test files need alike (as tf2onnx's tests share `tests/common.py`): the op counts of
an exported graph and the fused-node assertion, the CLI invoked through Typer's runner, and code run
in a Python where TensorFlow cannot be imported."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import onnx
from typer.testing import CliRunner

from tests.blocking import BLOCK_TENSORFLOW

FUSED_OPS = ("LSTM", "GRU", "RNN")
_runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def op_counts(model: str | Path | onnx.ModelProto) -> collections.Counter:
    """op type -> nodes of it in the main graph of an ONNX file (or a loaded model)."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    return collections.Counter(n.op_type for n in proto.graph.node)


def assert_fused(model, expected: dict[str, int]) -> collections.Counter:
    """Exactly `expected` fused recurrent nodes per op type (LSTM, GRU, RNN; 0 where unnamed), no Loop,
    and exactly `expected["Scan"]` rnnedge-built Scans (0 where unnamed). Returns the op counts."""
    ops = op_counts(model)
    for op in FUSED_OPS:
        assert ops.get(op, 0) == expected.get(op, 0), f"{op}: {ops.get(op, 0)} nodes, expected {expected.get(op, 0)}"
    assert ops.get("Loop", 0) == 0 and ops.get("Scan", 0) == expected.get("Scan", 0), ops
    return ops


def invoke(*args):
    """`rnnedge ARGS...` through Typer's runner (in process); paths may be Path objects."""
    from rnnedge.cli import app

    return _runner.invoke(app, [str(a) for a in args])


def run_without_tensorflow(code: str, *, also: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run `code` in a new Python where TensorFlow, Keras, tf2onnx and tf_keras (and the top-level
    modules `also` names, e.g. matplotlib) cannot be imported, as on a runtime-only install. After
    `code`, it checks that none of them was imported and prints "ok": a test asserts
    `done.returncode == 0 and "ok" in done.stdout`."""
    block = BLOCK_TENSORFLOW.replace("'tf_keras'}", "'tf_keras'" + "".join(f", {m!r}" for m in also) + "}")
    assert all(m in block for m in also), "BLOCK_TENSORFLOW no longer ends its set with 'tf_keras'"
    check = ("\nassert not [k for k in sys.modules if k.split('.')[0] in BLOCKED], 'a blocked module loaded'\n"
             "print('ok')\n")
    return subprocess.run([sys.executable, "-c", block + code + check], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)


def tiny_gru_exports(base: Path, time: int | None = None) -> dict[str, Path]:
    """A tiny untrained GRU saved as base/m.keras ("keras", `time` steps or any) and exported through the
    CLI as it is ("plain") and with --streaming ("streaming")."""
    import keras
    from keras import layers as L

    from tests.kmodels import functional, seq_input

    keras.utils.set_random_seed(0)
    x = seq_input(3, time=time)
    functional(x, L.Dense(2)(L.GRU(4, return_sequences=True)(x)), "m").save(base / "m.keras")
    found = {"keras": base / "m.keras"}
    for name, extra in (("plain", ()), ("streaming", ("--streaming",))):
        result = invoke("export", base / "m.keras", "--out", base / name, *extra)
        assert result.exit_code == 0, result.output
        found[name] = base / name
    return found
