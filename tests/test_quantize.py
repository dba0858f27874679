"""rnnedge.quantize on hand-built ONNX models (opset 17, IR 8): no TensorFlow needed."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from rnnedge.errors import RnnEdgeError
from rnnedge.quantize import VARIANTS, quantize_file, quantize_fp16, quantize_int8

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
INT8_TOL = 0.05
# The mixed model's softmax reads a Gemm over layer-normalised activations: quantizing that
# Gemm's input to uint8 costs up to 0.074 of probability (the same on every CPU with 7-bit
# weights; the lstm-7bit and weight-only settings stay under 0.002, and quantize_dir picks
# them when the gate asks for it).
INT8_SOFTMAX_HEAD_TOL = 0.1
FP16_TOL = 0.01


# --- models -------------------------------------------------------------------------------


def _save(graph: onnx.GraphProto, path) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return str(path)


def recurrent_model(path, cell: str, units: int = 64, *, features: int = 32, outputs: int = 10,
                    bidirectional: bool = False, seed: int = 0, **cell_attrs) -> str:
    """x [B, T, F] -> Transpose -> cell (layout 0) -> last state [B, D*U] -> MatMul + Add -> y [B, outputs].

    GRU has linear_before_reset=1 (Keras' reset_after=True) unless `cell_attrs` says otherwise."""
    rng = np.random.default_rng(seed)

    def uniform(*shape):
        return rng.uniform(-0.2, 0.2, shape).astype(np.float32)

    d, g = (2 if bidirectional else 1), GATES[cell]
    inits = [
        numpy_helper.from_array(uniform(d, g * units, features), "W"),
        numpy_helper.from_array(uniform(d, g * units, units), "R"),
        numpy_helper.from_array(uniform(d, 2 * g * units), "B"),
        numpy_helper.from_array(uniform(d * units, outputs), "dense_w"),
        numpy_helper.from_array(uniform(outputs), "dense_b"),
    ]
    attrs = {"hidden_size": units}
    if cell == "GRU":
        attrs["linear_before_reset"] = 1
    if bidirectional:
        attrs["direction"] = "bidirectional"
    attrs.update(cell_attrs)
    outs = ["Y", "Y_h"] + (["Y_c"] if cell == "LSTM" else [])
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_tbf"], perm=[1, 0, 2]),
        helper.make_node(cell, ["x_tbf", "W", "R", "B"], outs, name=cell.lower(), **attrs),
    ]
    if bidirectional:
        inits.append(numpy_helper.from_array(np.array([0, d * units], np.int64), "flat"))
        nodes += [
            helper.make_node("Transpose", ["Y_h"], ["h_bdu"], perm=[1, 0, 2]),
            helper.make_node("Reshape", ["h_bdu", "flat"], ["h"]),
        ]
    else:
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
        nodes.append(helper.make_node("Squeeze", ["Y_h", "axis0"], ["h"]))
    nodes += [
        helper.make_node("MatMul", ["h", "dense_w"], ["logits0"]),
        helper.make_node("Add", ["logits0", "dense_b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        f"{cell.lower()}_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
        inits,
    )
    return _save(graph, path)


def mixed_model(path, *, vocab: int = 50, embed: int = 16, units: int = 32, seed: int = 0) -> str:
    """int32 ids -> embedding Gather -> Conv1d -> LSTM (sequence_lens, initial h/c) -> GRU ->
    bidirectional RNN -> LayerNormalization -> Gemm -> Where -> Softmax; plus a MatMul on LSTM's Y_h."""
    rng = np.random.default_rng(seed)
    inits = []

    def const(name, array):
        inits.append(numpy_helper.from_array(array, name))
        return name

    def uniform(*shape):
        return rng.uniform(-0.2, 0.2, shape).astype(np.float32)

    u = units
    n = helper.make_node
    nodes = [
        n("Gather", [const("embedding", uniform(vocab, embed)), "ids"], ["e"]),
        n("Transpose", ["e"], ["e_bft"], perm=[0, 2, 1]),
        n("Conv", ["e_bft", const("conv_w", uniform(embed, embed, 3)), const("conv_b", uniform(embed))], ["c"],
          pads=[1, 1]),
        n("Sigmoid", ["c"], ["cs"]),
        n("Transpose", ["cs"], ["x_tbf"], perm=[2, 0, 1]),
        n("Unsqueeze", ["h0", const("axis0", np.array([0], np.int64))], ["h0_"]),
        n("Unsqueeze", ["c0", "axis0"], ["c0_"]),
        n("LSTM", ["x_tbf", const("W1", uniform(1, 4 * u, embed)), const("R1", uniform(1, 4 * u, u)),
                   const("B1", uniform(1, 8 * u)), "lens", "h0_", "c0_"], ["Y1", "Y1_h", "Y1_c"],
          hidden_size=u, name="lstm"),
        n("Squeeze", ["Y1", const("axis1", np.array([1], np.int64))], ["y1"]),
        n("GRU", ["y1", const("W2", uniform(1, 3 * u, u)), const("R2", uniform(1, 3 * u, u)),
                  const("B2", uniform(1, 6 * u)), "lens"], ["Y2"], hidden_size=u, linear_before_reset=1, name="gru"),
        n("Squeeze", ["Y2", "axis1"], ["y2"]),
        n("RNN", ["y2", const("W3", uniform(2, u, u)), const("R3", uniform(2, u, u)), const("B3", uniform(2, 2 * u)),
                  "lens"], ["", "Y3_h"], hidden_size=u, direction="bidirectional", name="rnn"),
        n("Transpose", ["Y3_h"], ["h3"], perm=[1, 0, 2]),
        n("Reshape", ["h3", const("flat", np.array([0, 2 * u], np.int64))], ["h"]),
        n("LayerNormalization", ["h", const("gamma", np.ones(2 * u, np.float32)),
                                 const("beta", np.zeros(2 * u, np.float32))], ["hn"], axis=-1),
        n("Gemm", ["hn", const("gemm_w", uniform(5, 2 * u)), const("gemm_b", uniform(5))], ["logits"], transB=1),
        n("Greater", ["logits", const("zero", np.zeros((), np.float32))], ["positive"]),
        n("Where", ["positive", "logits", const("minus_one", np.full((), -1.0, np.float32))], ["clipped"]),
        n("Softmax", ["clipped"], ["probs"], axis=-1),
        n("MatMul", ["Y1_h", const("head_w", uniform(u, 4))], ["state_head"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mixed_model",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", "time"]),
            helper.make_tensor_value_info("lens", TensorProto.INT32, ["batch"]),
            helper.make_tensor_value_info("h0", TensorProto.FLOAT, ["batch", u]),
            helper.make_tensor_value_info("c0", TensorProto.FLOAT, ["batch", u]),
        ],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 5]),
            helper.make_tensor_value_info("state_head", TensorProto.FLOAT, [1, "batch", 4]),
        ],
        inits,
    )
    return _save(graph, path)


