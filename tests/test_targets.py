"""`rnnedge targets`: each provider's documented restrictions read against the real fused nodes of
real exports (a Keras model exported by rnnedge), and against hand-written nodes for what rnnedge
never writes (clip, layout 1, input_forget)."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from keras import layers as L
from onnx import TensorProto, helper, numpy_helper

from rnnedge.pipeline import export
from rnnedge.runtime.qnn import qnn_installed, qnn_session
from rnnedge.runtime.targets import RESTRICTIONS, TARGETS, assess, judge, nodes_of
from tests.helpers import invoke
from tests.kmodels import functional, seq_input, sequential


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """name -> an export folder of a tiny model, exported once for the module."""
    root = tmp_path_factory.mktemp("targets")
    x = seq_input(3)
    masked = L.Masking(0.0)(x)
    models = {
        "plain": sequential([seq_input(3), L.LSTM(4, return_sequences=True), L.GRU(3)], "plain"),
        "hard_sigmoid": sequential([seq_input(3), L.LSTM(4, recurrent_activation="hard_sigmoid")], "hard"),
        "masked_gru": functional(x, L.GRU(4)(masked), "masked_gru"),
        "simplernn": sequential([seq_input(3), L.SimpleRNN(4)], "srnn"),
        "gru_reset_before": sequential([seq_input(3), L.GRU(4, reset_after=False)], "gru_rb"),
    }
    out = {}
    for name, model in models.items():
        out[name] = root / name
        export(model, out[name])
    return out


def _verdicts(folder):
    return {v.provider: v for v in assess(folder)}


def test_plain_lstm_gru_runs_everywhere_with_recurrent_ops(exports):
    v = _verdicts(exports["plain"])
    assert [p for p in TARGETS if v[p].ready] == ["cpu", "cuda", "tensorrt", "openvino", "directml", "webnn"]
    assert not v["qnn"].ready  # dynamic shapes (the fix: --target qnn or --static)
    assert {f.restriction.reason for f in v["qnn"].findings} == {"dynamic shapes (the HTP compiles fixed shapes)"}
    for p in ("coreml", "nnapi", "xnnpack"):
        assert len(v[p].off) == 2 and "no LSTM/GRU/RNN (nor Scan) op" in v[p].findings[0].restriction.reason


def test_hard_sigmoid_falls_back_on_cuda_naming_the_layer(exports):
    v = _verdicts(exports["hard_sigmoid"])
    assert not v["cuda"].ready and v["cpu"].ready
    (node,) = v["cuda"].off
    assert node.layer and node.op == "LSTM" and "HardSigmoid" in node.activations
    assert "non-default activations" in v["cuda"].findings[0].restriction.reason
    assert "recurrent_activation='sigmoid'" in v["cuda"].findings[0].restriction.fix


def test_masked_gru_is_not_qnn_ready_and_says_remove_the_mask(exports):
    v = _verdicts(exports["masked_gru"])
    assert v["cuda"].ready and not v["qnn"].ready and not v["webnn"].ready
    reasons = {f.restriction.reason: f.restriction.fix for f in v["qnn"].findings}
    mask = next(r for r in reasons if "mask" in r)
    assert "Masking" in reasons[mask]


def test_simplernn_is_not_qnn_ready_nor_webnn(exports):
    v = _verdicts(exports["simplernn"])
    assert v["cuda"].ready and not v["qnn"].ready and not v["webnn"].ready
    assert any("no RNN op" in f.restriction.reason and "--target qnn" in f.restriction.fix for f in v["qnn"].findings)


def test_gru_reset_after_false_falls_back_on_cuda(exports):
    v = _verdicts(exports["gru_reset_before"])
    assert not v["cuda"].ready
    assert "reset_after=False" in v["cuda"].findings[0].restriction.reason


def test_explicit_default_activations_pass_cuda_but_not_qnn():
    """CUDA compares activations by value; QNN refuses the attribute itself."""
    written = _node_model("LSTM", activations=["Sigmoid", "Tanh", "Tanh"])
    v = {x.provider: x for x in judge(nodes_of(written))}
    assert v["cuda"].ready and not v["qnn"].ready
    bare = {x.provider: x for x in judge(nodes_of(_node_model("LSTM")))}
    assert bare["qnn"].ready  # static, no attribute, LSTM


@pytest.mark.skipif(not qnn_installed(), reason="onnxruntime-qnn is not installed")
@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_the_qnn_rows_hold_on_the_htp_simulator(op):
    """The table's QNN verdicts against onnxruntime's own placement (CPU fallback disabled): a node that
    spells out its default activations is refused, the same node without the attribute runs there."""
    spelled = _node_model(op, activations=["Sigmoid", "Tanh", "Tanh"][:3 if op == "LSTM" else 2])
    bare = _node_model(op)
    assert not judge(nodes_of(spelled), ["qnn"])[0].ready and judge(nodes_of(bare), ["qnn"])[0].ready
    qnn_session(bare.SerializeToString(), all_on_qnn=True)
    with pytest.raises(Exception, match="fallback to CPU EP has been explicitly disabled"):
        qnn_session(spelled.SerializeToString(), all_on_qnn=True)


@pytest.mark.parametrize("attrs, providers", [
    ({"clip": 3.0}, {"cuda", "qnn", "webnn"}),
    ({"layout": 1}, {"tensorrt", "directml", "webnn", "qnn"}),
    ({"input_forget": 1}, {"cuda", "tensorrt"}),
])
def test_attributes_rnnedge_never_writes_are_read(attrs, providers):
    v = judge(nodes_of(_node_model("LSTM", **attrs)))
    off = {x.provider for x in v if not x.ready} - {"coreml", "nnapi", "xnnpack"}
    assert off == providers


def test_every_restriction_names_its_source_and_a_fix():
    for r in RESTRICTIONS:
        assert r.source and r.fix and r.reason and set(r.providers) <= set(TARGETS)


def test_cli_table_and_exit_code(exports):
    result = invoke("targets", exports["masked_gru"])
    assert result.exit_code == 0, result.output
    rows = {ln.split()[0]: ln.split()[1] for ln in result.output.splitlines()[:len(TARGETS)]}
    assert list(rows) == list(TARGETS) and rows["cpu"] == "ready" and rows["qnn"] == "partly"
    assert "qnn:" in result.output and "Masking" in result.output
    assert invoke("targets", exports["masked_gru"], "--provider", "cuda").exit_code == 0
    assert invoke("targets", exports["masked_gru"], "--provider", "qnn,cuda").exit_code == 1
    bad = invoke("targets", exports["masked_gru"], "--provider", "tpu")
    assert bad.exit_code == 1 and "expected some of cpu" in bad.output


def _node_model(op: str, **attrs) -> onnx.ModelProto:
    """One fused node over a static [T=5, B=1, F=3] input, weights of the right shapes."""
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    w = numpy_helper.from_array(np.zeros((1, gates * 2, 3), np.float32), "W")
    r = numpy_helper.from_array(np.zeros((1, gates * 2, 2), np.float32), "R")
    node = helper.make_node(op, ["X", "W", "R"], ["Y"], name="n", hidden_size=2, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 1, 3])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], [w, r])
    return helper.make_model(graph)


def test_bad_folders_are_one_line(exports, tmp_path):
    from tests.test_cli import assert_user_error

    assert_user_error(invoke("targets", tmp_path / "nothing"), "does not exist")
    broken = tmp_path / "broken"
    shutil.copytree(exports["plain"], broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    assert_user_error(invoke("targets", broken), "model.onnx does not match manifest.json", "--no-verify")
    assert_user_error(invoke("targets", broken, "--no-verify"), "model.onnx is not a readable ONNX model", "re-export")
    (broken / "model.onnx").unlink()
    assert_user_error(invoke("targets", broken), "model.onnx is missing")
