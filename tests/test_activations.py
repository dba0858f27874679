"""Keras activations in recurrent layers: those the fused ONNX nodes compute exactly in
onnxruntime stay fused; the others (gelu, silu, selu, softplus, ...) become an exact Scan that
rnnedge writes itself. Every case goes through the real `rnnedge.export` path (parity against
Keras on several batch sizes, lengths and padded rows; ParityError on a mismatch), with the
graph's structure and the manifest's route checked beside it."""

from __future__ import annotations

import collections
import re
import warnings

import keras
import numpy as np
import onnx
import pytest
from keras import layers as L

import rnnedge
from rnnedge import ParityError
from rnnedge.check import read_golden
from rnnedge.errors import RnnEdgeError
from rnnedge.exporter.convert import activations, scan
from rnnedge.exporter.convert.activations import RNN_ACTIVATIONS
from rnnedge.pipeline import export
from tests.helpers import op_counts
from tests.kmodels import functional, seq_input, sequential, tokens_input

# Checked fused here (tanh, sigmoid, relu, linear, hard_sigmoid: tests/test_convert.py; Keras 2's
# hard_sigmoid, keras2_hard_sigmoid: tests/test_keras2.py).
FUSED = ("elu", "softsign", "leaky_relu")
# No fused ONNX form (softplus: onnxruntime's fused kernels overflow past x = 88): a Scan.
SCANNED = ("gelu", "silu", "selu", "softplus", "hard_silu", "exponential", "relu6", "mish", "softmax", "log_softmax")
LAYERS = {  # name -> (Keras layer, extra arguments, ONNX op)
    "LSTM": (L.LSTM, {}, "LSTM"),
    "GRU": (L.GRU, {}, "GRU"),
    "GRU-reset-before": (L.GRU, {"reset_after": False}, "GRU"),
    "SimpleRNN": (L.SimpleRNN, {}, "RNN"),
}
# Small weights: unbounded activations would otherwise make random recurrent weights explode within
# the 16 steps of the parity cases, in Keras too (a gate above 1 or below 0 compounds every step).
SCALE = 0.25
GATE_SCALE = {"exponential": 0.1, "relu6": 0.2, "log_softmax": 0.1, "selu": 0.1}
# A GRU's gate z mixes h = z*h + (1-z)*h~: an unbounded gate activation (elu, softplus, exponential,
# leaky_relu...) past [0, 1] makes h grow every step, to infinity within the 500-step case at any
# larger scale (where float rounding alone decides which framework overflows first).
GRU_GATE_SCALE = 0.05
# log_softmax is negative everywhere, exponential above 1 for any positive input: as GRU gates,
# h = z*h + (1-z)*h~ grows without bound at any scale (Keras gives inf or NaN within the 500-step
# case), so those pairs have no meaningful parity case.
MATRIX = [(act, layer, role) for act in FUSED + SCANNED for layer in LAYERS
          for role in ("activation", "recurrent_activation") if not (layer == "SimpleRNN" and role != "activation")
          and not (act in ("log_softmax", "exponential") and layer.startswith("GRU")
                   and role == "recurrent_activation")]


def ops(folder) -> collections.Counter:
    return op_counts(folder / "model.onnx")


def assert_route(result, folder, layer: str, act: str | None, op: str, n: int = 1):
    """`act` None: the layer is fused (n nodes of op). Otherwise it is n Scans, named in the manifest."""
    counts = ops(folder)
    assert counts.get("Loop", 0) == 0
    if act is None:
        assert counts.get(op, 0) == n and counts.get("Scan", 0) == 0, counts
        assert result.manifest.layers[layer] == "fused" and len(result.manifest.fused_nodes[layer]) == n
    else:
        assert counts.get("Scan", 0) == n and not any(counts.get(o, 0) for o in ("LSTM", "GRU", "RNN")), counts
        assert result.manifest.layers[layer] == "scan" and len(result.manifest.scan_nodes[layer]) == n
        assert f"'{act}'" in result.manifest.notes[layer] and "Scan" in result.manifest.notes[layer]
        assert layer not in result.manifest.fused_nodes


