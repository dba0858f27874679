"""Masks of every pattern (front, back, gaps, fully masked, none) exact in the ONNX graph:
real Keras outputs against real onnxruntime outputs over cell x direction x return_sequences,
streaming exports fed in chunks, every mask source, and several stateful layers in one model.

Models are built once per parameter set (module-level caches) and run once on a batch holding
one row of each pattern; each test then checks its row.
"""

from __future__ import annotations

import collections
import functools

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from keras import layers as L

import rnnedge
from rnnedge.errors import RnnEdgeError
from rnnedge.exporter.convert import convert
from rnnedge.pipeline import export
from tests.helpers import assert_fused
from tests.kmodels import CELLS, ONNX_OP, randomize

ATOL, RTOL = 1e-5, 1e-4
T, F, UNITS = 7, 3, 5
PATTERNS = {
    "front": [0, 0, 0, 1, 1, 1, 1],  # keras.utils.pad_sequences' default
    "back": [1, 1, 1, 1, 0, 0, 0],
    "gap": [1, 0, 0, 1, 1, 0, 1],
    "all": [0, 0, 0, 0, 0, 0, 0],  # a fully masked row
    "none": [1, 1, 1, 1, 1, 1, 1],
}
ROWS = list(PATTERNS)
MASK = np.array([PATTERNS[p] for p in ROWS], bool)
X = np.random.default_rng(0).normal(size=(len(ROWS), T, F)).astype(np.float32)
DIRECTIONS = ("forward", "backwards", "bidirectional")
CHUNKS = (1, 3, T)


def session(proto: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def check_structure(proto: onnx.ModelProto, expected: dict):
    assert_fused(proto, expected)


def keras_flat(model, inputs) -> list[np.ndarray]:
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(model(inputs, training=False))]


def close(got, want, what):
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=what)


# ------------------------------------------------------------------ the matrix, whole sequences


def layer(cell, direction, return_sequences, **kw):
    Layer = CELLS[cell][0]
    if direction == "bidirectional":
        return L.Bidirectional(Layer(UNITS, return_sequences=return_sequences, return_state=True, **kw))
    return Layer(UNITS, return_sequences=return_sequences, return_state=True, go_backwards=direction == "backwards",
                 **kw)


@functools.cache
def whole(cell, direction, return_sequences, zero_output=False):
    """(Keras outputs, onnxruntime outputs) on X with MASK, for a model with an explicit bool mask input."""
    keras.utils.set_random_seed(1)
    x, m = keras.Input((None, F), name="x"), keras.Input((None,), dtype="bool", name="m")
    kw = {"zero_output_for_mask": True} if zero_output else {}
    model = randomize(keras.Model([x, m], layer(cell, direction, return_sequences, **kw)(x, mask=m)))
    converted = convert(model)
    check_structure(converted.onnx_model, {ONNX_OP[cell]: 1})
    assert [(s.name, s.dtype) for s in converted.inputs] == [("x", "float32"), ("m", "bool")]
    got = session(converted.onnx_model).run(None, {"x": X, "m": MASK})
    return keras_flat(model, [X, MASK]), got


@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("pattern", ROWS)
def test_mask_pattern_matches_keras(pattern, cell, direction, return_sequences):
    want, got = whole(cell, direction, return_sequences)
    row = ROWS.index(pattern)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        close(g[row], w[row], f"output {i}")


