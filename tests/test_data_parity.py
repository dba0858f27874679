"""Parity on the user's own data and at length: `export --data` cases at their own length, a long
case in every export, the step where the error is largest, and --data refused before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
from keras import layers as L

import rnnedge
import rnnedge.pipeline
from rnnedge.check import read_golden
from tests.kmodels import seq_input, sequential
from tests.test_cli import assert_user_error, invoke

STEPS = 1600


@pytest.fixture(scope="module")
def lstm_gru(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "lg.keras"
    sequential([seq_input(4), L.LSTM(8, return_sequences=True, name="lstm"),  # named: Keras' own names count
                L.GRU(6, return_sequences=True, name="gru"),  # across the tests of a session
                L.TimeDistributed(L.Dense(2), name="time_distributed")], "lg").save(path)
    return path


@pytest.fixture(scope="module")
def long_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "d.npz"
    np.savez(path, x=np.random.default_rng(1).normal(size=(20, STEPS, 4)).astype("float32"), y=np.zeros(20))
    return path


@pytest.fixture(scope="module")
def with_data(lstm_gru, long_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "lg"
    result = invoke("export", lstm_gru, "--out", out, "--data", long_data)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_data_rows_become_cases_at_their_length(with_data, long_data):
    out, printed = with_data
    cases = read_golden(out)
    name, inputs, outputs = cases[-1]
    x = np.load(long_data)["x"]
    rows = [0, 3, 5, 8, 11, 14, 16, 19]  # 8 of 20, evenly spaced, named in the case
    assert name == "--data d.npz, rows 0,3,5,8,11,14,16,19 of 20"
    np.testing.assert_array_equal(inputs["x"], x[rows])
    assert outputs["time_distributed"].shape == (8, STEPS, 2)
    assert f"{STEPS} steps" in printed and "rows 0,3,5,8" in printed
    parity = json.loads((out / "manifest.json").read_text())["parity"]
    assert [c["steps"] for c in parity["cases"]] == [7, 16, 1, STEPS]  # the data is the long case: no 500-step one
    worst = parity["cases"][-1]["outputs"][0]
    assert 1 <= worst["worst_step"] <= STEPS and "per_step" not in worst  # steps count from 1


def test_check_says_where_the_error_is_largest(with_data):
    out, _ = with_data
    result = invoke("check", out)
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if "--data d.npz" in ln)
    assert f"{STEPS} steps" in line and " at step " in line


def test_every_export_has_a_long_case(lstm_gru, tmp_path):
    out = tmp_path / "plain"
    assert invoke("export", lstm_gru, "--out", out).exit_code == 0
    steps = [inputs["x"].shape[1] for _, inputs, _ in read_golden(out)]
    assert max(steps) >= 500


def test_short_data_still_gets_a_long_case(lstm_gru, tmp_path):
    data = tmp_path / "short.npz"
    np.savez(data, x=np.random.default_rng(2).normal(size=(3, 40, 4)).astype("float32"))
    out = tmp_path / "short"
    result = invoke("export", lstm_gru, "--out", out, "--data", data)
    assert result.exit_code == 0, result.output
    cases = read_golden(out)
    assert cases[-1][0] == "--data short.npz, all 3 rows" and cases[-1][1]["x"].shape == (3, 40, 4)
    assert max(inputs["x"].shape[1] for _, inputs, _ in cases) == 500


def test_long_data_failing_parity_names_the_step(lstm_gru, long_data, tmp_path):
    out = tmp_path / "tight"
    result = invoke("export", lstm_gru, "--out", out, "--data", long_data, "--atol", 1e-12, "--rtol", 0)
    assert_user_error(result, "does not match Keras", "--data d.npz", f"of {STEPS}", "at step")
    manifest = json.loads((out / "manifest.json").read_text())  # kept for inspection
    data_case = manifest["parity"]["cases"][-1]
    assert not data_case["passed"] and data_case["steps"] == STEPS


@pytest.mark.parametrize("make, phrases", [
    (lambda: {"x": np.zeros((4, 30, 3), np.float32)}, ("3 features per step", "takes 4")),
    (lambda: {"x": np.zeros((4, 30), np.float32)}, ("has shape [4, 30]", "3 dimensions")),
    (lambda: {"x": np.zeros((4, 30, 4), bool)}, ("is bool", "float32")),
    (lambda: {"x": np.full((4, 30, 4), "a")}, ("is str32", "float32")),
    (lambda: {"inputs": np.zeros((4, 30, 4), np.float32)}, ("no array for input 'x'", "holds inputs")),
])
def test_data_that_does_not_fit_is_one_line_before_any_work(lstm_gru, tmp_path, monkeypatch, make, phrases):
    def no_work(*args, **kwargs):
        raise AssertionError("export started")

    monkeypatch.setattr(rnnedge.pipeline, "export", no_work)
    data = tmp_path / "bad.npz"
    np.savez(data, **make())
    result = invoke("export", lstm_gru, "--out", tmp_path / "out", "--data", data)
    assert_user_error(result, f"--data {data}", *phrases)
    assert not (tmp_path / "out").exists()


def test_check_plots_the_error_against_the_step(with_data, tmp_path):
    from rnnedge.check import check_dir
    from rnnedge.check.plot import error_curves

    out, _ = with_data
    png = tmp_path / "err.png"
    result = invoke("check", out, "--plot", png)
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in result.output
    curves = error_curves(check_dir(out))["time_distributed"]
    assert sorted(curves) == [1, 7, 16, STEPS]  # one line per case length
    worst = json.loads((out / "manifest.json").read_text())["parity"]["cases"][-1]["outputs"][0]
    assert int(np.argmax(curves[STEPS])) + 1 == worst["worst_step"]
    assert_user_error(invoke("check", out, "--plot", png), "--force")  # not replaced silently
    assert_user_error(invoke("check", out, "--plot", tmp_path / "err.txt"), ".png, .svg or .pdf")


def test_check_plots_a_last_step_output_against_the_case_length(tmp_path):
    """An output without a time axis (a GRU's last step): its worst |diff| per case length, as
    onnxruntime and golden.npz give it here, is what the figure draws."""
    from rnnedge.check import check_dir, read_golden
    from rnnedge.check.plot import length_errors

    model = tmp_path / "last.keras"
    sequential([seq_input(3), L.GRU(4)], "last").save(model)
    out = tmp_path / "last"
    assert invoke("export", model, "--out", out).exit_code == 0
    png = tmp_path / "e.png"
    result = invoke("check", out, "--plot", png)
    assert result.exit_code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", result.output
    loaded = rnnedge.load(out, "cpu")
    want: dict[int, float] = {}
    for _, inputs, expected in read_golden(out):
        got = loaded.run(**inputs)
        for name, e in expected.items():
            steps = inputs["x"].shape[1]
            want[steps] = max(want.get(steps, 0.0), float(np.abs(np.asarray(got[name], np.float64) - e).max()))
    (name, points), = length_errors(check_dir(out)).items()
    assert points.keys() == want.keys() and len(points) >= 3
    np.testing.assert_allclose([points[n] for n in sorted(points)], [want[n] for n in sorted(want)], rtol=1e-6)


def test_check_plot_keeps_exact_zeros_on_the_floor(tmp_path, monkeypatch):
    """Steps where ONNX and Keras agree exactly are drawn on the axis' floor, not dropped."""
    from matplotlib.figure import Figure

    from rnnedge.check.compare import CaseParity, OutputParity, ParityReport
    from rnnedge.check.plot import plot_errors

    figures = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), save(self, *a, **k))[1])
    per_step = (0.0, 1e-7, 0.0, 3e-6)
    o = OutputParity("y", 3e-6, 1e-6, 1e-3, 1e-5, 1e-4, True, "", 4, per_step)
    plot_errors(ParityReport("CPUExecutionProvider", (CaseParity("c", (o,), 4),)), tmp_path / "z.png")
    ax = figures[0].axes[0]
    (curve,) = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 4]
    y = np.asarray(curve.get_ydata(), float)
    floor = ax.get_ylim()[0]
    assert np.all(np.isfinite(y)) and y[0] == y[2] and floor < y[0] < 1e-7, (y, floor)