def mixed_feeds(batch: int = 3, time_steps: int = 20, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "ids": rng.integers(0, 50, (batch, time_steps)).astype(np.int32),
        "lens": np.array([time_steps, 7, 1][:batch], np.int32),
        "h0": rng.standard_normal((batch, 32)).astype(np.float32),
        "c0": rng.standard_normal((batch, 32)).astype(np.float32),
    }


def x_feeds(batch: int = 4, time_steps: int = 50, features: int = 32, seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((batch, time_steps, features)).astype(np.float32)}


# --- helpers -------------------------------------------------------------------------------


def session(path, *, threads: int | None = None, optimized=None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if optimized:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def max_diff(a_path, b_path, feeds) -> list[float]:
    a = session(a_path).run(None, feeds)
    b = session(b_path).run(None, feeds)
    return [float(np.abs(x - y).max()) for x, y in zip(a, b)]


def ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(path).graph.node]


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def assert_int8_weight(model: onnx.ModelProto, value: str):
    """`value` is rebuilt from an int8 initializer: Mul(Cast(int8 initializer), float scale)."""
    made = producers(model)
    inits = {t.name: t for t in model.graph.initializer}
    mul = made[value]
    assert mul.op_type == "Mul"
    cast = made[mul.input[0]]
    assert cast.op_type == "Cast"
    assert inits[cast.input[0]].data_type == TensorProto.INT8
    assert inits[mul.input[1]].data_type == TensorProto.FLOAT


