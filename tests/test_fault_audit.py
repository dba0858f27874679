"""Tests for the faults a test audit planted and the suite missed (issue #28). Each compares with
an independent reference (Keras, onnxruntime run here on the file itself, numbers written out in
the test), never with a number rnnedge recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from rnnedge.check import check_dir, read_golden, write_golden
from rnnedge.check.compare import Tolerance, compare
from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import Manifest

EXPORTED = Path(__file__).resolve().parent.parent / "exported"
# The default parity tolerance on CPU as the README and `rnnedge check --help` state it, written
# out here so that a tolerance changed in tables.py (or scaled in compare.py) fails these tests.
CPU_ATOL, CPU_RTOL = 1e-5, 1e-4


def _copy(name: str, tmp_path: Path) -> Path:
    folder = tmp_path / name
    shutil.copytree(EXPORTED / name, folder)
    return folder


def _rewrite_golden(folder: Path, move) -> None:
    """golden.npz with every expected output replaced by move(output name, case index, array); the
    manifest saved again so that it records the new file's checksum."""
    cases = read_golden(folder)
    write_golden(folder, [(name, inputs, {k: move(k, i, v) for k, v in expected.items()})
                          for i, (name, inputs, expected) in enumerate(cases)])
    m = Manifest.load(folder)
    m.source = {"name": "moved"}
    m.save(folder)


# -- quantized variants are judged by running the variant's own file -------------------------------

