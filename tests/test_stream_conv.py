"""Streaming edge models as trained: causal and left-padded convolutions (dilated, strided, depthwise,
separable, stacked), pooling, upsampling and per-step layers around recurrent layers, exported with
`--streaming` and fed chunk by chunk, against Keras on the whole sequence; and the layers that look
ahead, refused in one line saying how far."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as L

from rnnedge.errors import RnnEdgeError
from rnnedge.pipeline import export
from rnnedge.runtime import load
from tests.kmodels import functional, seq_input

ATOL = 1e-5


def causal_gru():
    x = seq_input(4)
    return functional(x, L.GRU(5, return_sequences=True)(L.Conv1D(6, 3, padding="causal", activation="relu")(x)), "m")


def dilated_strided_lstm():
    """A dilated causal convolution, then a strided one (Keras takes no stride with a dilation)."""
    x = seq_input(4)
    y = L.Conv1D(6, 4, padding="causal", strides=2)(L.Conv1D(6, 3, padding="causal", dilation_rate=2)(x))
    return functional(x, L.LSTM(5, return_sequences=True)(y), "m")


def tcn_stack():
    """A TCN block: causal convolutions dilated 1, 2, 4 with a residual connection, then a GRU."""
    x = seq_input(4)
    h = L.Conv1D(6, 1)(x)
    for d in (1, 2, 4):
        h = L.Add()([h, L.Conv1D(6, 2, padding="causal", dilation_rate=d, activation="relu")(h)])
    return functional(x, L.GRU(5, return_sequences=True)(h), "m")


def padded_depthwise_separable():
    """ZeroPadding1D on the left before 'valid' DepthwiseConv1D and SeparableConv1D (no causal mode)."""
    x = seq_input(4)
    h = L.DepthwiseConv1D(3, dilation_rate=2, depth_multiplier=2, activation="relu")(L.ZeroPadding1D((4, 0))(x))
    h = L.SeparableConv1D(6, 3, depth_multiplier=2)(L.ZeroPadding1D((2, 0))(h))
    return functional(x, L.GRU(5, return_sequences=True)(h), "m")


def pooled():
    """Max then average pooling with pool size = stride (total time stride 4), then a GRU."""
    x = seq_input(4)
    h = L.AveragePooling1D(2)(L.MaxPooling1D(2)(L.Conv1D(6, 3, padding="causal")(x)))
    return functional(x, L.GRU(5, return_sequences=True)(h), "m")


def per_step_between():
    x = seq_input(4)
    h = L.Conv1D(6, 3, padding="causal")(x)
    h = L.Activation("tanh")(L.LayerNormalization()(L.Dense(6)(L.Dropout(0.3)(L.BatchNormalization()(h)))))
    return functional(x, L.GRU(5, return_sequences=True)(L.Conv1D(6, 2, padding="causal")(h)), "m")


def conv_after_recurrent():
    x = seq_input(4)
    h = L.GRU(6, return_sequences=True)(x)
    y = L.Dense(3, activation="softmax")(L.Conv1D(4, 3, padding="causal", dilation_rate=2)(h))
    return functional(x, y, "m")


def upsampled():
    """Pooling by 2 then UpSampling1D(3): each input step gives its repeated steps, no state kept."""
    x = seq_input(4)
    h = L.UpSampling1D(3)(L.MaxPooling1D(2)(L.Conv1D(6, 3, padding="causal")(x)))
    return functional(x, L.GRU(5, return_sequences=True)(h), "m")


def upsampled_then_strided():
    """UpSampling1D(2) then a convolution strided by 2: the two cancel, so any chunk length streams."""
    x = seq_input(4)
    h = L.Conv1D(6, 4, padding="causal", strides=2)(L.UpSampling1D(2)(x))
    return functional(x, L.GRU(5, return_sequences=True)(h), "m")


def prelu_around_recurrent():
    """PReLU (alpha shared over time, of both signs) before and after a GRU: per step, it streams as is."""
    x = seq_input(4)
    alpha = keras.initializers.RandomUniform(-0.5, 1.5)
    h = L.PReLU(alpha_initializer=alpha, shared_axes=[1])(L.Dense(6)(x))
    return functional(x, L.PReLU(alpha_initializer=alpha, shared_axes=1)(L.GRU(5, return_sequences=True)(h)), "m")


MODELS = {f.__name__: f for f in (causal_gru, dilated_strided_lstm, tcn_stack, padded_depthwise_separable, pooled,
                                  per_step_between, conv_after_recurrent, upsampled, upsampled_then_strided,
                                  prelu_around_recurrent)}
STRIDES = {"dilated_strided_lstm": 2, "pooled": 4, "upsampled": 2}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream-conv")
    found = {}
    for name, build in MODELS.items():
        model = build()
        found[name] = (model, export(model, root / name, streaming=True))  # checks whole and chunked parity itself
    return found


@pytest.mark.parametrize("name", MODELS)
def test_streamed_chunks_equal_keras_on_the_whole_sequence(exports, name):
    model, result = exports[name]
    stride = STRIDES.get(name, 1)
    assert result.manifest.time_stride == stride
    x = np.random.default_rng(3).normal(size=(2, 36, 4)).astype(np.float32)
    whole = np.asarray(model(x, training=False))
    runtime = load(result.folder, "cpu")
    for sizes in ([1] * 40, [3, 1, 5, 2, 7, 4, 6, 9], [36 // stride]):
        stream = runtime.stream(batch=2)
        pieces, start = [], 0
        for n in sizes:
            n *= stride
            if start >= x.shape[1]:
                break
            pieces.append(stream.push(x[:, start:start + n])[0])
            start += n
        np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, atol=ATOL, err_msg=f"{name} {sizes}")


@pytest.mark.parametrize("name", MODELS)
def test_each_time_layer_states_are_named_and_sized_in_the_manifest(exports, name):
    model, result = exports[name]
    m = result.manifest
    frames = [s for s in m.state_inputs if s.name.endswith("/state_in/frames")]
    for layer in model.layers:
        past = _past(layer)
        if past:
            (spec,) = [s for s in frames if s.layer == layer.name]
            assert spec.shape[0] == "batch" and spec.shape[1] == past, spec
            assert any(o.feeds == spec.name for o in m.state_outputs)
    assert len(frames) == sum(1 for layer in model.layers if _past(layer))


def _past(layer) -> int:
    """The input frames a streamed layer keeps: a causal convolution's reach, a left ZeroPadding1D's size."""
    if isinstance(layer, L.ZeroPadding1D):
        return int(layer.padding[0])
    if isinstance(layer, L.Conv1D) and layer.padding == "causal":
        return layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
    return 0


def test_a_chunk_that_is_not_a_multiple_of_the_time_stride_is_refused(exports):
    _, result = exports["pooled"]
    stream = load(result.folder, "cpu").stream()
    x = np.ones((1, 10, 4), np.float32)
    stream.push(x[:, :8])
    with pytest.raises(RnnEdgeError, match=r"a chunk of 2 step\(s\): this model strides over time by 4 "
                                           r".*multiple of 4"):
        stream.push(x[:, 8:10])
    stream.push(x[:, :4])  # the refused chunk changed nothing


@pytest.mark.parametrize("build,phrases", [
    (lambda x: L.Conv1D(3, 3, padding="same")(x), ["'conv", "padding='same' looks 1 step(s) ahead"]),
    (lambda x: L.Conv1D(3, 5, padding="same", dilation_rate=2)(x), ["looks 4 step(s) ahead"]),
    (lambda x: L.Conv1D(3, 3)(L.ZeroPadding1D((2, 2))(x)), ["ZeroPadding1D", "pads 2 step(s) at the end"]),
    (lambda x: L.Conv1D(3, 3, padding="valid")(x), ["drops a sequence's first 2 step(s)", "ZeroPadding1D((2, 0))"]),
    (lambda x: L.Conv1D(3, 3)(L.ZeroPadding1D((1, 0))(x)), ["pads 1", "look 1 step(s) ahead"]),
    (lambda x: L.Dense(3)(L.ZeroPadding1D((2, 0))(x)), ["dense", "reads a ZeroPadding1D's output"]),
    (lambda x: L.MaxPooling1D(3, strides=2)(x), ["pools 3 steps with stride 2"]),
    (lambda x: L.AveragePooling1D(2, padding="same")(x), ["padding='same' shifts its windows"]),
    (lambda x: L.GlobalAveragePooling1D()(L.GRU(3, return_sequences=True)(x))[:, None],
     ["pools over every step of the sequence", "looks ahead"]),
    (lambda x: L.Cropping1D((0, 2))(x), ["'cropping1d", "crops a sequence's last 2 step(s)", "looks ahead"]),
    (lambda x: L.Cropping1D((3, 0))(x), ["crops a sequence's first 3 step(s)", "where the chunk sits"]),
], ids=["same", "same-dilated", "right-padding", "valid-unpadded", "padding-short", "padding-to-dense", "pool-overlap",
        "pool-same", "global-pooling", "crop-end", "crop-start"])
def test_what_looks_ahead_or_needs_the_whole_sequence_is_refused_in_one_line(build, phrases, tmp_path):
    x = seq_input(4)
    y = build(x)
    model = functional(x, L.GRU(2)(y) if len(y.shape) == 3 else y, "m")
    with pytest.raises(RnnEdgeError) as refused:
        export(model, tmp_path / "out", streaming=True)
    message = str(refused.value)
    assert "\n" not in message and "cannot run chunk by chunk" in message and "export without --streaming" in message
    for phrase in phrases:
        assert phrase in message, message
    assert not (tmp_path / "out").exists()
    export(model, tmp_path / "whole")  # without --streaming the same model exports


def test_a_prelu_with_an_alpha_per_step_is_refused_in_one_line(tmp_path):
    """Not shared over time, PReLU's alpha weights each step by its position (a fixed length): no chunk knows it."""
    x = seq_input(4, time=6)
    model = functional(x, L.GRU(3)(L.PReLU(alpha_initializer="random_normal", shared_axes=[2], name="act")(x)), "m")
    with pytest.raises(RnnEdgeError) as refused:
        export(model, tmp_path / "out", streaming=True)
    message = str(refused.value)
    assert "\n" not in message and "cannot run chunk by chunk" in message, message
    for phrase in ("'act' (PReLU)", "alpha differs per step", "shared_axes=[1]"):
        assert phrase in message, message
    assert not (tmp_path / "out").exists()
    assert export(model, tmp_path / "whole").passed  # without --streaming the same model exports