# --- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_int8(tmp_path, cell):
    src = recurrent_model(tmp_path / "model.onnx", cell)
    dst = tmp_path / "model.int8.onnx"
    facts = quantize_int8(src, dst)

    assert facts["file"] == "model.int8.onnx" and facts["size"] == dst.stat().st_size
    assert facts["method"].startswith("int8") and facts["notes"]
    json.dumps(facts)
    (diff,) = max_diff(src, dst, x_feeds())
    assert diff < INT8_TOL, diff

    model = onnx.load(dst)
    found = ops(dst)
    assert found.count("MatMulInteger") == 1 and facts["quantized"]["MatMulInteger"] == 1
    if cell == "LSTM":
        assert "DynamicQuantizeLSTM" in found and "LSTM" not in found
        assert facts["quantized"]["DynamicQuantizeLSTM"] == 1
    else:
        (node,) = [n for n in model.graph.node if n.op_type == cell]
        assert_int8_weight(model, node.input[1])
        assert_int8_weight(model, node.input[2])
        assert facts["quantized"][f"weight-only {cell}"] == 1
        assert any(f"no quantized {cell} kernel" in note for note in facts["notes"])
    floats = [t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT and np.prod(t.dims) >= 1024]
    assert floats == [], f"large float initializers left: {floats}"


@pytest.mark.parametrize("cell", ["GRU", "RNN"])
def test_int8_bidirectional_scales_per_direction(tmp_path, cell):
    src = recurrent_model(tmp_path / "model.onnx", cell, bidirectional=True)
    # make the backward weights 10x smaller: one scale shared by both directions would lose them
    model = onnx.load(src)
    for t in model.graph.initializer:
        if t.name in ("W", "R"):
            w = numpy_helper.to_array(t).copy()
            w[1] *= 0.1
            t.CopyFrom(numpy_helper.from_array(w, t.name))
    onnx.save(model, src)
    dst = tmp_path / "model.int8.onnx"
    quantize_int8(src, dst)
    (diff,) = max_diff(src, dst, x_feeds())
    assert diff < INT8_TOL, diff
    q = onnx.load(dst)
    scales = [numpy_helper.to_array(t) for t in q.graph.initializer if t.name.endswith("int8_scale")]
    assert {s.shape for s in scales} == {(2, GATES[cell] * 64, 1)}


def test_int8_weight_only_is_folded_at_load(tmp_path):
    """onnxruntime evaluates Cast + Mul on initializers once: the GRU gets plain float weights."""
    src = recurrent_model(tmp_path / "model.onnx", "GRU")
    dst = tmp_path / "model.int8.onnx"
    quantize_int8(src, dst)
    optimized = tmp_path / "optimized.onnx"
    session(dst, optimized=optimized)
    model = onnx.load(optimized)
    inits = {t.name for t in model.graph.initializer}
    (gru,) = [n for n in model.graph.node if n.op_type == "GRU"]
    assert gru.input[1] in inits and gru.input[2] in inits
    assert "Cast" not in [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_fp16(tmp_path, cell):
    src = recurrent_model(tmp_path / "model.onnx", cell)
    dst = tmp_path / "model.fp16.onnx"
    facts = quantize_fp16(src, dst)

    json.dumps(facts)
    (diff,) = max_diff(src, dst, x_feeds())
    assert diff < FP16_TOL, diff
    model = onnx.load(dst)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT]
    inits = {t.name: t.data_type for t in model.graph.initializer}
    assert inits["W"] == inits["R"] == TensorProto.FLOAT16
    assert cell in ops(dst)
    assert model.ir_version == 8
    assert cell in facts["cpu_fp32_ops"]  # no float16 recurrent kernel on CPU: Casts around it
    assert any(note.startswith("CUDA (cuDNN)") and cell in note for note in facts["notes"])
    assert 0.45 < facts["size_ratio"] < 0.55


