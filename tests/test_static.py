"""--static batch=B,time=T: the axes fixed in the graph and the manifest, every golden case of
those sizes, a streaming export's chunk fixed; other shapes and bad keys are one line."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from keras import layers as L

from rnnedge.check import read_golden
from tests.kmodels import seq_input, sequential
from tests.test_cli import assert_user_error, invoke


@pytest.fixture(scope="module")
def lstm_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "lstm.keras"
    sequential([seq_input(4), L.LSTM(5, return_sequences=True), L.GRU(3, return_sequences=True, name="gru")],
               "lstm_gru").save(path)
    return path


def _dims(value):
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def test_static_batch_and_time(lstm_file, tmp_path):
    out = tmp_path / "static"
    result = invoke("export", lstm_file, "--out", out, "--static", "batch=2,time=30")
    assert result.exit_code == 0, result.output
    assert next(ln for ln in result.output.splitlines() if "input" in ln).split()[-3:] == ["[2,", "30,", "4]"]
    graph = onnx.load(str(out / "model.onnx")).graph
    assert _dims(graph.input[0]) == [2, 30, 4] and _dims(graph.output[0]) == [2, 30, 3]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == [2, 30, 4] and manifest["outputs"][0]["shape"] == [2, 30, 3]
    assert manifest["static"] == {"batch": 2, "time": 30}
    assert {inputs["x"].shape for _, inputs, _ in read_golden(out)} == {(2, 30, 4)}  # every case
    check = invoke("check", out)
    assert check.exit_code == 0 and " at step " in check.output  # the fixed time axis is still one
    np.save(tmp_path / "x.npy", np.zeros((1, 30, 4), np.float32))
    assert_user_error(invoke("run", out, "--input", tmp_path / "x.npy"),
                      "dimension 0 must be 2", "--static batch=2,time=30")


def test_static_time_only_keeps_batch_dynamic(lstm_file, tmp_path):
    out = tmp_path / "time"
    assert invoke("export", lstm_file, "--out", out, "--static", "time=12").exit_code == 0
    graph = onnx.load(str(out / "model.onnx")).graph
    assert _dims(graph.input[0]) == ["batch", 12, 4]
    assert {inputs["x"].shape[1] for _, inputs, _ in read_golden(out)} == {12}
    np.save(tmp_path / "x.npy", np.ones((5, 12, 4), np.float32))
    run = invoke("run", out, "--input", tmp_path / "x.npy")
    assert run.exit_code == 0 and "(5, 12, 3)" in run.output


def test_static_streaming_fixes_the_chunk(lstm_file, tmp_path):
    out = tmp_path / "stream"
    assert invoke("export", lstm_file, "--out", out, "--streaming", "--static", "time=10").exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == ["batch", 10, 4] and manifest["parity"]["stream_chunks"] == []
    assert [s["shape"] for s in manifest["inputs"][1:]] == [["batch", 5], ["batch", 5], ["batch", 3]]
    x = np.random.default_rng(0).normal(size=(1, 30, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    streamed = invoke("run", out, "--input", tmp_path / "x.npy", "--chunk", 10, "--output", tmp_path / "y.npz")
    assert streamed.exit_code == 0, streamed.output
    assert np.load(tmp_path / "y.npz")["gru"].shape == (1, 30, 3)
    assert_user_error(invoke("run", out, "--input", tmp_path / "x.npy", "--chunk", 5), "dimension 1 must be 10")


@pytest.mark.parametrize("value, phrases", [
    ("chunk=5", ("'chunk' is not an axis", "batch=B and/or time=T")),
    ("batch=0", ("batch=0 is not a size", "positive whole number")),
    ("time=-3", ("time=-3 is not a size",)),
    ("time=ten", ("time=ten is not a size",)),
    ("time=4,time=5", ("time is given twice",)),
])
def test_bad_static_is_one_line(lstm_file, tmp_path, value, phrases):
    assert_user_error(invoke("export", lstm_file, "--out", tmp_path / "o", "--static", value), *phrases)
    assert not (tmp_path / "o").exists()


def test_static_time_refuses_data_of_another_length(lstm_file, tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((3, 40, 4), np.float32))
    result = invoke("export", lstm_file, "--out", tmp_path / "o", "--static", "time=30", "--data", data)
    assert_user_error(result, "40 steps", "takes 30", "cut or pad")


def test_a_static_export_quantizes_and_benches_at_its_sizes(lstm_file, tmp_path):
    """The variants keep the fixed axes and pass their gates on the static golden cases; bench
    times the fixed sizes by default and refuses another length in one line."""
    out = tmp_path / "static"
    assert invoke("export", lstm_file, "--out", out, "--static", "batch=2,time=30").exit_code == 0
    result = invoke("quantize", out, "--variants", "fp16")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["variants"]["fp16"]["gate"]["passed"], manifest["variants"]["fp16"]
    assert _dims(onnx.load(str(out / "model.fp16.onnx")).graph.input[0]) == [2, 30, 4]
    bench = invoke("bench", out, "--variants", "fp32,fp16", "--runs", "3", "--warmup", "1")
    assert bench.exit_code == 0, bench.output
    rows = [ln for ln in bench.output.splitlines() if ln.startswith("│ fp")]
    assert len(rows) == 2 and all(ln.split("│")[2].strip() == "30" for ln in rows), bench.output
    assert_user_error(invoke("bench", out, "--time", "100"), "fixed time axis", "30", "100")
