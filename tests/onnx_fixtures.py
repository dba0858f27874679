"""Tiny export folders built by hand with `onnx.helper`, for runtime tests without TensorFlow.

Each builder writes `DIR/model.onnx` and `DIR/manifest.json` the way `rnnedge export` lays them
out: data inputs first, then state inputs ("batch"-major, [batch, units]); data outputs first,
then state outputs whose `feeds` names the state input they go back into. The GRU nodes use
layout 0 ([time, batch, features]) behind Transposes, like the exporter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnedge.manifest import MODEL, Manifest, TensorSpec

OPSET = 17
IR_VERSION = 8  # onnx 1.23 writes IR 14 by default; onnxruntime 1.31 loads at most 13

_ONNX_TYPES = {"float32": TensorProto.FLOAT, "int32": TensorProto.INT32, "int64": TensorProto.INT64}


def _vi(spec: TensorSpec):
    return helper.make_tensor_value_info(spec.name, _ONNX_TYPES[spec.dtype], list(spec.shape))


def _write(folder, nodes, inits, inputs, outputs, *, name, streaming, **manifest_fields) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        nodes, name, [_vi(t) for t in inputs], [_vi(t) for t in outputs], initializer=inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, folder / MODEL)
    Manifest(
        inputs=list(inputs),
        outputs=list(outputs),
        opset=OPSET,
        ir_version=IR_VERSION,
        source={"name": name, "kind": "test"},
        streaming=streaming,
        **manifest_fields,
    ).save(folder)
    return folder


def _const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _gru_weights(rng, features, units, prefix="gru"):
    w = rng.normal(0, 0.5, (1, 3 * units, features)).astype(np.float32)
    r = rng.normal(0, 0.5, (1, 3 * units, units)).astype(np.float32)
    b = rng.normal(0, 0.1, (1, 6 * units)).astype(np.float32)
    return [_const(f"{prefix}_W", w), _const(f"{prefix}_R", r), _const(f"{prefix}_B", b)]


def gru_folder(folder, *, features=4, units=8, classes=3, streaming=True, seed=0, extra_input=False,
               pad_value=None):
    """x [batch, time, features] -> GRU -> y [batch, time, units] and probs [batch, classes].

    streaming: adds state input `h` [batch, units] and state output `h_out` (feeds `h`).
    extra_input: a second data input `aux` [batch, time, 2] concatenated on features.
    pad_value: recorded on `x` in the manifest only (as for Keras Masking), for input checks.
    """
    rng = np.random.default_rng(seed)
    x = TensorSpec("x", ("batch", "time", features), "float32", pad_value=pad_value)
    inputs = [x]
    nodes = []
    seq = "x"
    feat = features
    if extra_input:
        inputs.append(TensorSpec("aux", ("batch", "time", 2), "float32"))
        nodes.append(helper.make_node("Concat", ["x", "aux"], ["xa"], axis=2))
        seq, feat = "xa", features + 2
    inits = _gru_weights(rng, feat, units)
    inits += [
        _const("axis0", np.array([0], np.int64)),
        _const("axis1", np.array([1], np.int64)),
        _const("dense_W", rng.normal(0, 0.5, (units, classes)).astype(np.float32)),
    ]
    nodes.append(helper.make_node("Transpose", [seq], ["x_tbf"], perm=[1, 0, 2]))
    gru_inputs = ["x_tbf", "gru_W", "gru_R", "gru_B"]
    if streaming:
        inputs.append(TensorSpec("h", ("batch", units), "float32", role="state", layer="gru"))
        nodes.append(helper.make_node("Unsqueeze", ["h", "axis0"], ["h0"]))
        gru_inputs += ["", "h0"]
    nodes += [
        helper.make_node("GRU", gru_inputs, ["Y", "Y_h"], hidden_size=units, linear_before_reset=1, layout=0),
        helper.make_node("Squeeze", ["Y", "axis1"], ["Y_tbu"]),
        helper.make_node("Transpose", ["Y_tbu"], ["y"], perm=[1, 0, 2]),
        helper.make_node("Squeeze", ["Y_h", "axis0"], ["h_last"]),
        helper.make_node("MatMul", ["h_last", "dense_W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    outputs = [
        TensorSpec("y", ("batch", "time", units), "float32"),
        TensorSpec("probs", ("batch", classes), "float32"),
    ]
    if streaming:
        nodes.append(helper.make_node("Identity", ["h_last"], ["h_out"]))
        outputs.append(TensorSpec("h_out", ("batch", units), "float32", role="state", feeds="h", layer="gru"))
    return _write(folder, nodes, inits, inputs, outputs, name="gru", streaming=streaming)


def token_folder(folder, *, vocab=10, features=4, units=8, dtype="int64", seed=1):
    """tokens [batch, time] (ids in [0, vocab), 0 = padding) -> Embedding -> masked GRU.

    The mask becomes `sequence_lens`; a row with no valid step keeps its state (the Where
    around Y_h, as the exporter writes it, since ONNX gives Y_h = 0 for length 0).
    Outputs y [batch, time, units] and the state h_out (feeds h).
    """
    rng = np.random.default_rng(seed)
    inputs = [
        TensorSpec("tokens", ("batch", "time"), dtype, vocab=vocab, pad_value=0, layer="embedding"),
        TensorSpec("h", ("batch", units), "float32", role="state", layer="gru"),
    ]
    inits = _gru_weights(rng, features, units) + [
        _const("emb", rng.normal(0, 1, (vocab, features)).astype(np.float32)),
        _const("axis0", np.array([0], np.int64)),
        _const("axis1", np.array([1], np.int64)),
        _const("pad", np.array(0, np.int64)),
        _const("zero_len", np.array(0, np.int32)),
    ]
    nodes = [
        helper.make_node("Cast", ["tokens"], ["tok64"], to=TensorProto.INT64),
        helper.make_node("Gather", ["emb", "tokens"], ["e"], axis=0),
        helper.make_node("Transpose", ["e"], ["e_tbf"], perm=[1, 0, 2]),
        helper.make_node("Equal", ["tok64", "pad"], ["is_pad"]),
        helper.make_node("Not", ["is_pad"], ["valid"]),
        helper.make_node("Cast", ["valid"], ["valid_i"], to=TensorProto.INT32),
        helper.make_node("ReduceSum", ["valid_i", "axis1"], ["lens"], keepdims=0),
        helper.make_node("Unsqueeze", ["h", "axis0"], ["h0"]),
        helper.make_node(
            "GRU", ["e_tbf", "gru_W", "gru_R", "gru_B", "lens", "h0"], ["Y", "Y_h"],
            hidden_size=units, linear_before_reset=1, layout=0,
        ),
        helper.make_node("Squeeze", ["Y", "axis1"], ["Y_tbu"]),
        helper.make_node("Transpose", ["Y_tbu"], ["y"], perm=[1, 0, 2]),
        helper.make_node("Squeeze", ["Y_h", "axis0"], ["h_gru"]),
        helper.make_node("Equal", ["lens", "zero_len"], ["empty"]),
        helper.make_node("Unsqueeze", ["empty", "axis1"], ["empty_col"]),
        helper.make_node("Where", ["empty_col", "h", "h_gru"], ["h_out"]),
    ]
    outputs = [
        TensorSpec("y", ("batch", "time", units), "float32"),
        TensorSpec("h_out", ("batch", units), "float32", role="state", feeds="h", layer="gru"),
    ]
    return _write(folder, nodes, inits, inputs, outputs, name="tokens", streaming=True)


def bidirectional_folder(folder, *, features=4, units=8, seed=2):
    """x [batch, time, features] -> bidirectional GRU -> y [batch, 2 * units]: not streamable."""
    rng = np.random.default_rng(seed)
    fw, bw = _gru_weights(rng, features, units, "f"), _gru_weights(rng, features, units, "b")
    inits = [
        _const(f"gru_{k}", np.concatenate([numpy_helper.to_array(a), numpy_helper.to_array(b)]))
        for k, a, b in zip("WRB", fw, bw)
    ]
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_tbf"], perm=[1, 0, 2]),
        helper.make_node(
            "GRU", ["x_tbf", "gru_W", "gru_R", "gru_B"], ["", "Y_h"],
            hidden_size=units, linear_before_reset=1, layout=0, direction="bidirectional",
        ),
        helper.make_node("Transpose", ["Y_h"], ["h_bdu"], perm=[1, 0, 2]),
        helper.make_node("Flatten", ["h_bdu"], ["y"], axis=1),
    ]
    inputs = [TensorSpec("x", ("batch", "time", features), "float32")]
    outputs = [TensorSpec("y", ("batch", 2 * units), "float32")]
    return _write(folder, nodes, inits, inputs, outputs, name="bigru", streaming=False)


def identity_folder(folder, *, features=4, units=8, streaming=True):
    """The cheapest streaming graph: y = Identity(x), h_out = Identity(h). For overhead timing."""
    inputs = [TensorSpec("x", ("batch", "time", features), "float32")]
    outputs = [TensorSpec("y", ("batch", "time", features), "float32")]
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    if streaming:
        inputs.append(TensorSpec("h", ("batch", units), "float32", role="state"))
        outputs.append(TensorSpec("h_out", ("batch", units), "float32", role="state", feeds="h"))
        nodes.append(helper.make_node("Identity", ["h"], ["h_out"]))
    return _write(folder, nodes, [], inputs, outputs, name="identity", streaming=streaming)