def test_fp16_notes_cuda_fallback(tmp_path):
    src = recurrent_model(tmp_path / "model.onnx", "GRU", linear_before_reset=0)
    facts = quantize_fp16(src, tmp_path / "model.fp16.onnx")
    assert any("hands recurrent node gru to the CPU (GRU with linear_before_reset=0)" in n for n in facts["notes"])
    assert not any(n.startswith("CUDA (cuDNN)") for n in facts["notes"])


def test_int8_lstm_size(tmp_path):
    src = recurrent_model(tmp_path / "model.onnx", "LSTM", units=128)
    facts = quantize_file(src, tmp_path / "model.int8.onnx", "int8")
    fp32 = (tmp_path / "model.onnx").stat().st_size
    assert facts["size"] <= 0.30 * fp32, (facts["size"], fp32)


@pytest.mark.parametrize("variant", ["int8", "fp16"])
def test_mixed_model(tmp_path, variant):
    """Embedding, Conv, LSTM with sequence_lens and initial states, GRU, bidirectional RNN, Gemm, ..."""
    src = mixed_model(tmp_path / "model.onnx")
    dst = tmp_path / f"model.{variant}.onnx"
    facts = quantize_file(src, dst, variant)
    json.dumps(facts)
    probs, state_head = max_diff(src, dst, mixed_feeds())
    assert probs < (INT8_SOFTMAX_HEAD_TOL if variant == "int8" else FP16_TOL), probs
    assert state_head < (INT8_TOL if variant == "int8" else FP16_TOL), state_head
    model = onnx.load(dst)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [
        TensorProto.INT32, TensorProto.INT32, TensorProto.FLOAT, TensorProto.FLOAT
    ]
    if variant == "int8":
        assert facts["quantized"] == {
            "DynamicQuantizeLSTM": 1,
            "MatMulInteger": 2,  # quantize_dynamic rewrites Gemm as MatMul + Add
            "weight-only GRU": 1,
            "weight-only RNN": 1,
            "weight-only Conv": 1,
            "weight-only Gather": 1,
        }
        assert facts["size_ratio"] < 0.4
    else:
        assert {"LSTM", "GRU", "RNN"} <= set(facts["cpu_fp32_ops"])


def test_int8_with_calibration(tmp_path):
    """Static QDQ for MatMul/Gemm/Conv. Calibrated on the inputs it is checked on: activations
    outside the calibrated ranges are clipped (0.07 off on `state_head` for a length-1 sequence
    when calibrated on 32 other random sequences)."""
    src = mixed_model(tmp_path / "model.onnx")
    dst = tmp_path / "model.int8.onnx"
    facts = quantize_int8(src, dst, calibration=mixed_feeds())
    probs, state_head = max_diff(src, dst, mixed_feeds())
    assert probs < INT8_SOFTMAX_HEAD_TOL and state_head < INT8_TOL, (probs, state_head)
    assert facts["setting"]["name"] == "static-7bit" and facts["setting"]["portable"]
    assert facts["quantized"]["static Conv"] == 1
    assert facts["quantized"]["static MatMul"] == 2  # quantize_static rewrites Gemm as MatMul + Add too
    assert facts["quantized"]["DynamicQuantizeLSTM"] == 1
    assert facts["quantized"]["weight-only GRU"] == 1
    assert "QuantizeLinear" in ops(dst)


def test_calibration_must_match_inputs(tmp_path):
    src = recurrent_model(tmp_path / "model.onnx", "LSTM")
    with pytest.raises(RnnEdgeError, match=r"expected \['x'\]"):
        quantize_int8(src, tmp_path / "q.onnx", calibration={"input": np.zeros((1, 5, 32), np.float32)})


