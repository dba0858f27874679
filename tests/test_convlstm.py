"""ConvLSTM1D/2D/3D as an rnnedge-built Scan of Conv ops (parity cases for every option are in
tests/test_convert.py's matrix): the graph's structure, the manifest's route, streaming in chunks
and stateful calls against Keras, what is refused, and that a wrong conversion fails parity."""

from __future__ import annotations

import json

import keras
import numpy as np
import onnx
import pytest
from keras import layers as L

import rnnedge
from rnnedge import ParityError
from rnnedge.errors import RnnEdgeError
from rnnedge.exporter.convert import convlstm
from rnnedge.pipeline import export
from tests.helpers import invoke, op_counts
from tests.kmodels import functional

LAYERS = {1: L.ConvLSTM1D, 2: L.ConvLSTM2D, 3: L.ConvLSTM3D}
SPACE = {1: (7,), 2: (6, 5), 3: (4, 5, 3)}


def frames(rank: int, channels: int = 2, batch=None):
    shape = (None, *SPACE[rank], channels)
    return keras.Input(batch_shape=(batch, *shape), name="x") if batch else keras.Input(shape, name="x")


def model_of(rank: int, **kw):
    keras.utils.set_random_seed(0)
    kw = {"padding": "same", "return_sequences": True, "return_state": True, "name": "conv", **kw}
    return functional(x := frames(rank, batch=kw.pop("batch", None)), LAYERS[rank](3, 3, **kw)(x), "m")


def test_one_scan_with_the_recurrent_conv_inside_and_the_input_conv_hoisted(tmp_path):
    result = export(model_of(2), tmp_path / "o")
    assert result.passed, result.parity.failures()
    proto = onnx.load(tmp_path / "o" / "model.onnx")
    counts = op_counts(proto)
    assert counts["Scan"] == 1 and counts["Conv"] == 1 and not counts["Loop"], counts
    (scan,) = [n for n in proto.graph.node if n.op_type == "Scan"]
    body = onnx.helper.get_attribute_value(next(a for a in scan.attribute if a.name == "body"))
    assert [n.op_type for n in body.node].count("Conv") == 1
    m = result.manifest
    assert m.layers["conv"] == "scan" and m.scan_nodes["conv"] == [scan.name] and not m.fused_nodes
    assert "'ConvLSTM2D'" in m.notes["conv"] and "Scan of Conv ops" in m.notes["conv"]


def test_bidirectional_is_one_scan_per_direction_under_its_name(tmp_path):
    keras.utils.set_random_seed(0)
    model = functional(x := frames(2), L.Bidirectional(L.ConvLSTM2D(3, 3, padding="same", return_sequences=True),
                                                       merge_mode="ave", name="bi")(x), "m")
    result = export(model, tmp_path / "o")
    assert result.passed, result.parity.failures()
    m = result.manifest
    assert m.layers["bi"] == "scan" and len(m.scan_nodes["bi"]) == 2 and "'ConvLSTM2D'" in m.notes["bi"]
    assert op_counts(tmp_path / "o" / "model.onnx")["Scan"] == 2
    with pytest.raises(RnnEdgeError, match="'bi' .*Bidirectional layer cannot stream"):
        export(model, tmp_path / "s", streaming=True)


def test_export_line_names_the_layer_type(tmp_path):
    path = tmp_path / "conv.keras"
    model_of(1, return_state=False).save(path)
    result = invoke("export", path, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "0 fused recurrent node(s), 1 layer(s) as an exact Scan (conv: no fused form for ConvLSTM1D)" \
        in result.output
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["layers"]["conv"] == "scan"


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_streams_in_chunks_with_h_and_c_as_states(rank, tmp_path):
    model = model_of(rank, strides=2 if rank == 1 else 1)
    result = export(model, tmp_path / "o", streaming=True)
    assert result.passed, result.parity.failures()
    assert any("streamed in chunks of 1" in c.case for c in result.parity.cases)
    states = result.manifest.state_inputs
    out_space = model.outputs[1].shape[1:]
    assert [s.shape for s in states] == [("batch", *out_space)] * 2
    # uneven chunks through the runtime's stream, against Keras over the whole sequence
    x = np.random.default_rng(1).normal(size=(2, 9, *SPACE[rank], 2)).astype("float32")
    want = [np.asarray(w) for w in model(x)]
    stream = rnnedge.load(tmp_path / "o", "cpu").stream(batch=2)
    got = [stream.push(x[:, a:b]).data for a, b in ((0, 1), (1, 4), (4, 5), (5, 9))]
    np.testing.assert_allclose(np.concatenate([g[0] for g in got], axis=1), want[0], atol=1e-5, rtol=1e-4)
    for k in (1, 2):  # h and c after the last chunk
        np.testing.assert_allclose(got[-1][k], want[k], atol=1e-5, rtol=1e-4)


def test_a_masked_layer_streams_from_the_last_valid_output(tmp_path):
    """Streamed, a chunk whose first steps are masked outputs the stream's last valid output there."""
    keras.utils.set_random_seed(0)
    x, m = frames(2), keras.Input((None,), dtype="bool", name="m")
    model = functional([x, m], L.ConvLSTM2D(3, 3, padding="same", return_sequences=True, name="conv")(x, mask=m), "m")
    result = export(model, tmp_path / "o", streaming=True)
    assert result.passed, result.parity.failures()
    assert any("streamed in chunks of 1" in c.case for c in result.parity.cases)
    rng = np.random.default_rng(2)
    frames_in = rng.normal(size=(2, 8, *SPACE[2], 2)).astype("float32")
    mask = np.array([[1, 1, 0, 0, 0, 1, 0, 1], [0, 0, 0, 1, 0, 0, 1, 1]], bool)
    want = np.asarray(model([frames_in, mask]))
    stream = rnnedge.load(tmp_path / "o", "cpu").stream(batch=2)
    got = [stream.push(frames_in[:, a:b], mask[:, a:b]).data[0] for a, b in ((0, 3), (3, 4), (4, 8))]
    np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=1e-5, rtol=1e-4)


