"""The int8 setting chosen by measurement, the accuracy gates and the recommendation rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from rnnedge.quantize import gate
from rnnedge.quantize.folder import recommend

EXPORTED = Path(__file__).resolve().parent.parent / "exported"


def _rows(n=50, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(classes), size=n).astype(np.float32)


def test_golden_gate_passes_within_two_percent_of_range_and_fails_beyond():
    e = np.linspace(-1.0, 1.0, 101, dtype=np.float32)  # range 2: limit 0.04
    ok = gate.golden_gate([({"y": e}, {"y": e + 0.039})], {})
    bad = gate.golden_gate([({"y": e}, {"y": e + 0.041})], {})
    assert ok["passed"] and ok["outputs"]["y"]["limit"] == pytest.approx(0.04)
    assert not bad["passed"] and bad["outputs"]["y"]["share_of_range"] == pytest.approx(0.0205, abs=1e-4)


def test_golden_gate_ranges_span_every_case():
    small, large = np.zeros(4, np.float32), np.array([0.0, 10.0], np.float32)
    result = gate.golden_gate([({"y": small}, {"y": small + 0.1}), ({"y": large}, {"y": large})], {})
    assert result["outputs"]["y"]["range"] == 10.0 and result["passed"]


def test_golden_gate_refuses_nan_where_keras_has_none():
    e = np.linspace(0, 1, 10, dtype=np.float32)
    a = e.copy()
    a[3] = np.nan
    assert not gate.golden_gate([({"y": e}, {"y": a})], {})["passed"]


def test_softmax_decisions_must_agree_on_99_percent_of_rows():
    probs = _rows(200)
    swapped = probs.copy()
    # two rows whose top class changes by a hair (within the range rule): 99% still agree
    for row in (0, 1):
        top, second = np.argsort(probs[row])[-1], np.argsort(probs[row])[-2]
        swapped[row, [top, second]] = probs[row, second], probs[row, top]
    gap = float(np.abs(swapped - probs).max())
    kinds = {"p": "softmax"}
    two = gate.golden_gate([({"p": probs}, {"p": swapped})], kinds)
    assert two["outputs"]["p"]["decisions"] == pytest.approx(0.99)
    assert two["outputs"]["p"]["passed"] == (gap <= two["outputs"]["p"]["limit"])
    for row in range(2, 6):  # 6 rows of 200 flipped: 97%
        top, second = np.argsort(probs[row])[-1], np.argsort(probs[row])[-2]
        swapped[row, [top, second]] = probs[row, second], probs[row, top]
    six = gate.golden_gate([({"p": probs}, {"p": swapped})], kinds)
    assert six["outputs"]["p"]["decisions"] == pytest.approx(0.97) and not six["passed"]


def test_sigmoid_decisions_count_each_value():
    e = np.array([[0.2, 0.8], [0.49, 0.9]], np.float32)
    a = np.array([[0.2, 0.8], [0.51, 0.9]], np.float32)
    result = gate.golden_gate([({"s": e}, {"s": a})], {"s": "sigmoid"})
    assert result["outputs"]["s"]["decisions"] == 0.75 and not result["passed"]


def test_the_range_is_kerass_not_the_variants():
    """A variant that stretches its outputs by 4.1% is off by 2.05% of Keras' range (fail), but by
    only 1.97% of its own, stretched one: the bound must come from the golden outputs."""
    e = np.linspace(-1.0, 1.0, 101, dtype=np.float32)
    result = gate.golden_gate([({"y": e}, {"y": e * np.float32(1.041)})], {})
    assert (result["outputs"]["y"]["range"] == pytest.approx(2.0)
            and result["outputs"]["y"]["limit"] == pytest.approx(0.04))
    assert not result["passed"] and not result["outputs"]["y"]["passed"]


def _near_ties(flipped: int, rows: int = 200):
    """Keras' softmax rows, and a variant's, which swaps the top two classes of the first `flipped`
    rows; there the two differ by 0.004, far within the range rule (2% of a range near 1)."""
    probs = _rows(rows)
    variant = probs.copy()
    for row in range(flipped):
        top, second = np.argsort(probs[row])[::-1][:2]
        mid = (probs[row, top] + probs[row, second]) / 2
        probs[row, top], probs[row, second] = mid + 0.002, mid - 0.002
        variant[row, top], variant[row, second] = mid - 0.002, mid + 0.002
    return probs, variant


@pytest.mark.parametrize("flipped, passed", [(2, True), (3, False), (6, False)])
def test_softmax_decision_rule_decides_where_the_range_rule_passes(flipped, passed):
    probs, variant = _near_ties(flipped)
    p = gate.golden_gate([({"p": probs}, {"p": variant})], {"p": "softmax"})["outputs"]["p"]
    assert p["max_abs"] <= p["limit"] / 4  # the range rule passes by far: only the decisions decide
    assert p["decisions"] == pytest.approx(1 - flipped / 200)
    assert p["passed"] is passed  # 99% of rows (198 of 200) pass; 197 do not


def test_sigmoid_decision_rule_decides_where_the_range_rule_passes():
    e = np.linspace(0.0, 1.0, 201, dtype=np.float32).reshape(-1, 1)
    a = e.copy()
    a[(e >= 0.49) & (e <= 0.5)] += 0.011  # 0.49, 0.495, 0.5 cross 0.5: 3 of 201 values
    s = gate.golden_gate([({"s": e}, {"s": a})], {"s": "sigmoid"})["outputs"]["s"]
    assert s["max_abs"] <= s["limit"] and s["decisions"] == pytest.approx(198 / 201) and not s["passed"]


def test_the_range_rule_decides_where_every_decision_agrees():
    """Probabilities pushed away from Keras' but never across a decision: the range rule alone fails them."""
    probs = _rows(200)
    sharper = probs.copy()
    sharper[np.arange(200), probs.argmax(-1)] += 0.05
    p = gate.golden_gate([({"p": probs}, {"p": sharper})], {"p": "softmax"})["outputs"]["p"]
    assert p["decisions"] == 1.0 and p["max_abs"] > p["limit"] and not p["passed"]
    e = np.linspace(0.0, 1.0, 201, dtype=np.float32)
    squeezed = 0.5 + (e - 0.5) * np.float32(0.9)  # 0.5 stays 0.5: the same side of it everywhere
    s = gate.golden_gate([({"s": e}, {"s": squeezed})], {"s": "sigmoid"})["outputs"]["s"]
    assert s["decisions"] == 1.0 and s["max_abs"] > s["limit"] and not s["passed"]