def test_fp32_variant_is_a_copy(tmp_path):
    src = recurrent_model(tmp_path / "model.onnx", "GRU")
    facts = quantize_file(src, tmp_path / "copy.onnx", "fp32")
    assert (tmp_path / "copy.onnx").read_bytes() == (tmp_path / "model.onnx").read_bytes()
    assert facts["size_ratio"] == 1.0
    assert quantize_file(src, src, "fp32")["file"] == "model.onnx"


def test_unknown_variant(tmp_path):
    src = recurrent_model(tmp_path / "model.onnx", "LSTM")
    with pytest.raises(RnnEdgeError) as e:
        quantize_file(src, tmp_path / "q.onnx", "int4")
    for v in VARIANTS:
        assert v in str(e.value)


def test_bad_sources(tmp_path):
    with pytest.raises(RnnEdgeError, match="does not exist"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "q.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(RnnEdgeError, match="not an ONNX model"):
        quantize_fp16(tmp_path / "junk.onnx", tmp_path / "q.onnx")
    src = recurrent_model(tmp_path / "model.onnx", "LSTM")
    quantize_int8(src, tmp_path / "model.int8.onnx")
    quantize_fp16(src, tmp_path / "model.fp16.onnx")
    with pytest.raises(RnnEdgeError, match="quantized ops"):
        quantize_int8(tmp_path / "model.int8.onnx", tmp_path / "twice.onnx")
    with pytest.raises(RnnEdgeError, match="float16 weights"):
        quantize_fp16(tmp_path / "model.fp16.onnx", tmp_path / "twice.onnx")


def test_fp16_of_an_exported_gru_loads_and_runs(tmp_path):
    """Regression: onnxruntime 1.31 segfaulted building a session for an fp16 Transpose -> GRU graph
    (as every fused export has); run it in a subprocess so a crash fails the test, not the run."""
    import subprocess
    import sys

    keras = pytest.importorskip("keras")
    from rnnedge.pipeline import export

    x = keras.Input((None, 4))
    y = keras.layers.TimeDistributed(keras.layers.Dense(2))(keras.layers.GRU(5, return_sequences=True)(x))
    export(keras.Model(x, y), tmp_path / "m", quantize=["fp16", "int8"])
    code = ("import rnnedge, numpy as np; m = rnnedge.load(r'%s', 'cpu', variant='fp16'); "
            "print(m.run(np.ones((1, 3, 4), 'float32')).data[0].shape)" % (tmp_path / "m"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    assert "(1, 3, 2)" in done.stdout


def test_variants_of_a_streaming_export(tmp_path):
    """A streaming export (state inputs after a skipped sequence_lens) quantizes to every variant,
    and each, run on the golden inputs, is within its gate of Keras' outputs."""
    keras = pytest.importorskip("keras")
    from rnnedge.pipeline import export
    from tests.variants import variant_errors

    keras.utils.set_random_seed(0)
    x = keras.Input((None, 4))
    h = keras.layers.SimpleRNN(24, return_sequences=True)(x)  # big enough for int8 to be smaller than fp32
    result = export(keras.Model(x, keras.layers.LSTM(20)(h)), tmp_path / "m", streaming=True, quantize=["int8", "fp16"])
    variants = result.manifest.variants
    assert set(variants) == {"fp32", "int8", "fp16"}, result.manifest.not_kept
    for variant in ("int8", "fp16"):
        assert variants[variant]["gate"]["passed"], variants[variant]["gate"]
        errors = variant_errors(result.folder, variant)
        assert set(errors) == {s.name for s in result.manifest.data_outputs}
        for output, (diff, bound) in errors.items():
            assert diff <= bound, (variant, output, diff, bound)
            assert variants[variant]["tolerance"][output] == pytest.approx(bound, rel=1e-6), (variant, output)