@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
@pytest.mark.parametrize("direction", ["forward", "backwards"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_zero_output_for_mask(cell, direction, return_sequences):
    want, got = whole(cell, direction, return_sequences, zero_output=True)
    for i, (g, w) in enumerate(zip(got, want)):
        close(g, w, f"output {i}")
    if return_sequences:  # zeros at every masked step, and only there (the check can fail)
        mask = MASK[:, ::-1] if direction == "backwards" else MASK  # go_backwards: in processing order
        assert np.all(got[0][~mask] == 0) and np.all(np.abs(got[0][mask]).sum(-1) > 0)


def test_masked_outputs_are_not_trivial():
    """Guards the matrix: the patterns give different outputs, and masked steps repeat the previous output."""
    want, got = whole("GRU", "forward", True)
    y = got[0]
    assert np.all(y[ROWS.index("all")] == 0)
    front = y[ROWS.index("front")]
    assert np.all(front[:3] == 0) and np.all(np.abs(front[3:]).sum(-1) > 0)
    gap = y[ROWS.index("gap")]
    np.testing.assert_array_equal(gap[1], gap[0])  # a masked step repeats the last valid output
    assert not np.allclose(y[ROWS.index("front"), -1], y[ROWS.index("none"), -1])


# --------------------------------------------------------------------- streaming, chunk by chunk


@functools.cache
def streamed(cell, return_sequences):
    """(Keras on the whole sequence, the ONNX session, the converted model) for a --streaming export."""
    keras.utils.set_random_seed(2)
    x, m = keras.Input((None, F), name="x"), keras.Input((None,), dtype="bool", name="m")
    model = randomize(keras.Model([x, m], layer(cell, "forward", return_sequences)(x, mask=m)))
    converted = convert(model, streaming=True)
    check_structure(converted.onnx_model, {ONNX_OP[cell]: 1})
    return keras_flat(model, [X, MASK]), session(converted.onnx_model), converted


def push_chunks(sess, converted, chunk):
    """Feed X and MASK `chunk` steps at a time, carrying each state output into its state input."""
    state = {s.name: np.zeros((len(X), *s.shape[1:]), np.float32) for s in converted.inputs if s.role == "state"}
    names = [s.name for s in converted.outputs]
    pieces = []
    for t in range(0, T, chunk):
        out = dict(zip(names, sess.run(names, {"x": X[:, t:t + chunk], "m": MASK[:, t:t + chunk], **state})))
        state = {s.feeds: out[s.name] for s in converted.outputs if s.role == "state"}
        pieces.append([out[s.name] for s in converted.outputs if s.role == "data"])
    return pieces, state


@pytest.mark.parametrize("chunk", CHUNKS, ids=["chunk1", "chunk3", "whole"])
@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("pattern", ROWS)
def test_stream_in_chunks_matches_keras_on_the_whole_sequence(pattern, cell, return_sequences, chunk):
    want, sess, converted = streamed(cell, return_sequences)
    pieces, state = push_chunks(sess, converted, chunk)
    row = ROWS.index(pattern)
    if return_sequences:
        close(np.concatenate([p[0] for p in pieces], axis=1)[row], want[0][row], "sequence")
    else:
        close(pieces[-1][0][row], want[0][row], "last output")
    for i in range(1, len(want)):  # return_state: the states after the last chunk
        close(pieces[-1][i][row], want[i][row], f"state {i}")
    carried = [state[s.name] for s in converted.inputs if s.role == "state"]
    for i, s in enumerate(carried):
        close(s[row], want[1 + i][row], f"carried state {i}")


# ---------------------------------------------------------------------- mask sources, stacks


def _masked_input(source):
    """(keras inputs, the sequence fed to the recurrent layers, kwargs for the first layer, numpy feeds)."""
    x = keras.Input((None, F), name="x")
    if source == "masking":
        return [x], L.Masking(0.0)(x), {}, [np.where(MASK[..., None], X, 0).astype(np.float32)]
    if source == "embedding":
        t = keras.Input((None,), dtype="int32", name="tokens")
        ids = np.where(MASK, np.arange(1, T + 1)[None] % 9 + 1, 0).astype(np.int32)
        return [t], L.Embedding(10, F, mask_zero=True)(t), {}, [ids]
    dtype = "bool" if source == "bool" else "int32"
    m = keras.Input((None,), dtype=dtype, name="m")
    mask = MASK if source == "bool" else MASK * np.array([1, 3, 2, 1, 7, 1, 1], np.int32)  # any nonzero is valid
    return [x, m], x, {"mask": m}, [X, mask]


@functools.cache
def stacked(source, cell):
    keras.utils.set_random_seed(3)
    inputs, seq, kw, feeds = _masked_input(source)
    Layer, Cell = CELLS[cell]
    a = Layer(UNITS, return_sequences=True)(seq, **kw)  # the mask flows on to the next layers
    b = L.RNN(L.StackedRNNCells([Cell(4), Cell(3)]), return_sequences=True, return_state=True, go_backwards=True)(a)
    c = L.Bidirectional(Layer(4))(b[0])
    model = randomize(keras.Model(inputs, [c, *b[1:]]))
    converted = convert(model)
    check_structure(converted.onnx_model, {ONNX_OP[cell]: 4})
    names = [s.name for s in converted.inputs]
    got = session(converted.onnx_model).run(None, dict(zip(names, feeds)))
    return keras_flat(model, feeds), got


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("source", ["masking", "embedding", "bool", "int"])
def test_stacked_layers_and_cells_for_every_mask_source(source, cell):
    want, got = stacked(source, cell)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        close(g, w, f"output {i}")


# ------------------------------------------------- explicit masks through export and the runtime


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The real export path (its own parity check on golden data with every pattern) for bool and int masks."""
    folders = {}
    for dtype in ("bool", "int32"):
        keras.utils.set_random_seed(4)
        x, m = keras.Input((None, F), name="x"), keras.Input((None,), dtype=dtype, name="m")
        model = randomize(keras.Model([x, m], L.GRU(UNITS, return_sequences=True)(x, mask=m)))
        folder = tmp_path_factory.mktemp(dtype) / "m"
        result = export(model, folder)
        assert result.passed, result.parity.failures()
        folders[dtype] = (model, folder, result)
    return folders


@pytest.mark.parametrize("dtype", ["bool", "int32"])
def test_explicit_mask_input_keeps_its_dtype(exported, dtype):
    model, folder, result = exported[dtype]
    spec = next(s for s in result.manifest.inputs if s.name == "m")
    assert spec.dtype == dtype and spec.shape == ("batch", "time")
    declared = next(i for i in onnx.load(folder / "model.onnx").graph.input if i.name == "m")
    assert declared.type.tensor_type.elem_type == {"bool": onnx.TensorProto.BOOL,
                                                   "int32": onnx.TensorProto.INT32}[dtype]
    from rnnedge.check import read_golden

    masks = np.concatenate([i["m"].reshape(-1, i["m"].shape[-1])[:, :4] != 0 for _, i, _ in read_golden(folder)
                            if i["m"].shape[1] >= 4])
    assert (~masks[:, 0] & masks[:, 1]).any(), "golden data has no front-padded row"
    assert (~masks).all(axis=1).any(), "golden data has no fully padded row"
    loaded = rnnedge.load(folder, "cpu")
    mask = MASK if dtype == "bool" else MASK.astype(np.int32)
    close(loaded.run(X, mask)[0], keras_flat(model, [X, mask])[0], "runtime")


def one_line(fn, *args) -> str:
    with pytest.raises(RnnEdgeError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_wrong_mask_dtype_is_one_clear_line(exported):
    bool_model = rnnedge.load(exported["bool"][1], "cpu")
    message = one_line(bool_model.run, X, MASK.astype(np.float32))
    assert "input 'm'" in message and "bool" in message and "float32" in message and "astype(bool)" in message
    message = one_line(bool_model.run, X, MASK.astype(np.int64))
    assert "input 'm'" in message and "bool" in message
    int_model = rnnedge.load(exported["int32"][1], "cpu")
    message = one_line(int_model.run, X, MASK.astype(np.float32))
    assert "input 'm'" in message and "int32" in message


def test_wrong_mask_shape_is_one_clear_line(exported):
    model = rnnedge.load(exported["bool"][1], "cpu")
    message = one_line(model.run, X, MASK[:, :-1])
    assert "input 'm'" in message and "'time'" in message and str(T - 1) in message and str(T) in message
    message = one_line(model.run, X, MASK[..., None])
    assert "input 'm'" in message and "expected 2 dimensions" in message
    message = one_line(model.run, X, MASK[:2])
    assert "'batch'" in message


# ------------------------------------------------------------- several stateful layers, one model


@functools.cache
def stateful_model(cell, batch):
    keras.utils.set_random_seed(5)
    Layer, Cell = CELLS[cell]
    x = keras.Input(batch_shape=(batch, None, 1), name="x")
    outs = [Layer(4, stateful=True, return_sequences=True, name="layer")(x),
            L.RNN(Cell(4), stateful=True, return_sequences=True, name="rnn_cell")(x),
            L.RNN(L.StackedRNNCells([Cell(4), Cell(4)]), stateful=True, name="stacked_cells")(x)]
    return randomize(keras.Model(x, outs))


def _reset(model):
    """Zero every state (Keras' own reset_state fails on a stateful RNN(StackedRNNCells))."""
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            for v in keras.tree.flatten(layer.states):
                v.assign(np.zeros(v.shape, np.float32))


def _keras_states(model) -> dict[str, list[np.ndarray]]:
    return {layer.name: [np.asarray(v) for v in keras.tree.flatten(layer.states)]
            for layer in model.layers if getattr(layer, "stateful", False)}


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("cell", list(CELLS))
def test_several_stateful_layers_keep_every_state_over_consecutive_calls(cell, batch, tmp_path):
    model = stateful_model(cell, batch)
    result = export(model, tmp_path / "m")
    assert result.passed, result.parity.failures()
    check_structure(onnx.load(tmp_path / "m" / "model.onnx"), {ONNX_OP[cell]: 4})
    loaded = rnnedge.load(tmp_path / "m", "cpu")
    specs = collections.defaultdict(list)
    for s in loaded.manifest.state_inputs:
        specs[s.layer].append(s.name)
    assert {k: len(v) for k, v in specs.items()} == {k: len(v) for k, v in _keras_states(model).items()}
    _reset(model)
    stream = loaded.stream(batch=batch)
    rng = np.random.default_rng(6)
    for call in range(4):
        chunk = rng.normal(size=(batch, 3 + call, 1)).astype(np.float32)
        want = keras_flat(model, chunk)
        got = stream.push(chunk).data
        for i, (g, w) in enumerate(zip(got, want)):
            close(g, w, f"call {call}, output {i}")
        state = stream.state
        for name, values in _keras_states(model).items():
            for spec_name, w in zip(specs[name], values):
                close(state[spec_name], w, f"call {call}, state {spec_name}")


def test_mixed_stateful_cells(tmp_path):
    keras.utils.set_random_seed(7)
    x = keras.Input(batch_shape=(1, None, 1), name="x")
    a = L.LSTM(4, stateful=True, return_sequences=True)(x)
    b = L.RNN(L.StackedRNNCells([L.GRUCell(4), L.SimpleRNNCell(4), L.LSTMCell(4)]), stateful=True)(x)
    c = L.RNN(L.LSTMCell(4), stateful=True)(a)
    model = randomize(keras.Model(x, [b, c]))
    result = export(model, tmp_path / "m")
    assert result.passed, result.parity.failures()
    assert len(result.manifest.state_inputs) == 2 + 4 + 2


@pytest.mark.parametrize("cell", list(CELLS))
def test_masked_stateful_layer_is_keras_called_chunk_by_chunk(cell, tmp_path):
    """A stateful layer's call starts its "previous output" at zeros in Keras, so a chunk that
    starts with masked steps outputs zeros there: the stream must do what Keras does per call."""
    keras.utils.set_random_seed(8)
    x = keras.Input(batch_shape=(len(ROWS), None, F), name="x")
    model = randomize(keras.Model(x, CELLS[cell][0](UNITS, stateful=True, return_sequences=True)(L.Masking(0.0)(x))))
    result = export(model, tmp_path / "m")
    assert result.passed, result.parity.failures()
    _reset(model)
    stream = rnnedge.load(tmp_path / "m", "cpu").stream(batch=len(ROWS))
    padded = np.where(MASK[..., None], X, 0).astype(np.float32)
    for t in range(0, T, 3):
        close(stream.push(padded[:, t:t + 3])[0], keras_flat(model, padded[:, t:t + 3])[0], f"chunk at {t}")
        close(stream.state[result.manifest.state_inputs[0].name], np.asarray(model.layers[-1].states[0]), "state")