def test_stateful_layer_carries_its_state_across_calls(tmp_path):
    model = model_of(2, stateful=True, return_state=False, batch=2)
    result = export(model, tmp_path / "o")
    assert result.passed, result.parity.failures()
    assert len(result.manifest.state_inputs) == 2
    stream = rnnedge.load(tmp_path / "o", "cpu").stream(batch=2)
    model.get_layer("conv").reset_state()
    rng = np.random.default_rng(3)
    for _ in range(3):
        chunk = rng.normal(size=(2, 3, *SPACE[2], 2)).astype("float32")
        np.testing.assert_allclose(stream.push(chunk).data[0], np.asarray(model(chunk)), atol=1e-5, rtol=1e-4)


def test_refusals_are_one_line_naming_the_layer(tmp_path):
    with pytest.raises(RnnEdgeError, match="'conv' .*go_backwards=True reads the sequence from its end, so it "
                                           "cannot run chunk by chunk; export without --streaming"):
        export(model_of(2, go_backwards=True), tmp_path / "a", streaming=True)
    x = frames(1)  # Masking over frames masks single positions ([batch, time, space]), not steps
    masked = functional(x, L.ConvLSTM1D(2, 3, name="conv")(L.Masking()(x)), "m")
    with pytest.raises(RnnEdgeError, match=r"'conv' .*expected a \[batch, time\] mask, got rank 3") as err:
        export(masked, tmp_path / "b")
    x, h, c = frames(1), keras.Input((7, 3), name="h"), keras.Input((7, 3), name="c")
    seeded = functional([x, h, c], L.ConvLSTM1D(3, 3, padding="same", name="conv")(x, initial_state=[h, c]), "m")
    with pytest.raises(RnnEdgeError, match="'conv' .*initial state comes from another tensor"):
        export(seeded, tmp_path / "c", streaming=True)
    assert "\n" not in str(err.value) and not any(tmp_path.iterdir())


@pytest.mark.parametrize("fault", ["pads", "gates"])
def test_a_wrong_conversion_fails_parity(fault, tmp_path, monkeypatch):
    """'same' padded as the larger half first (a stride of 2 with odd padding tells them apart), or the
    gates i and f read in the wrong order: the export must fail its parity check."""
    if fault == "pads":
        original = convlstm._conv_geometry

        def larger_half_first(cell, space):
            out, pads = original(cell, space)
            half = len(pads) // 2
            return out, pads[half:] + pads[:half]

        monkeypatch.setattr(convlstm, "_conv_geometry", larger_half_first)
    else:
        monkeypatch.setattr(convlstm, "weights_of", lambda v: _swap_i_f(v))
    keras.utils.set_random_seed(0)
    model = functional(x := frames(2), L.ConvLSTM2D(3, (3, 2), strides=2, padding="same")(x), "m")
    with pytest.raises(ParityError):
        export(model, tmp_path / "o")


def _swap_i_f(variable):
    w = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)
    f = w.shape[-1] // 4
    return np.concatenate([w[..., f:2 * f], w[..., :f], w[..., 2 * f:]], axis=-1)


def test_quantizes_with_the_scan_kept(tmp_path):
    """int8 stores the hoisted input Conv's weights in int8 (the Scan's body stays float32), fp16
    keeps the Scan float32 behind Casts; the accuracy gate judges both against Keras."""
    keras.utils.set_random_seed(0)
    x = keras.Input((None, 12, 12, 8), name="x")
    model = functional(x, L.ConvLSTM2D(8, 3, padding="same", return_sequences=True, name="conv")(x), "m",
                       scale=0.1)  # larger random kernels make 500 steps chaotic: Keras differs from itself
    result = export(model, tmp_path / "o", quantize="int8,fp16")
    variants = result.manifest.variants
    for name in ("int8", "fp16"):
        assert variants[name]["gate"]["passed"], variants[name]
        assert op_counts(tmp_path / "o" / variants[name]["file"])["Scan"] == 1
        assert any("ConvLSTM" in note for note in variants[name]["notes"]), variants[name]["notes"]
        frames_in = np.random.default_rng(0).normal(size=(2, 5, 12, 12, 8)).astype(np.float32)
        want = np.asarray(model(frames_in))
        got = rnnedge.load(tmp_path / "o", "cpu", variant=name).run(frames_in).data[0]
        np.testing.assert_allclose(got, want, atol=0.05 * np.ptp(want))