@pytest.mark.parametrize("act, layer, role", MATRIX, ids=["-".join(m) for m in MATRIX])
def test_activation_matches_keras(act, layer, role, tmp_path):
    Layer, extra, op = LAYERS[layer]
    keras.utils.set_random_seed(0)
    x = seq_input()
    scale = GRU_GATE_SCALE if layer.startswith("GRU") and role == "recurrent_activation" else GATE_SCALE.get(act, SCALE)
    model = functional(x, Layer(4, return_sequences=True, name="rec", **{role: act}, **extra)(x), "m", scale=scale)
    result = export(model, tmp_path / "o")  # raises ParityError on a mismatch
    assert result.passed and len(result.parity.cases) >= 3
    keras_out = np.concatenate([v.ravel() for _, _, out in read_golden(tmp_path / "o") for v in out.values()])
    assert np.isfinite(keras_out).all() and np.std(keras_out) > 1e-3  # so that parity means something
    assert_route(result, tmp_path / "o", "rec", None if act in FUSED else keras.activations.get(act).__name__, op)
    print(f"{act} {layer} {role}: max |diff| {result.parity.worst_abs:.2e}")


def test_the_fused_table_holds_only_checked_activations():
    """An activation added to RNN_ACTIVATIONS without a parity case here fails this test."""
    assert set(RNN_ACTIVATIONS) == {"sigmoid", "tanh", "relu", "linear", "hard_sigmoid", "keras2_hard_sigmoid", *FUSED}


def test_large_softplus_inputs_stay_finite(tmp_path):
    """Past x = 88 onnxruntime's fused Softplus gives inf where Keras gives x: the Scan does not."""
    x = seq_input()
    model = keras.Model(x, L.SimpleRNN(4, activation="softplus", return_sequences=True, name="rec")(x))
    kernel, recurrent = np.ones((5, 4), np.float32), np.eye(4, dtype=np.float32)  # h grows by 15 a step
    model.get_layer("rec").set_weights([kernel, recurrent, np.zeros(4, np.float32)])
    export(model, tmp_path / "o")
    x = np.full((1, 30, 5), 3.0, np.float32)
    want = np.asarray(model(x))
    assert want.max() > 100  # inputs past softplus' overflow point of log(1 + exp(x))
    got = rnnedge.load(tmp_path / "o", "cpu").run(x).data[0]
    np.testing.assert_allclose(got, want, rtol=1e-5)


# ------------------------------------------------------------- a Scan layer in every setting

def build(name: str, cell: str):
    """Models for the options the fused path supports, with a Scan layer (gelu) of `cell` (a key of LAYERS)."""
    Layer, kw, op = LAYERS[cell]
    kw = {**kw, "activation": "gelu"}
    n_states = 2 if op == "LSTM" else 1
    if name == "masking-sequences-state":  # a Masking layer: padded rows of every kind in the parity cases
        return sequential([seq_input(), L.Masking(0.0), Layer(4, return_sequences=True, return_state=True, name="rec",
                                                             **kw)], "s")
    if name == "embedding-mask-backwards":
        return functional(t := tokens_input(), Layer(4, go_backwards=True, return_sequences=True, return_state=True,
                                                     name="rec", **kw)(L.Embedding(12, 5, mask_zero=True)(t)), "m")
    if name == "backwards-last":
        return functional(x := seq_input(), Layer(4, go_backwards=True, name="rec", **kw)(x), "m")
    if name == "bidirectional-masked":
        return functional(t := tokens_input(), L.Bidirectional(Layer(4, return_sequences=True, return_state=True, **kw),
                                                               name="rec")(L.Embedding(12, 5, mask_zero=True)(t)), "m")
    if name == "bidirectional-sum-last":
        return functional(x := seq_input(), L.Bidirectional(Layer(4, **kw), merge_mode="sum", name="rec")(x), "m")
    if name == "initial-state":
        return functional([x := seq_input(), *(s := [keras.Input((4,), name=f"s{i}") for i in range(n_states)])],
                          Layer(4, return_sequences=True, return_state=True, name="rec", **kw)(x, initial_state=s), "m")
    if name == "rnn-cell":
        Cell = {L.LSTM: L.LSTMCell, L.GRU: L.GRUCell, L.SimpleRNN: L.SimpleRNNCell}[Layer]
        return functional(x := seq_input(), L.RNN(Cell(4, **kw), return_sequences=True, return_state=True,
                                                  name="rec")(x), "m")
    if name == "stateful":
        return functional(x := seq_input(batch=2), Layer(4, stateful=True, return_sequences=True, name="rec", **kw)(x),
                          "m")
    raise KeyError(name)


