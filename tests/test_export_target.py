"""`export --target qnn`: static shapes, SimpleRNN unrolled (exact against Keras on CPU), every node
on Qualcomm's HTP simulator within the fp16 gate; the same models without the lowering leave nodes on
CPU; models that cannot meet the target are one line naming the layer and the fix."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from keras import layers as L

from rnnedge.errors import RnnEdgeError
from rnnedge.pipeline import export
from rnnedge.runtime.qnn import QNN_PIP, qnn_installed, qnn_session
from tests.helpers import invoke, op_counts
from tests.kmodels import functional, seq_input, sequential
from tests.test_cli import assert_user_error

needs_qnn = pytest.mark.skipif(not qnn_installed(), reason="onnxruntime-qnn is not installed")


def _models():
    x = seq_input(3)
    y, h_f, h_b = L.Bidirectional(L.SimpleRNN(4, return_sequences=True, return_state=True))(x)
    return {
        "simplernn": sequential([seq_input(3), L.SimpleRNN(5), L.Dense(2)], "srnn"),
        "bidirectional_simplernn": functional(x, [y, h_f, h_b], "bisrnn"),
        "lstm_gru": sequential([seq_input(3), L.LSTM(6, return_sequences=True), L.GRU(4), L.Dense(2)], "lg"),
        "relu_backwards": sequential([seq_input(3), L.SimpleRNN(4, activation="relu", return_sequences=True),
                                      L.SimpleRNN(3, go_backwards=True)], "relu_back"),
    }


@pytest.fixture(scope="module")
def models():
    return _models()


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    """name -> (export with --target qnn, the same with --static only)."""
    root = tmp_path_factory.mktemp("target")
    out = {}
    for name, model in models.items():
        targeted, plain = root / f"{name}-qnn", root / f"{name}-static"
        export(model, targeted, static={"time": 12}, target="qnn")
        export(model, plain, static={"batch": 1, "time": 12})
        out[name] = (targeted, plain)
    return out


@pytest.mark.parametrize("name", ["simplernn", "bidirectional_simplernn", "lstm_gru", "relu_backwards"])
def test_target_qnn_is_static_and_has_no_rnn_op(exported, name):
    folder, _ = exported[name]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["static"] == {"batch": 1, "time": 12} and manifest["parity"]["passed"]  # exact against Keras
    assert manifest["parity"]["worst_abs"] < 1e-5  # the unrolled ops against Keras, on CPU
    graph = onnx.load(str(folder / "model.onnx")).graph
    assert all(d.HasField("dim_value") for v in graph.input for d in v.type.tensor_type.shape.dim)
    counts = op_counts(folder / "model.onnx")
    assert counts["RNN"] == 0
    if name != "lstm_gru":
        assert counts["MatMul"] >= 12 and "unrolled" in manifest["layers"].values()
    else:
        assert counts["LSTM"] == 1 and counts["GRU"] == 1


@needs_qnn
@pytest.mark.parametrize("name", ["simplernn", "bidirectional_simplernn", "lstm_gru", "relu_backwards"])
def test_target_qnn_runs_every_node_on_qnn_within_the_gate(exported, name):
    folder, _ = exported[name]
    record = json.loads((folder / "manifest.json").read_text())["target"]
    assert record["checked"] and record["placement"] == "every node on QNN" and record["passed"]
    assert all(o["share_of_range"] <= 0.02 for o in record["gate"]["outputs"].values())
    qnn_session(str(folder / "model.onnx"), all_on_qnn=True)  # onnxruntime's own verdict, again


@needs_qnn
@pytest.mark.parametrize("name", ["simplernn", "bidirectional_simplernn", "relu_backwards"])
def test_without_the_lowering_a_simplernn_is_not_placed_on_qnn(exported, name):
    _, plain = exported[name]
    assert op_counts(plain / "model.onnx")["RNN"] >= 1
    with pytest.raises(Exception, match="fallback to CPU EP has been explicitly disabled"):
        qnn_session(str(plain / "model.onnx"), all_on_qnn=True)


def test_cli_export_target_prints_the_check(models, tmp_path):
    path = tmp_path / "srnn.keras"
    models["simplernn"].save(path)
    result = invoke("export", path, "--out", tmp_path / "o", "--target", "qnn", "--static", "time=8")
    assert result.exit_code == 0, result.output
    assert "1 layer(s) unrolled for --target" in result.output
    assert ("qnn (HTP simulator, fp16): every node on QNN" in result.output if qnn_installed()
            else "qnn: not checked" in result.output)
    table = invoke("targets", tmp_path / "o", "--provider", "qnn")
    assert table.exit_code == 0 and "exported with --target qnn, checked then: qnn" in table.output, table.output


def test_masked_model_is_refused_naming_the_layer(tmp_path):
    x = seq_input(3)
    model = functional(x, L.Dense(1)(L.GRU(4, name="tagger")(L.Masking(0.0)(x))), "masked")
    with pytest.raises(RnnEdgeError, match=r"layer 'tagger' \(GRU\).*mask.*fix: remove the mask"):
        export(model, tmp_path / "m", static={"time": 8}, target="qnn")
    assert not (tmp_path / "m" / "manifest.json").exists()


def test_explicit_activations_are_refused_for_qnn(tmp_path):
    model = sequential([seq_input(3), L.LSTM(4, recurrent_activation="hard_sigmoid", name="old")], "hard")
    with pytest.raises(RnnEdgeError, match=r"layer 'old' \(LSTM\).*activations"):
        export(model, tmp_path / "h", static={"time": 8}, target="qnn")


def test_dynamic_time_and_unknown_target_are_one_line_before_tensorflow(models, tmp_path):
    path = tmp_path / "srnn.keras"
    models["simplernn"].save(path)
    assert_user_error(invoke("export", path, "--out", tmp_path / "a", "--target", "qnn"),
                      "--target qnn needs fixed shapes", "--static time=T")
    assert_user_error(invoke("export", path, "--out", tmp_path / "b", "--target", "npu"), "expected one of qnn")


def test_not_installed_is_recorded_not_claimed(models, tmp_path, monkeypatch):
    import rnnedge.pipeline.target as target

    monkeypatch.setattr(target, "qnn_installed", lambda: False)
    result = export(models["simplernn"], tmp_path / "n", static={"time": 6}, target="qnn")
    assert result.manifest.target == {"provider": "qnn", "checked": False,
                                      "why": f"the QNN provider is not installed: {QNN_PIP}"}
    assert any("not checked on the device" in line for line in result.lines()) and result.passed


def test_streaming_simplernn_unrolls_from_the_carried_state(tmp_path):
    """The state input is the unrolled steps' initial h; exact on CPU, every node on QNN."""
    model = sequential([seq_input(3), L.SimpleRNN(5, return_sequences=True), L.Dense(2)], "stream_srnn")
    result = export(model, tmp_path / "s", streaming=True, static={"time": 4}, target="qnn")
    assert result.passed and op_counts(tmp_path / "s" / "model.onnx")["RNN"] == 0
    assert [s.shape for s in result.manifest.state_inputs] == [(1, 5)]
    assert result.parity.to_dict()["worst_abs"] < 1e-5
    if qnn_installed():
        assert result.manifest.target["passed"] and result.manifest.target["placement"] == "every node on QNN"
    # a carried (non-zero) state: the unrolled graph against onnxruntime's own RNN node, verified against Keras
    export(model, tmp_path / "fused", streaming=True, static={"batch": 1, "time": 4})
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(1, 4, 3)).astype(np.float32),
             result.manifest.state_inputs[0].name: rng.normal(size=(1, 5)).astype(np.float32)}
    unrolled = ort.InferenceSession(str(tmp_path / "s" / "model.onnx")).run(None, feeds)
    fused = ort.InferenceSession(str(tmp_path / "fused" / "model.onnx")).run(None, feeds)
    for a, b in zip(unrolled, fused):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_scan_layer_is_refused_for_qnn_naming_it(tmp_path):
    """gelu has no fused form: rnnedge writes an exact Scan, which QNN does not run."""
    model = sequential([seq_input(3), L.SimpleRNN(3, return_sequences=True),  # unrolled first
                        L.LSTM(4, activation="gelu", name="gelu_lstm")], "gelu")
    with pytest.raises(RnnEdgeError, match=r"layer 'gelu_lstm' \(Scan\).*no Scan op.*fix: use activations"):
        export(model, tmp_path / "g", static={"time": 6}, target="qnn")


@needs_qnn
def test_a_scan_is_not_placed_on_qnn(tmp_path):
    """The Scan row's source, measured: onnxruntime refuses to place it on QNN."""
    model = sequential([seq_input(3), L.LSTM(4, activation="gelu")], "gelu")
    export(model, tmp_path / "g", static={"batch": 1, "time": 6})
    with pytest.raises(Exception, match="fallback to CPU EP has been explicitly disabled"):
        qnn_session(str(tmp_path / "g" / "model.onnx"), all_on_qnn=True)