def test_export_prints_its_interface(with_data):
    _, printed = with_data
    lines = printed.splitlines()
    assert "opset 17" in lines[0]
    assert lines[1].split() == ["input", "x", "float32", "[batch,", "time,", "4]"]
    assert lines[2].split() == ["output", "time_distributed", "float32", "[batch,", "time,", "2]"]
    assert [ln.split()[:3] for ln in lines[3:5]] == [["fused", "lstm", "LSTM"], ["fused", "gru", "GRU"]]
    assert len({ln.index("float32") for ln in lines[1:3]}) == 1  # aligned


def test_interface_names_state_pairs():
    from rnnedge.manifest import Manifest, TensorSpec

    manifest = Manifest(
        inputs=[TensorSpec("tok", ("batch", "time"), "int32", vocab=50, pad_value=0),
                TensorSpec("gru/h_in", ("batch", 6), "float32", role="state", layer="gru")],
        outputs=[TensorSpec("y", ("batch", "time", 2), "float32"),
                 TensorSpec("gru/h_out", ("batch", 6), "float32", role="state", feeds="gru/h_in", layer="gru")],
        opset=17, ir_version=8, fused_nodes={"gru": ["gru/GRU"]})
    lines = manifest.interface_lines({"gru/GRU": "GRU"})
    assert [ln.split()[0] for ln in lines] == ["input", "output", "state", "fused"]
    assert "ids < 50, padding 0" in lines[0]
    assert lines[2].split()[:5] == ["state", "gru/h_in", "->", "gru/h_out", "float32"]
    assert lines[3].split() == ["fused", "gru", "GRU", "gru/GRU"]