SETTINGS = ("masking-sequences-state", "embedding-mask-backwards", "backwards-last", "bidirectional-masked",
            "bidirectional-sum-last", "initial-state", "rnn-cell", "stateful")


@pytest.mark.parametrize("cell", list(LAYERS))
@pytest.mark.parametrize("setting", SETTINGS)
def test_scan_layer_matches_keras(setting, cell, tmp_path):
    op = LAYERS[cell][2]
    keras.utils.set_random_seed(0)
    model = build(setting, cell)
    result = export(model, tmp_path / "o")
    assert result.passed, result.parity.failures()
    assert all(len(c.outputs) >= len(keras.tree.flatten(model.outputs)) for c in result.parity.cases)
    assert_route(result, tmp_path / "o", "rec", "gelu", op, n=2 if setting.startswith("bidirectional") else 1)
    if setting == "stateful":  # the export's parity fed random states; here two consecutive Keras calls
        stream = rnnedge.load(tmp_path / "o", "cpu").stream(batch=2)
        model.get_layer("rec").reset_state()
        rng = np.random.default_rng(3)
        for _ in range(2):
            chunk = rng.normal(size=(2, 4, 5)).astype("float32")
            np.testing.assert_allclose(stream.push(chunk).data[0], np.asarray(model(chunk)), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
def test_scan_layer_streams_in_chunks(cell, masked, tmp_path):
    Layer, _, op = LAYERS[cell]
    keras.utils.set_random_seed(0)
    if masked:
        model = functional(t := tokens_input(), Layer(4, activation="selu", return_sequences=True, name="rec")(
            L.Embedding(12, 5, mask_zero=True)(t)), "m")
    else:
        model = functional(x := seq_input(), Layer(4, activation="selu", return_sequences=True, name="rec")(x), "m")
    result = export(model, tmp_path / "o", streaming=True)
    assert result.passed, result.parity.failures()
    assert any("streamed in chunks of 1" in c.case for c in result.parity.cases)
    assert len(result.manifest.state_inputs) == (2 if op == "LSTM" else 1)
    assert_route(result, tmp_path / "o", "rec", "selu", op)


def test_stacked_cells_mix_a_scan_and_a_fused_node(tmp_path):
    keras.utils.set_random_seed(0)
    cells = [L.LSTMCell(4, recurrent_activation="silu"), L.GRUCell(3), L.SimpleRNNCell(3, activation="gelu")]
    model = functional(t := tokens_input(), L.RNN(L.StackedRNNCells(cells), return_sequences=True, return_state=True,
                                                  name="rec")(L.Embedding(12, 5, mask_zero=True)(t)), "m")
    result = export(model, tmp_path / "o")
    assert result.passed, result.parity.failures()
    counts = ops(tmp_path / "o")
    assert counts["Scan"] == 2 and counts["GRU"] == 1
    assert result.manifest.layers["rec"] == "scan" and result.manifest.fused_nodes["rec"]
    assert "'gelu', 'silu'" in result.manifest.notes["rec"]


def test_a_wrong_scan_fails_parity(tmp_path, monkeypatch):
    """The parity check can fail: a Scan computing gelu as the identity must be caught."""
    original = activations.apply
    monkeypatch.setattr(scan, "apply", lambda g, x, fn, hint: x if activations.keras_name(fn) == "gelu"
                        else original(g, x, fn, hint))
    keras.utils.set_random_seed(0)
    x = seq_input()
    with pytest.raises(ParityError):
        export(functional(x, L.GRU(4, activation="gelu")(x), "m"), tmp_path / "o")


# ------------------------------------------------------------- --allow-loop when tf2onnx's graph cannot run

def exact_gelu(x):  # a Python function: neither fused nor in rnnedge's Scan, so only tf2onnx converts it
    return keras.ops.gelu(x, approximate=False)  # tf2onnx keeps TensorFlow's Erfc, which ONNX lacks


def assert_one_line(message: str, *phrases):
    assert "\n" not in message and len(message) <= 300, message
    assert "/tmp" not in message and "upgrade" not in message, message
    for p in phrases:
        assert p in message, message


def test_allow_loop_fallback_onnxruntime_cannot_run_is_one_line(tmp_path):
    x = seq_input()
    model = functional(x, L.LSTM(3, activation=exact_gelu, name="odd")(x), "m")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RnnEdgeError) as err:
            export(model, tmp_path / "o", allow_loop=True)
    assert_one_line(str(err.value), "layer 'odd' (LSTM)", "--allow-loop", "onnxruntime cannot run", "op Erfc")
    assert not (tmp_path / "o").exists()


