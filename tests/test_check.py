"""check.compare: names, then shapes, then values, every failure collected; per-output tolerances."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rnnedge.check import ParityReport, Tolerance, compare, read_golden, tolerance_for, write_golden
from rnnedge.errors import RnnEdgeError


def test_values_within_atol_plus_rtol_pass_and_beyond_fail():
    want = {"y": np.array([1.0, -2.0, 0.0], np.float32)}
    ok = compare("c", want, {"y": want["y"] + np.array([5e-6, -1e-4, 5e-6], np.float32)}, Tolerance(1e-5, 5e-5))
    assert ok and ok.outputs[0].max_abs == pytest.approx(1e-4, rel=1e-2)  # float32 rounding
    bad = compare("c", want, {"y": want["y"] + 1e-3}, Tolerance(1e-5, 1e-4))
    assert not bad and not bad.outputs[0].passed and bad.outputs[0].max_rel > 1e-4


def test_missing_outputs_and_wrong_shapes_are_named_and_collected():
    want = {"y": np.zeros((2, 3)), "h": np.zeros((2, 4)), "c": np.zeros(2)}
    result = compare("case", want, {"y": np.zeros((2, 3, 1)), "c": np.zeros(2)})
    problems = {o.name: o.problem for o in result.outputs}
    assert problems == {"y": "has shape (2, 3, 1), Keras gives (2, 3)", "h": "is missing from the ONNX outputs",
                        "c": ""}
    report = ParityReport("CPUExecutionProvider", (result,))
    assert not report and [f.split(": ")[1].split()[0] for f in report.failures()] == ["y", "h"]


def test_nan_only_where_keras_has_nan():
    want = {"y": np.array([np.nan, 1.0])}
    assert compare("c", want, {"y": np.array([np.nan, 1.0])})
    wrong = compare("c", want, {"y": np.array([1.0, np.nan])})
    assert not wrong and "NaN or infinity" in wrong.outputs[0].problem


def test_per_output_overrides_and_the_default():
    default, loose = Tolerance(), Tolerance(0.1, 0.0)
    assert tolerance_for("h", default, {"h": (0.1, 0.0)}) == loose
    assert tolerance_for("y", default, {"h": loose}) is default
    want = {"y": np.zeros(3), "h": np.zeros(3)}
    result = compare("c", want, {"y": np.zeros(3), "h": np.full(3, 0.05)}, default, {"h": (0.1, 0.0)})
    assert result and {o.name: o.atol for o in result.outputs} == {"y": 1e-5, "h": 0.1}


def test_negative_tolerances_are_refused():
    with pytest.raises(RnnEdgeError, match="tolerances must be finite numbers >= 0"):
        Tolerance(-1e-5, 1e-4)


def test_an_empty_report_does_not_pass():
    assert not ParityReport("CPUExecutionProvider", ())


def test_report_serialises_with_pass_marks():
    case = compare("c", {"y": np.ones(2)}, {"y": np.ones(2)})
    d = ParityReport("CPUExecutionProvider", (case,)).to_dict()
    assert d["passed"] and d["cases"][0]["passed"] and d["worst_abs"] == 0.0
    json.dumps(d)


def test_golden_round_trip_keeps_case_names_and_order(tmp_path):
    cases = [(f"case {i}", {"x": np.full((1, 2), i, np.float32)}, {"y": np.full(1, i, np.float32)}) for i in range(12)]
    write_golden(tmp_path, cases)
    back = read_golden(tmp_path)
    assert [c[0] for c in back] == [c[0] for c in cases]  # case10 after case9, not after case1
    np.testing.assert_array_equal(back[11][1]["x"], cases[11][1]["x"])
    with pytest.raises(RnnEdgeError, match="has no golden.npz"):
        read_golden(tmp_path / "elsewhere")