@pytest.mark.slow
def test_the_keyword_spotter_streams_hop_by_hop_as_keras_runs_the_whole_clip(zoo_cache, tmp_path):
    """The zoo's kws-gru, exported with --streaming: one frame per push gives Keras' per-frame
    probabilities over the whole clip, and the task metric from the stream equals Keras'."""
    from rnnedge import zoo

    entry = zoo.load("kws-gru", cache_dir=zoo_cache)
    result = export(entry, tmp_path / "kws", streaming=True)
    assert result.manifest.task["onnx"] == pytest.approx(result.manifest.task["keras"], abs=1e-6)
    assert {s.layer for s in result.manifest.state_inputs} == {"front", "rnn_1", "rnn_2"}
    clips = entry.x_test[0][:4]
    stream = load(result.folder, "cpu").stream(batch=len(clips))
    hops = np.stack([stream.push(clips[:, t])[0] for t in range(clips.shape[1])], axis=1)  # [batch, features] per hop
    np.testing.assert_allclose(hops, np.asarray(entry.model(clips, training=False)), atol=ATOL)


def test_sample_cases_are_long_enough_for_valid_windows_and_no_longer(exports, tmp_path):
    """Golden cases are 7, 16, 1 and 500 steps (times the time stride, the long one rounded up to it);
    'valid' windows, which shorten a sequence, lengthen them by what they consume; padding and kept
    frames do not."""
    from rnnedge.check import read_golden

    def lengths(folder):
        return [inputs["x"].shape[1] for _, inputs, _ in read_golden(folder)]

    assert lengths(exports["causal_gru"][1].folder) == [7, 16, 1, 500]
    assert lengths(exports["pooled"][1].folder) == [28, 64, 4, 500]
    x = seq_input(4)
    shrinking = export(functional(x, L.GRU(3)(L.Conv1D(3, 3)(L.Conv1D(3, 2)(x))), "m"), tmp_path / "valid")
    assert lengths(shrinking.folder) == [10, 19, 4, 503]


def test_a_sequence_shorter_than_the_valid_windows_is_refused_in_one_line(tmp_path):
    """onnxruntime's recurrent kernels abort the process on a sequence that 'valid' windows shortened to
    nothing: the runtime refuses such an input first, saying how many steps the model needs."""
    x = seq_input(4)
    result = export(functional(x, L.GRU(3)(L.Conv1D(3, 3)(L.Conv1D(3, 2)(x))), "m"), tmp_path / "valid")
    assert result.manifest.min_steps == 3
    model = load(result.folder, "cpu")
    with pytest.raises(RnnEdgeError, match=r"3 step\(s\), but the model's 'valid' windows .* consume 3: give at "
                                           r"least 4"):
        model.run(np.ones((1, 3, 4), np.float32))
    assert model.run(np.ones((1, 4, 4), np.float32))[0].shape == (1, 3)