def test_gelu_forced_through_the_fallback_is_one_line(tmp_path, monkeypatch):
    """Keras' own gelu, had rnnedge no Scan for it: tf2onnx's Loop holds Erfc."""
    monkeypatch.setattr("rnnedge.exporter.convert.recurrent.scan_nodes",
                        lambda ctx, layer, *a, **k: ctx.fail(layer, "activation 'gelu' (forced through the fallback)"))
    x = seq_input()
    model = functional(x, L.GRU(3, activation="gelu", name="odd")(x), "m")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RnnEdgeError) as err:
            export(model, tmp_path / "o", allow_loop=True)
    assert_one_line(str(err.value), "layer 'odd' (GRU)", "op Erfc")


def test_a_scan_model_quantizes(tmp_path):
    """int8 quantizes the MatMuls around the Scan (its body stays float32), fp16 keeps the Scan float32
    behind Casts; the accuracy gate judges both against Keras' golden outputs."""
    keras.utils.set_random_seed(0)
    x = seq_input(64)  # int8 is kept only when smaller than fp32: a Scan's own weights stay float32
    model = functional(x, L.Dense(3)(L.GRU(16, activation="gelu", return_sequences=True, name="rec")(x)), "m",
                       scale=0.1)  # gelu is unbounded: larger weights drift apart over the 500-step case
    result = export(model, tmp_path / "o", quantize="int8,fp16")
    variants = result.manifest.variants
    for name in ("int8", "fp16"):
        assert variants[name]["gate"]["passed"], variants[name]
        in_file = collections.Counter(n.op_type for n in onnx.load(tmp_path / "o" / variants[name]["file"]).graph.node)
        assert in_file["Scan"] == 1, in_file
        assert any("Scan" in note for note in variants[name]["notes"]), variants[name]["notes"]
    for name in ("int8", "fp16"):  # onnxruntime's full optimisation level (where a float16 Transpose crashed it)
        x = np.random.default_rng(0).normal(size=(2, 9, 64)).astype(np.float32)
        got = rnnedge.load(tmp_path / "o", "cpu", variant=name).run(x).data[0]
        want = np.asarray(model(x))
        # the gate held 2% of the range on the golden data; on other inputs, within a few percent
        np.testing.assert_allclose(got, want, atol=0.05 * np.ptp(want))


@pytest.mark.parametrize("setting, says", [("bidirectional-sum-last", "Scan node 'rec/GRU_bw/Scan' runs reverse"),
                                           ("backwards-last", "Scan node 'rec/GRU/Scan' runs reverse")])
def test_a_scan_model_that_cannot_stream_says_why(setting, says, tmp_path):
    keras.utils.set_random_seed(0)
    export(build(setting, "GRU"), tmp_path / "o")
    with pytest.raises(RnnEdgeError, match="cannot stream") as err:
        rnnedge.load(tmp_path / "o", "cpu").stream(batch=1)
    assert says in str(err.value)


# Every activation `activations.apply` writes as standalone ONNX ops (Dense, Activation, TimeDistributed
# layers outside the recurrent ones), with Keras' defaults (leaky_relu: negative_slope 0.2; elu: alpha 1).
STANDALONE = ("relu", "sigmoid", "tanh", "elu", "selu", "softplus", "softsign", "exponential", "softmax",
              "log_softmax", "hard_sigmoid", "silu", "hard_silu", "relu6", "leaky_relu", "gelu", "mish", "linear")