def _independent_error(path: Path, golden) -> dict[str, float]:
    """max |Keras - the file's output| per output over the golden cases, run here in onnxruntime."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    worst: dict[str, float] = {}
    for _, inputs, expected in golden:
        feeds = {k: v.astype(np.float16 if types[k] == "tensor(float16)" else v.dtype) for k, v in inputs.items()}
        got = dict(zip(names, session.run(names, feeds)))
        for k, want in expected.items():
            diff = float(np.max(np.abs(np.asarray(got[k], np.float64) - want)))
            worst[k] = max(worst.get(k, 0.0), diff)
    return worst


def test_variant_errors_are_measured_on_the_variant_file(tmp_path):
    """quantize records, per variant, the error of that variant's own file: onnxruntime run here on
    model.fp16.onnx (and model.int8.onnx where kept) gives the same max |diff| against Keras' golden
    outputs, and it is not fp32's (measuring model.onnx instead records fp32's near-zero error)."""
    from rnnedge.quantize import quantize_dir

    folder = _copy("airline-gru", tmp_path)
    for f in ("model.int8.onnx", "model.fp16.onnx"):
        (folder / f).unlink(missing_ok=True)
    m = Manifest.load(folder)
    for v in ("int8", "fp16"):
        m.variants.pop(v, None)
    m.source = {"name": "copy"}  # judged on the golden outputs (no TensorFlow)
    m.save(folder)
    variants = quantize_dir(folder, ["int8", "fp16"], latency_runs=5)
    golden = read_golden(folder)
    fp32 = _independent_error(folder / "model.onnx", golden)
    checked = 0
    for name in ("int8", "fp16"):
        if name not in variants:
            continue
        own = _independent_error(folder / variants[name]["file"], golden)
        recorded = variants[name]["max_abs_error"]
        assert recorded.keys() == own.keys()
        for k in own:
            assert own[k] > 10 * fp32[k] + 1e-7, (name, k, own[k], fp32[k])  # the variant really differs
            np.testing.assert_allclose(recorded[k], own[k], rtol=1e-3, err_msg=f"{name} {k}")
        checked += 1
    assert checked >= 1 and "fp16" in variants


# -- the parity tolerance, from both sides of its boundary ----------------------------------------

@pytest.mark.parametrize("times, passes", [(0.5, True), (0.9, True), (2.0, False), (5.0, False)])
def test_compare_tolerance_boundary_from_both_sides(times, passes):
    """|diff| = times * (atol + rtol * |expected|): within the default tolerance below 1, outside at
    2 and 5 (a tolerance 100 times too loose passes these); small values (atol decides) and
    large ones (rtol decides) alike."""
    expected = np.array([[0.0, 1e-3, -1e-3, 1.0, -3.0, 20.0]], np.float32)
    bound = CPU_ATOL + CPU_RTOL * np.abs(expected.astype(np.float64))
    for column in range(expected.shape[1]):  # one value off at a time: each must decide alone
        actual = expected.astype(np.float64).copy()
        actual[0, column] += times * bound[0, column]
        result = compare("case", {"y": expected}, {"y": actual})
        assert bool(result) is passes, (column, result.outputs[0])
    assert (Tolerance().atol, Tolerance().rtol) == (CPU_ATOL, CPU_RTOL)


@pytest.mark.parametrize("times, passes", [(0.3, True), (3.0, False)])
def test_check_tolerance_boundary_from_both_sides(tmp_path, times, passes):
    """`rnnedge check` on an export whose golden outputs are moved by `times` the stated CPU
    tolerance: it passes at 0.3 and fails at 3 (the provider's tolerance, as check uses it)."""
    folder = _copy("events-gru", tmp_path)
    _rewrite_golden(folder, lambda k, i, v: (v + times * (CPU_ATOL + CPU_RTOL * np.abs(v))).astype(v.dtype))
    report = check_dir(folder)
    assert report.passed is passes, report.failures()[:3]
    assert (report.tolerance.atol, report.tolerance.rtol) == (CPU_ATOL, CPU_RTOL)


# -- the step of the largest error ---------------------------------------------------------------

def test_worst_step_is_where_the_largest_error_is():
    """One large error at step 3 of one feature, smaller errors at every feature of step 7: the
    worst step is 3 (the mean over features would say 7); per-step figures are maxima."""
    want = np.zeros((2, 10, 8), np.float32)
    got = want.astype(np.float64).copy()
    got[1, 2, 5] = 1e-2  # step 3
    got[:, 6, :] = 5e-3  # step 7, everywhere
    result = compare("case", {"y": want}, {"y": got}, time_axes={"y": 1}, steps=10)
    out = result.outputs[0]
    assert out.worst_step == 3 and not out.passed
    expected = np.abs(got - want).max(axis=(0, 2))
    np.testing.assert_allclose(out.per_step, expected)


def test_check_names_the_step_an_error_was_injected_at(tmp_path):
    """An export's golden outputs moved at one element of one known step (and less at every
    element of another step): check names that step in its failure lines (whole and streamed)."""
    folder = _copy("events-gru", tmp_path)
    cases = read_golden(folder)
    target = max(range(len(cases)), key=lambda i: next(iter(cases[i][2].values())).shape[1])
    steps = next(iter(cases[target][2].values())).shape[1]
    spike, broad = steps // 3, steps // 3 + 5  # 0-based steps

    def move(name, i, v):
        if i != target or v.ndim != 3:
            return v
        v = v.copy()
        v[0, spike, 1] += 0.5
        v[:, broad, :] += 0.2
        return v

    _rewrite_golden(folder, move)
    report = check_dir(folder)
    failed = report.failures()
    assert failed and all(f"at step {spike + 1} of {steps} >" in line for line in failed), failed  # streamed too


# -- a manifest file entry without a checksum ----------------------------------------------------

@pytest.mark.parametrize("damage", ["no entry", "no sha256", "no size", "empty entry"])
def test_a_file_entry_without_a_checksum_is_refused(tmp_path, damage):
    """A manifest that records checksums but not (all of) one for the model file: loading refuses it
    in one line, and --no-verify (verify=False) is the way round."""
    import rnnedge

    folder = _copy("airline-gru", tmp_path)
    path = folder / "manifest.json"
    d = json.loads(path.read_text())
    entry = d["files"]["model.onnx"]
    if damage == "no entry":
        del d["files"]["model.onnx"]
    elif damage == "no sha256":
        del entry["sha256"]
    elif damage == "no size":
        del entry["size"]
    else:
        d["files"]["model.onnx"] = {}
    path.write_text(json.dumps(d))
    with pytest.raises(RnnEdgeError) as err:
        rnnedge.load(folder)
    assert "model.onnx" in str(err.value) and "\n" not in str(err.value)
    assert "--no-verify" in str(err.value)
    rnnedge.load(folder, verify=False).run(**read_golden(folder)[0][1])  # runs
