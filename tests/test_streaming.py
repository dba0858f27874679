"""Streaming: a sequence fed in chunks with the state carried equals Keras on the whole sequence."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as L

import rnnedge
from rnnedge import zoo
from rnnedge.errors import RnnEdgeError
from rnnedge.pipeline import export
from tests.kmodels import functional, seq_input, sequential, tokens_input

# Bidirectional and encoder-decoder models cannot stream; digits-conv's Conv2D mixes rows (refused below).
UNIDIRECTIONAL = [n for n in zoo.NAMES if not n.startswith(("sentiment", "seq2seq", "digits-conv"))]


def stream_all(stream, x, chunk):
    """Push x [batch, time, ...] in chunks; concatenate per-step outputs (or keep the last)."""
    pieces = [stream.push(x[:, t:t + chunk]) for t in range(0, x.shape[1], chunk)]
    first = pieces[0].data[0]
    if first.ndim >= 3:
        return np.concatenate([p.data[0] for p in pieces], axis=1)
    return pieces[-1].data[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", UNIDIRECTIONAL)
def test_zoo_model_streams_like_keras_on_the_whole_sequence(name, zoo_cache, tmp_path):
    entry = zoo.load(name, cache_dir=zoo_cache)
    result = export(entry, tmp_path / name, streaming=True)
    assert result.passed, result.parity.failures()
    assert any("streamed in chunks of 1" in c.case for c in result.parity.cases)
    x = entry.x_test[0][:8]
    want = keras.tree.flatten(entry.model(x, training=False))[0]
    model = rnnedge.load(tmp_path / name, "cpu")
    assert {o.feeds for o in model.manifest.state_outputs} == {i.name for i in model.manifest.state_inputs}
    for chunk in (1, 5):
        got = stream_all(model.stream(batch=len(x)), x, chunk)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_conv_front_end_zoo_model_cannot_stream_and_says_why(zoo_cache, tmp_path):
    entry = zoo.load("digits-conv-gru", cache_dir=zoo_cache)
    with pytest.raises(RnnEdgeError, match="layer 'conv' .* cannot run chunk by chunk; export without --streaming"):
        export(entry, tmp_path / "s", streaming=True)
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_seq2seq_cannot_stream_and_says_why(zoo_cache, tmp_path):
    entry = zoo.load("seq2seq-gru", cache_dir=zoo_cache)
    with pytest.raises(RnnEdgeError, match="initial state comes from another tensor"):
        export(entry, tmp_path / "s", streaming=True)
    assert not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def stacked(tmp_path_factory):
    keras.utils.set_random_seed(1)
    model = sequential([seq_input(3), L.LSTM(8, return_sequences=True), L.GRU(6, return_sequences=True),
                        L.TimeDistributed(L.Dense(2))], "stacked")
    folder = tmp_path_factory.mktemp("stacked")
    export(model, folder / "m", streaming=True)
    return model, rnnedge.load(folder / "m", "cpu")


def test_stacked_layers_stream_at_every_chunk_size(stacked):
    model, onnx_model = stacked
    x = np.random.default_rng(0).normal(size=(2, 23, 3)).astype("float32")
    want = np.asarray(model(x))
    for chunk in (1, 2, 7, 23):
        np.testing.assert_allclose(stream_all(onnx_model.stream(batch=2), x, chunk), want, atol=1e-5, rtol=1e-4)


def test_independent_streams_and_reset_of_one(stacked):
    model, onnx_model = stacked
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 10, 3)).astype("float32")
    stream = onnx_model.stream(batch=3)
    stream.push(x[:, :6])
    stream.reset(1)  # row 1 starts a new sequence at step 6; rows 0 and 2 carry on
    tail = stream.push(x[:, 6:]).data[0]
    whole = np.asarray(model(x))
    np.testing.assert_allclose(tail[[0, 2]], whole[[0, 2], 6:], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(tail[1], np.asarray(model(x[1:2, 6:]))[0], atol=1e-5, rtol=1e-4)
    stream.reset()
    np.testing.assert_allclose(stream.push(x).data[0], whole, atol=1e-5, rtol=1e-4)


def test_padded_steps_leave_a_streams_state_untouched(tmp_path):
    keras.utils.set_random_seed(2)
    model = functional(t := tokens_input(), L.GRU(5, return_sequences=True)(L.Embedding(9, 4, mask_zero=True)(t)), "m")
    export(model, tmp_path / "m", streaming=True)
    stream = rnnedge.load(tmp_path / "m", "cpu").stream(batch=2)
    stream.push(np.array([[3, 4, 5], [1, 2, 6]], "int32"))
    before = stream.state
    out = stream.push(np.array([[0, 0], [7, 8]], "int32")).data[0]  # row 0 idles (all padding)
    after = stream.state
    for name in before:
        np.testing.assert_array_equal(after[name][0], before[name][0])
        assert not np.allclose(after[name][1], before[name][1])
    # Row 0's padded outputs repeat its last valid output, as Keras does over the whole sequence.
    whole = np.asarray(model(np.array([[3, 4, 5, 0, 0]], "int32")))
    np.testing.assert_allclose(out[0], whole[0, 3:], atol=1e-5, rtol=1e-4)


def test_stateful_model_streams_like_keras_stateful_calls(tmp_path):
    keras.utils.set_random_seed(3)
    model = functional(x := seq_input(3, batch=2), L.LSTM(6, stateful=True, return_sequences=True)(x), "m")
    export(model, tmp_path / "m")  # stateful: state inputs and outputs without --streaming
    stream = rnnedge.load(tmp_path / "m", "cpu").stream(batch=2)
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if hasattr(layer, "reset_state"):
            layer.reset_state()
    for _ in range(3):
        chunk = rng.normal(size=(2, 4, 3)).astype("float32")
        np.testing.assert_allclose(stream.push(chunk).data[0], np.asarray(model(chunk)), atol=1e-5, rtol=1e-4)


def test_go_backwards_cannot_stream(tmp_path):
    model = functional(x := seq_input(), L.GRU(3, go_backwards=True)(x), "m")
    with pytest.raises(RnnEdgeError, match="go_backwards"):
        export(model, tmp_path / "m", streaming=True)


@pytest.mark.parametrize("front", ["conv2d_same", "conv1d_same", "pool1d_overlapping"])
def test_front_ends_that_mix_steps_refuse_to_stream(front, tmp_path):
    """A stream runs each chunk alone: a layer whose output at a step depends on other steps is
    refused by name at export, instead of an export whose chunked runs differ from Keras."""
    import keras

    from rnnedge.exporter.convert import UnsupportedLayerError
    from rnnedge.pipeline import export

    if front == "conv2d_same":
        x = keras.Input((8, 8, 1))
        h = keras.layers.Reshape((8, 32))(keras.layers.Conv2D(4, 3, padding="same", name="front")(x))
    elif front == "conv1d_same":  # causal ones stream (tests/test_stream_conv.py); 'same' looks ahead
        x = keras.Input((None, 6))
        h = keras.layers.Conv1D(4, 3, padding="same", name="front")(x)
    else:  # pool size = stride streams; overlapping windows do not
        x = keras.Input((8, 6))
        h = keras.layers.MaxPooling1D(3, strides=2, name="front")(x)
    model = keras.Model(x, keras.layers.GRU(5)(h))
    with pytest.raises(UnsupportedLayerError,
                       match=r"layer 'front' .* cannot run chunk by chunk; export without --streaming$"):
        export(model, tmp_path / "s", streaming=True)
    assert not (tmp_path / "s").exists()
    assert export(model, tmp_path / "whole").passed  # the same model exports whole


def test_a_per_frame_front_end_streams(tmp_path):
    import keras

    from rnnedge.pipeline import export

    x = keras.Input((None, 6, 1))
    h = keras.layers.TimeDistributed(keras.layers.Conv1D(2, 3, padding="same"))(x)
    h = keras.layers.TimeDistributed(keras.layers.Flatten())(h)
    result = export(keras.Model(x, keras.layers.GRU(5, return_sequences=True)(h)), tmp_path / "s", streaming=True)
    assert result.passed and result.manifest.streaming
    assert any("streamed in chunks" in c.case for c in result.parity.cases)