def test_activations_outside_recurrent_layers_match_keras(tmp_path):
    """Per activation, Dense(activation=act) on every step of a fused LSTM's sequence and
    Activation(act) on a GRU's last state, all in one model: parity with Keras for every output
    (ParityError otherwise), with pre-activations of both signs and beyond [-1, 1] so that the
    negative side (elu, leaky_relu's slope) counts."""
    keras.utils.set_random_seed(0)
    x = seq_input()
    seq = L.LSTM(6, return_sequences=True, name="rec")(x)
    pre = L.Dense(3, name="pre")(L.GRU(5, name="rec2")(seq))
    outputs = [L.Dense(4, activation=act, name=f"dense_{act}")(seq) for act in STANDALONE]
    outputs += [L.Activation(act, name=f"act_{act}")(pre) for act in STANDALONE]
    model = functional(x, outputs, "m", scale=0.8)
    result = export(model, tmp_path / "o")  # raises ParityError on a mismatch
    assert result.passed and len(result.manifest.data_outputs) == 2 * len(STANDALONE)
    assert ops(tmp_path / "o")["LSTM"] == 1 and ops(tmp_path / "o")["GRU"] == 1 and not ops(tmp_path / "o")["Loop"]
    probe = keras.Model(x, [pre, model.get_layer("dense_linear").output])
    seen = [np.concatenate([np.asarray(p).ravel() for _, inputs, _ in read_golden(tmp_path / "o")
                            for p in [probe(inputs["x"])[k]]]) for k in range(2)]
    for values in seen:
        assert values.min() < -1 and values.max() > 1, (values.min(), values.max())  # both sides of 0


def test_every_standalone_activation_is_checked():
    """An activation `apply` writes, added without a case above, fails this test."""
    import inspect

    written = set(re.findall(r'"([a-z][a-z_0-9]*)"', inspect.getsource(activations.apply)))  # ONNX ops: capitals
    assert written - {"swish", "hard_swish", "keras2_hard_sigmoid"} == set(STANDALONE)  # aliases, Keras 2's


def test_activation_layers_are_converted_by_rnnedge_and_match_keras(tmp_path):
    """ReLU (plain, capped with a slope), LeakyReLU, ELU and Softmax layers around a fused LSTM, one
    of them on masked embeddings: parity with Keras on both signs (ParityError otherwise), and none
    spliced from tf2onnx. A ReLU with a threshold goes to tf2onnx, saying why."""
    keras.utils.set_random_seed(0)
    x, t = seq_input(), tokens_input()
    seq = L.LSTM(6, return_sequences=True, name="rec")(L.Dense(5, name="pre")(x))
    layers = [L.ReLU(name="relu"), L.ReLU(max_value=0.3, negative_slope=0.25, name="relu_capped"),
              L.LeakyReLU(negative_slope=0.15, name="leaky"), L.ELU(alpha=0.6, name="elu"),
              L.Softmax(axis=-1, name="softmax")]
    outputs = [layer(seq) for layer in layers]
    outputs.append(L.GRU(3, name="masked")(L.ReLU(max_value=0.5, name="relu_masked")(
        L.Embedding(12, 5, mask_zero=True, embeddings_initializer=keras.initializers.RandomNormal(0, 1))(t))))
    result = export(functional([x, t], outputs, "m", scale=1.5), tmp_path / "o")
    assert result.passed and not result.manifest.tf2onnx_layers, result.manifest.notes
    counts = ops(tmp_path / "o")
    assert (counts["Relu"], counts["LeakyRelu"], counts["Min"], counts["Elu"], counts["Softmax"]) == (2, 2, 2, 1, 1)
    seen = np.concatenate([np.asarray(keras.Model(x, seq)(inputs["x"])).ravel()
                           for _, inputs, _ in read_golden(tmp_path / "o")])
    assert seen.min() < -0.5 and seen.max() > 0.5, (seen.min(), seen.max())  # both slopes and the cap count

    keras.utils.set_random_seed(0)
    x = seq_input()
    result = export(functional(x, L.ReLU(threshold=0.1, name="cut")(L.LSTM(4, return_sequences=True)(x)), "m"),
                    tmp_path / "t")
    assert result.passed and result.manifest.tf2onnx_layers == ["cut"]
    assert "threshold" in result.manifest.notes["cut"]