def test_output_kinds_follow_reshapes_back_to_softmax_and_sigmoid():
    n = helper.make_node
    graph = helper.make_graph(
        [n("Softmax", ["x"], ["p0"]), n("Identity", ["p0"], ["p"]), n("Sigmoid", ["x"], ["s0"]),
         n("Flatten", ["s0"], ["s"]), n("Relu", ["x"], ["r"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in ("p", "s", "r")])
    assert gate.output_kinds(helper.make_model(graph)) == {"p": "softmax", "s": "sigmoid"}


def test_task_gate():
    assert gate.task_gate("accuracy", 0.95, 0.941)["passed"]
    assert not gate.task_gate("accuracy", 0.95, 0.939)["passed"]
    assert gate.task_gate("rmse", 10.0, 10.4)["passed"]
    assert not gate.task_gate("rmse", 10.0, 10.6)["passed"]


def test_timing_noise_does_not_make_a_variant_faster():
    rng = np.random.default_rng(0)
    fp32 = rng.normal(0.26, 0.01, 500)
    same = rng.normal(0.26, 0.01, 500)  # 0.2594 ms against 0.2601 ms, as an export once reported
    assert not gate.faster_than(gate.round_ratios(fp32, same))
    faster = rng.normal(0.20, 0.01, 500)
    assert gate.faster_than(gate.round_ratios(fp32, faster))
    # faster on average, but slower in one round: not supported by every round
    mixed = np.concatenate([rng.normal(0.20, 0.005, 400), rng.normal(0.30, 0.005, 100)])
    assert not gate.faster_than(gate.round_ratios(fp32, mixed))


def _variant(passed, ratios):
    return {"gate": {"passed": passed}, "speedup_rounds": ratios}


def test_recommend_needs_the_gate_and_a_supported_speedup():
    fp32 = {"gate": {"passed": True}}
    assert recommend({"fp32": fp32, "int8": _variant(True, [1.5] * 5)})["CPUExecutionProvider"] == "int8"
    assert recommend({"fp32": fp32, "int8": _variant(False, [1.5] * 5)})["CPUExecutionProvider"] == "fp32"
    assert recommend({"fp32": fp32, "int8": _variant(True, [1.003] * 5)})["CPUExecutionProvider"] == "fp32"
    both = recommend({"fp32": fp32, "int8": _variant(True, [1.2] * 5), "fp16": _variant(True, [0.9] * 5)})
    assert both == {"CPUExecutionProvider": "int8", "CUDAExecutionProvider": "fp16",
                    "TensorrtExecutionProvider": "fp16"}


def _candidate(name, *, portable=True, passed=True, size=10, error=0.01, ratio=1.0):
    return {"name": name, "portable": portable, "passed": passed, "size": size, "error": error, "ratios": [ratio] * 5}


def test_choose_int8_never_keeps_a_setting_that_can_saturate():
    chosen, why = gate.choose_int8([_candidate("dynamic-8bit", portable=False, ratio=3.0, error=0.001),
                                    _candidate("dynamic-7bit", ratio=2.8, error=0.005),
                                    _candidate("weight-only", ratio=1.0, error=0.001)], fp32_size=40)
    assert chosen == "dynamic-7bit" and "dynamic-8bit not considered" in why


def test_choose_int8_prefers_accuracy_among_the_equally_fast():
    chosen, _ = gate.choose_int8([_candidate("a", ratio=2.9, error=0.009), _candidate("b", ratio=2.8, error=0.004),
                                  _candidate("c", ratio=1.0, error=0.001)], fp32_size=40)
    assert chosen == "b"  # within 10% of the fastest, and more accurate


def test_choose_int8_skips_slower_larger_and_failing_settings():
    chosen, _ = gate.choose_int8([_candidate("slow", ratio=0.7, error=0.001), _candidate("big", size=50, ratio=2.0),
                                  _candidate("bad", passed=False, ratio=3.0), _candidate("ok", ratio=1.0, error=0.003)],
                                 fp32_size=40)
    assert chosen == "ok"
    chosen, why = gate.choose_int8([_candidate("x", passed=False, error=0.2), _candidate("y", passed=False, error=0.1)],
                                   fp32_size=40)
    assert chosen == "y" and "kept the most accurate" in why


def test_choose_int8_keeps_nothing_when_no_portable_setting_is_smaller_than_fp32():
    candidates = [_candidate("dynamic-7bit", size=45, ratio=2.0), _candidate("weight-only", size=40, error=0.001),
                  _candidate("dynamic-8bit", portable=False, size=30)]
    chosen, why = gate.choose_int8(candidates, fp32_size=40)
    assert chosen is None
    assert why.startswith("no int8 variant kept: no portable setting is smaller than fp32's 40 bytes"), why
    assert "weight-only 40, dynamic-7bit 45" in why  # each size, smallest first; the 8-bit one never counts
    # a failing but smaller setting is kept before a passing bigger one (its gate says FAIL)
    chosen, why = gate.choose_int8([_candidate("big", size=50), _candidate("small", size=39, passed=False)], 40)
    assert chosen == "small" and "most accurate" in why


def test_an_int8_variant_no_smaller_than_fp32_is_not_kept(tmp_path):
    """exported/cells-lstm (an LSTM of 4 and 7 units): every int8 setting's file is bigger than
    model.onnx, so quantizing keeps no int8 variant, says why, and removes the int8 file an
    earlier run left."""
    import shutil

    from typer.testing import CliRunner

    from rnnedge.cli import app
    from rnnedge.manifest import Manifest

    folder = tmp_path / "cells-lstm"
    shutil.copytree(EXPORTED / "cells-lstm", folder)
    m = Manifest.load(folder)
    m.source = {"name": "tiny"}  # not the zoo's: judged on the golden outputs, no TensorFlow
    m.save(folder)
    assert "int8" not in m.variants and not (folder / "model.int8.onnx").exists()  # as committed
    shutil.copy(folder / "model.onnx", folder / "model.int8.onnx")  # an earlier run's leftover
    result = CliRunner().invoke(app, ["quantize", str(folder), "--variants", "int8", "--explain"])
    assert result.exit_code == 0, result.output
    m = Manifest.load(folder)
    fp32_size = (folder / "model.onnx").stat().st_size
    assert "int8" not in m.variants and not (folder / "model.int8.onnx").exists()
    candidates = m.not_kept["int8"]["candidates"]
    assert candidates and all(c["size"] >= fp32_size and not c["smaller_than_fp32"] for c in candidates)
    assert m.not_kept["int8"]["because"].startswith("no int8 variant kept: no portable setting is smaller than fp32")
    lines = result.output.splitlines()
    assert m.not_kept["int8"]["because"] in lines, result.output
    assert "int8 settings tried (kept: none):" in lines and "not smaller than fp32" in result.output
    assert m.recommended["CPUExecutionProvider"] == "fp32"
    m.verify(folder, m.file_names())  # the manifest names only what the folder holds


def test_variants_off_kerass_outputs_are_recorded_failed_and_never_recommended(tmp_path):
    """Keras' golden outputs moved by 5% of their range: every variant, run on them, is off by more
    than the gate allows; quantize records each gate as failed, and recommends fp32 everywhere."""
    import shutil

    from rnnedge.check import read_golden, write_golden
    from rnnedge.manifest import Manifest
    from rnnedge.quantize import quantize_dir

    folder = tmp_path / "airline-gru"
    shutil.copytree(EXPORTED / "airline-gru", folder)
    cases = read_golden(folder)
    span = {k: float(np.ptp(np.concatenate([c[2][k].ravel() for c in cases]))) for k in cases[0][2]}
    write_golden(folder, [(name, inputs, {k: v + np.float32(0.05 * span[k]) for k, v in expected.items()})
                          for name, inputs, expected in cases])
    m = Manifest.load(folder)
    m.source = {"name": "moved"}  # not the zoo's: judged on the golden outputs alone
    m.save(folder)
    variants = quantize_dir(folder, ["int8", "fp16"], latency_runs=5)
    for name in ("int8", "fp16"):
        g = variants[name]["gate"]
        assert g["by"] == "golden outputs" and not g["golden"]["passed"] and g["passed"] is False, g
    assert set(Manifest.load(folder).recommended.values()) == {"fp32"}
