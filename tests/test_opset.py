"""--opset: every opset from 14 to 21 exports one fused node per recurrent layer, records the
opset in the manifest and the model, and passes parity; others are refused in one line."""

from __future__ import annotations

import json

import onnx
import pytest
from keras import layers as L

from rnnedge.pipeline import export
from rnnedge.tables import OPSETS
from tests.kmodels import functional, seq_input
from tests.test_cli import assert_user_error, invoke


@pytest.fixture(scope="module")
def masked_lstm_gru():
    """Masking (a ReduceMax over the mask: axes move to an input at 18), LSTM, LayerNormalization
    (its own op from 17, plain ops below), GRU."""
    x = seq_input(4)
    h = L.LSTM(6, return_sequences=True)(L.Masking(0.0)(x))
    y = L.GRU(5, return_sequences=True)(L.LayerNormalization()(h))
    return functional(x, y, "masked_lstm_gru")


@pytest.mark.parametrize("opset", sorted(OPSETS))
def test_each_opset_exports_fused_and_passes(masked_lstm_gru, opset, tmp_path):
    result = export(masked_lstm_gru, tmp_path / "out", opset=opset)
    assert result.passed, result.parity.failures()
    proto = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert {o.domain: o.version for o in proto.opset_import}[""] == opset and proto.ir_version == OPSETS[opset]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["opset"] == opset and manifest["ir_version"] == OPSETS[opset]
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("LSTM") == 1 and ops.count("GRU") == 1 and "Loop" not in ops
    assert ("LayerNormalization" in ops) == (opset >= 17)
    reduce_max = [n for n in proto.graph.node if n.op_type == "ReduceMax"]
    assert reduce_max and all((len(n.input) == 2) == (opset >= 18) for n in reduce_max)
    onnx.checker.check_model(proto, full_check=True)


@pytest.mark.parametrize("opset", [13, 22, 0])
def test_opset_outside_the_range_is_one_line(opset, tmp_path):
    result = invoke("export", "zoo:events-gru", "--out", tmp_path / "out", "--opset", opset)
    assert_user_error(result, f"--opset {opset} is not supported", "14 to 21")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("opset", [14, 21])
def test_spliced_layers_follow_the_opset(opset, tmp_path):
    """A layer rnnedge has no converter for goes through tf2onnx at the opset (at most 18, what
    tf2onnx writes), inside the fused graph; the model still declares the asked opset."""
    x = seq_input(4)
    model = functional(x, L.Lambda(lambda t: t * 2.0, name="double")(L.GRU(3)(x)), "spliced")
    result = export(model, tmp_path / "out", opset=opset)
    assert result.passed and result.manifest.tf2onnx_layers == ["double"] and result.manifest.opset == opset
    proto = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert {o.domain: o.version for o in proto.opset_import}[""] == opset
    assert [n.op_type for n in proto.graph.node].count("GRU") == 1


@pytest.mark.parametrize("opset", [min(OPSETS), max(OPSETS)])
def test_variants_keep_the_opset_and_pass_their_gates(masked_lstm_gru, opset, tmp_path):
    """int8 and fp16 written from an export at the lowest and highest opset: the same opset and IR
    version, each gate passed on the golden cases."""
    from rnnedge.manifest import Manifest
    from rnnedge.quantize import quantize_dir

    export(masked_lstm_gru, tmp_path / "out", opset=opset)
    quantize_dir(tmp_path / "out", ["int8", "fp16"])
    manifest = Manifest.load(tmp_path / "out")
    assert set(manifest.variants) >= {"fp16"}, manifest.variants
    for name, entry in manifest.variants.items():
        proto = onnx.load(str(tmp_path / "out" / entry["file"]))
        assert {o.domain: o.version for o in proto.opset_import}[""] == opset, name
        assert proto.ir_version == OPSETS[opset], name
        assert name == "fp32" or entry["gate"]["passed"], (name, entry)
