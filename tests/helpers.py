"""What several test files need alike (as tf2onnx's tests share `tests/common.py`): the op counts of
an exported graph and the fused-node assertion, and the CLI invoked through Typer's runner."""

from __future__ import annotations

import collections
from pathlib import Path

import onnx
from typer.testing import CliRunner

FUSED_OPS = ("LSTM", "GRU", "RNN")
_runner = CliRunner()


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
