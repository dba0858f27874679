"""int8 variants of real exports: the setting kept is portable, accurate, and judged without a task metric."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from rnnedge.check import Tolerance, check_dir  # noqa: E402
from rnnedge.manifest import Manifest  # noqa: E402
from rnnedge.pipeline import export  # noqa: E402
from rnnedge.quantize import SETTINGS, quantize_int8, u8s8_weight_range  # noqa: E402
from rnnedge.quantize.int8 import SAFE_U8S8_WEIGHT  # noqa: E402

LAYERS = {"LSTM": keras.layers.LSTM, "GRU": keras.layers.GRU, "SimpleRNN": keras.layers.SimpleRNN}
UNITS = 128  # tools/bench_int8.py measures 256 too
MAX_SHARE_OF_RANGE = 0.03


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """One export per cell, x [batch, time, 32] -> 128 units -> Dense(10), Keras' initial weights,
    with its int8 variant chosen by measurement."""
    made = {}
    for cell, layer in LAYERS.items():
        keras.utils.set_random_seed(0)
        x = keras.Input((None, 32))
        model = keras.Model(x, keras.layers.Dense(10)(layer(UNITS)(x)), name=cell.lower())
        made[cell] = export(model, tmp_path_factory.mktemp(cell) / "m", quantize=["int8"]).folder
    return made


@pytest.mark.parametrize("cell", LAYERS)
def test_kept_int8_setting_is_portable_and_within_three_percent_of_range(exports, cell):
    manifest = Manifest.load(exports[cell])
    int8 = manifest.variants["int8"]
    assert int8["setting"]["portable"], int8["chosen_because"]
    weights = u8s8_weight_range(onnx.load(exports[cell] / int8["file"]))
    if weights:  # the file itself holds 7-bit integer-kernel weights: no u8s8 saturation anywhere
        assert -SAFE_U8S8_WEIGHT <= weights[0] and weights[1] <= SAFE_U8S8_WEIGHT, weights
    outputs = int8["gate"]["golden"]["outputs"]
    assert max(o["share_of_range"] for o in outputs.values()) <= MAX_SHARE_OF_RANGE
    assert int8["gate"] == {**int8["gate"], "by": "golden outputs", "passed": True}
    tried = {c["name"]: c for c in int8["candidates"]}
    assert {"dynamic-7bit", "weight-only", "dynamic-8bit"} <= set(tried)
    assert not tried["dynamic-8bit"]["portable"] and int8["setting"]["name"] != "dynamic-8bit"
    assert all(c["error"] >= 0 and c["latency_ms_p50"] > 0 and c["ratios"] for c in tried.values())
    assert int8["size"] < manifest.variants["fp32"]["size"]
    assert manifest.recommended["CPUExecutionProvider"] in ("fp32", "int8")


@pytest.mark.parametrize("cell", LAYERS)
def test_check_judges_a_variant_by_its_own_tolerance(exports, cell):
    report = check_dir(exports[cell], "cpu", variant="int8")
    assert report.passed, report.failures()
    assert report.tolerance.rtol == 0 and report.tolerance.atol > 1e-5
    strict = check_dir(exports[cell], "cpu", variant="int8", tolerance=Tolerance(1e-6, 0.0))
    assert not strict.passed  # the same variant against fp32's bounds: the check can fail


def test_integer_weight_range_tells_portable_settings_apart(exports, tmp_path):
    src = exports["LSTM"] / "model.onnx"
    for name, setting in SETTINGS.items():
        if setting.static:
            continue
        facts = quantize_int8(src, tmp_path / f"{name}.onnx", setting=name)
        weights = u8s8_weight_range(onnx.load(tmp_path / f"{name}.onnx"))
        assert facts["u8s8_weight_range"] == (list(weights) if weights else None)
        if not setting.dynamic:
            assert weights is None  # weight-only: computed in float
        elif setting.portable:
            assert max(-weights[0], weights[1]) <= SAFE_U8S8_WEIGHT, (name, weights)
        else:
            assert max(-weights[0], weights[1]) > SAFE_U8S8_WEIGHT, (name, weights)
            assert any("can saturate" in n for n in facts["notes"])


def test_one_setting_can_be_forced(exports, tmp_path):
    import shutil

    from rnnedge.quantize import quantize_dir

    folder = tmp_path / "gru"
    shutil.copytree(exports["GRU"], folder)
    variants = quantize_dir(folder, ["int8"], setting="weight-only")
    assert variants["int8"]["setting"]["name"] == "weight-only"
    assert [c["name"] for c in variants["int8"]["candidates"]] == ["weight-only"]
    assert "MatMulInteger" not in {n.op_type for n in onnx.load(folder / "model.int8.onnx").graph.node}
    np.testing.assert_array_less(list(variants["int8"]["max_abs_error"].values()), 0.01)
