"""The keyword spotters of google-research's kws_streaming, rebuilt as plain Keras models (small
sizes, random weights): CRNN (a Conv2D front end over mel frames, Reshape((-1, f*c)), GRU), DS-CNN
(Conv2D, DepthwiseConv2D, SeparableConv2D, pooling, strided in time), TC-ResNet and MatchboxNet
(convolutions over time, residuals, no recurrent layer), SVDF (Dense + depthwise convolution over
time). Each is exported with --streaming and fed chunk by chunk against Keras on the whole
sequence; each way of looking ahead is refused in one line naming the layer, how far it looks
and what Keras 3 accepts instead."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as L

from rnnedge.errors import RnnEdgeError
from rnnedge.pipeline import export
from rnnedge.runtime import load
from tests.kmodels import randomize

MELS = 10
ATOL = 1e-5


def _frames(x, mels=MELS):
    return L.Reshape((-1, mels, 1))(x)


def crnn(steps=None):
    x = keras.Input((steps, MELS), name="mel")
    h = L.Conv2D(4, (3, 3), activation="relu")(L.ZeroPadding2D(((2, 0), (1, 1)))(_frames(x)))
    h = L.BatchNormalization()(h)
    h = L.Conv2D(4, (2, 3), strides=(1, 2), activation="relu")(L.ZeroPadding2D(((1, 0), (0, 0)))(h))
    h = L.GRU(6, return_sequences=True)(L.Reshape((-1, 4 * 4))(h))
    return keras.Model(x, L.Dense(3, activation="softmax")(h), name="crnn")


def ds_cnn():
    """Strided in time (2, then a pool of 2: chunks of 4 steps), depthwise-separable blocks (one
    dilated in time), 'same' pooling over frequency alone."""
    x = keras.Input((None, MELS), name="mel")
    h = L.Conv2D(4, (3, 3), strides=(2, 1))(L.ZeroPadding2D(((2, 0), (0, 0)))(_frames(x)))
    h = L.ReLU()(L.BatchNormalization()(h))
    h = L.DepthwiseConv2D((3, 3), dilation_rate=(2, 1))(L.ZeroPadding2D(((4, 0), (1, 1)))(h))
    h = L.Conv2D(5, 1, activation="relu")(h)
    h = L.SeparableConv2D(5, (2, 3))(L.ZeroPadding2D(((1, 0), (1, 1)))(h))
    h = L.AveragePooling2D((1, 3), strides=(1, 2), padding="same")(L.MaxPooling2D((2, 2))(h))
    h = L.Permute((1, 3, 2))(L.LayerNormalization(axis=[-2, -1])(h))
    return keras.Model(x, L.Dense(3, activation="softmax")(L.Reshape((-1, 5 * 2))(h)), name="ds_cnn")


def tc_resnet():
    """Mel bins as channels, causal 1-D convolutions strided by 2 with a strided 1x1 shortcut."""
    x = keras.Input((None, MELS), name="mel")
    h = L.Conv1D(6, 3, use_bias=False)(L.ZeroPadding1D((2, 0))(x))
    for stride in (2, 1):
        y = L.ReLU()(L.BatchNormalization()(L.Conv1D(6, 3, strides=stride)(L.ZeroPadding1D((2, 0))(h))))
        y = L.BatchNormalization()(L.Conv1D(6, 3)(L.ZeroPadding1D((2, 0))(y)))
        shortcut = L.Conv1D(6, 1, strides=stride)(h) if stride > 1 else h
        h = L.ReLU()(L.Add()([y, shortcut]))
    return keras.Model(x, L.Dense(3, activation="softmax")(h), name="tc_resnet")


def matchboxnet(steps=None):
    """Separable 1-D blocks with residuals, a dilated final block; per-frame output (no global pooling)."""
    x = keras.Input((steps, MELS), name="mel")
    h = L.SeparableConv1D(8, 11)(L.ZeroPadding1D((10, 0))(x))
    for k in (13, 15):
        y = L.ReLU()(L.BatchNormalization()(L.SeparableConv1D(8, k)(L.ZeroPadding1D((k - 1, 0))(h))))
        h = L.ReLU()(L.Add()([y, L.BatchNormalization()(L.Conv1D(8, 1)(h))]))
    h = L.SeparableConv1D(8, 29, dilation_rate=2)(L.ZeroPadding1D((56, 0))(h))
    return keras.Model(x, L.Dense(3, activation="softmax")(L.Conv1D(8, 1)(h)), name="matchboxnet")


def svdf():
    """SVDF as kws_streaming writes it: a Dense over features, a depthwise convolution over time."""
    x = keras.Input((None, MELS), name="mel")
    h = L.DepthwiseConv1D(4)(L.ZeroPadding1D((3, 0))(L.Dense(8)(x)))
    h = L.DepthwiseConv1D(3, depth_multiplier=2)(L.ZeroPadding1D((2, 0))(L.Dense(6, activation="relu")(h)))
    return keras.Model(x, L.Dense(3)(h), name="svdf")


MODELS = {f.__name__: f for f in (crnn, ds_cnn, tc_resnet, matchboxnet, svdf)}
STRIDES = {"ds_cnn": 4, "tc_resnet": 2}
RECURRENT = {"crnn"}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream-kws")
    found = {}
    for name, build in MODELS.items():
        model = randomize(build())
        found[name] = (model, export(model, root / name, streaming=True))  # checks whole and chunked parity itself
    return found


@pytest.mark.parametrize("name", MODELS)
def test_the_keyword_spotter_streams_exactly_in_chunks(exports, name):
    model, result = exports[name]
    stride = STRIDES.get(name, 1)
    assert result.passed, result.parity.failures()
    assert result.manifest.streaming and result.manifest.time_stride == stride
    assert any("streamed in chunks" in c.case for c in result.parity.cases)
    x = np.random.default_rng(1).normal(size=(2, 48, MELS)).astype(np.float32)
    whole = np.asarray(model(x, training=False))
    runtime = load(result.folder, "cpu")
    for hops in (1, 3, 48 // stride):
        stream = runtime.stream(batch=2)
        pieces = [stream.push(x[:, t:t + hops * stride])[0] for t in range(0, 48, hops * stride)]
        np.testing.assert_allclose(np.concatenate(pieces, axis=1), whole, atol=ATOL, err_msg=f"{name} {hops}")


@pytest.mark.parametrize("name", MODELS)
def test_every_layer_is_rnnedges_own_and_the_states_are_frames(exports, name):
    """No layer of these models needs tf2onnx's probe to stream (ReLU aside, which is per step);
    each left padding keeps its frames as a state [batch, past, (freq,) channels]."""
    model, result = exports[name]
    m = result.manifest
    routes = m.layers
    assert {n for n, r in routes.items() if r == "tf2onnx"} <= {layer.name for layer in model.layers
                                                                if isinstance(layer, L.ReLU)}
    frames = {s.layer: s.shape for s in m.state_inputs if s.name.endswith("/state_in/frames")}
    pads = {layer.name: layer for layer in model.layers if isinstance(layer, (L.ZeroPadding1D, L.ZeroPadding2D))}
    assert set(frames) == set(pads)
    for layer_name, shape in frames.items():
        padding = pads[layer_name].padding
        past = padding[0][0] if isinstance(pads[layer_name], L.ZeroPadding2D) else padding[0]
        assert shape[0] == "batch" and shape[1] == past
        assert len(shape) == len(pads[layer_name].output.shape)
    assert bool(m.fused_nodes) == (name in RECURRENT)


def test_models_without_a_recurrent_layer_export_whole_too(tmp_path):
    """Whole-sequence exports of the convolutional ones over time (rnnedge's own converters)."""
    for name in ("tc_resnet", "svdf"):
        result = export(randomize(MODELS[name]()), tmp_path / name)
        assert result.passed, (name, result.parity.failures())
        assert not result.manifest.fused_nodes


def test_a_matchboxnet_window_of_100_frames_exports_and_its_cases_are_not_lengthened(tmp_path):
    """ZeroPadding1D((p, 0)) + 'valid': the padded steps are not consumed input, so a 100-frame window
    is accepted (it was refused as needing 195) and dynamic-time golden cases keep their lengths."""
    from rnnedge.check import read_golden

    fixed = export(randomize(matchboxnet(100)), tmp_path / "window")
    assert fixed.passed and fixed.manifest.min_steps == 0
    dynamic = export(randomize(matchboxnet()), tmp_path / "dynamic")
    assert dynamic.manifest.min_steps == 0
    assert [inputs["mel"].shape[1] for _, inputs, _ in read_golden(dynamic.folder)] == [7, 16, 1, 500]


def _refused(model, tmp_path) -> str:
    with pytest.raises(RnnEdgeError) as refused:
        export(model, tmp_path / "out", streaming=True)
    message = str(refused.value)
    assert "\n" not in message and "cannot run chunk by chunk" in message, message
    assert not (tmp_path / "out").exists()
    return message


def _frames_model(build):
    x = keras.Input((None, MELS))
    y = build(_frames(x))
    return keras.Model(x, L.Dense(2)(L.Reshape((-1, int(np.prod(y.shape[2:]))))(y)))


@pytest.mark.parametrize("build,phrases", [
    (lambda h: L.Conv2D(2, (3, 3), padding="same", name="c")(h),
     ["'c' (Conv2D)", "looks 1 step(s) ahead", "ZeroPadding2D(((2, 0), (1, 1))) before it", "padding='valid'"]),
    (lambda h: L.Conv2D(2, (3, 3), name="c")(h),
     ["'c' (Conv2D)", "reads 2 step(s) ahead", "ZeroPadding2D(((2, 0), (0, 0)))"]),
    (lambda h: L.Conv2D(2, (3, 3), name="c")(L.ZeroPadding2D(((1, 1), (1, 1)), name="p")(h)),
     ["'p' (ZeroPadding2D)", "pads 1 step(s) at the end of time", "ZeroPadding2D(((2, 0), (1, 1)))"]),
    (lambda h: L.MaxPooling2D((3, 2), strides=(2, 2), name="pool")(h),
     ["'pool' (MaxPooling2D)", "overlap, so it looks 1 step(s) ahead"]),
    (lambda h: L.DepthwiseConv2D((3, 1), padding="same", name="d")(h),
     ["'d' (DepthwiseConv2D)", "looks 1 step(s) ahead", "ZeroPadding2D(((2, 0), (0, 0)))"]),
], ids=["conv2d-same", "conv2d-valid-unpadded", "padding-bottom", "pool-overlap", "depthwise-same"])
def test_what_looks_ahead_over_frames_is_refused_in_one_line(build, phrases, tmp_path):
    message = _refused(_frames_model(build), tmp_path)
    for phrase in phrases:
        assert phrase in message, message


@pytest.mark.parametrize("build,phrases", [
    (lambda x: L.DepthwiseConv1D(3, padding="same", name="d")(x),
     ["'d' (DepthwiseConv1D)", "looks 1 step(s) ahead", "ZeroPadding1D((2, 0)) before it", "padding='valid'"]),
    (lambda x: L.Permute((2, 1), name="t")(x),
     ["'t' (Permute)", "moves the time axis", "looks ahead to the sequence's end"]),
    (lambda x: L.Reshape((3, MELS * 2), name="r")(x),
     ["'r' (Reshape)", "moving steps into the features", "looks ahead", "Reshape((-1, ...))"]),
    (lambda x: L.Flatten(name="f")(x)[:, None], ["'f' (Flatten)", "looks ahead to the sequence's last step"]),
    (lambda x: L.GlobalAveragePooling1D(name="g")(x)[:, None],
     ["'g' (GlobalAveragePooling1D)", "looks ahead to the sequence's last step", "classify each step"]),
    (lambda x: L.MultiHeadAttention(1, 4, name="a")(x, x),
     ["'a' (MultiHeadAttention)", "changes with the 5 step(s) after it", "looks ahead"]),
], ids=["depthwise1d-same", "permute-time", "reshape-time", "flatten", "global-pooling", "attention"])
def test_what_looks_ahead_over_time_is_refused_in_one_line(build, phrases, tmp_path):
    x = keras.Input((6, MELS))  # a fixed window (a stream frees it): Permute and Flatten give fixed features
    message = _refused(keras.Model(x, L.Dense(2)(build(x))), tmp_path)
    for phrase in phrases:
        assert phrase in message, message
    assert "causal'" not in message  # Keras 3 rejects padding='causal' in DepthwiseConv1D and SeparableConv1D


def test_per_step_layers_that_keep_time_first_stream(tmp_path):
    """Reshape and Permute that keep time first, BatchNormalization and LayerNormalization per step,
    from a fixed-length Keras input (the stream frees its time axis)."""
    x = keras.Input((12, MELS))
    h = L.Permute((1, 3, 2), name="permute")(L.Reshape((12, 5, 2))(x))
    h = L.LayerNormalization(axis=[-2, -1])(L.BatchNormalization()(h))
    y = L.GRU(4, return_sequences=True)(L.Reshape((-1, 10))(h))
    model = randomize(keras.Model(x, y))
    result = export(model, tmp_path / "s", streaming=True)
    assert result.passed and result.manifest.layers["permute"] == "native"
    data = np.random.default_rng(0).normal(size=(1, 12, MELS)).astype(np.float32)
    stream = load(result.folder, "cpu").stream()
    got = np.concatenate([stream.push(data[:, t:t + 1])[0] for t in range(12)], axis=1)
    np.testing.assert_allclose(got, np.asarray(model(data, training=False)), atol=ATOL)


def test_batch_normalization_over_time_is_refused(tmp_path):
    x = keras.Input((12, MELS))
    message = _refused(keras.Model(x, L.GRU(2)(L.BatchNormalization(axis=1, name="bn")(x))), tmp_path)
    assert "'bn' (BatchNormalization)" in message and "position in the sequence" in message


def test_every_frontend_converter_has_a_streamed_case():
    """The converters over (time, frequency) (temporal2d.py) are streamed here; tests/test_convert.py's
    matrix has their whole-sequence cases."""
    from rnnedge.exporter.convert import temporal2d
    from rnnedge.exporter.convert.registry import CONVERTERS

    covered = {type(layer) for build in MODELS.values() for layer in build().layers}
    frontend = {t.__name__ for t, c in CONVERTERS.items() if c.fn.__module__ == temporal2d.__name__}
    assert len(frontend) == 7, sorted(frontend)
    missing = frontend - {t.__name__ for t in covered}
    assert not missing, sorted(missing)


def test_a_streaming_export_quantizes_to_int8_on_the_users_data(tmp_path, monkeypatch):
    """`export --streaming --data d.npz --quantize int8`: calibration feeds the state inputs too, the
    data streamed in chunks through the fp32 model (states collected, zeros first), so static int8
    is calibrated and gated on the user's data."""
    from rnnedge.quantize import int8

    model = randomize(crnn())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 40, MELS)).astype(np.float32)
    y = np.asarray(model(x, training=False)).argmax(-1)
    np.savez(tmp_path / "d.npz", mel=x, y=y)
    seen = []
    original = int8._calibration_feeds
    monkeypatch.setattr(int8, "_calibration_feeds", lambda m, c: seen.append(original(m, c)) or seen[-1])
    result = export(model, tmp_path / "q", streaming=True, data=tmp_path / "d.npz", quantize=("int8",))
    assert result.passed and "int8" in result.manifest.variants
    feeds = seen[0]
    assert len(feeds) == 3 and [f["mel"].shape[1] for f in feeds] == [16, 16, 8]
    states = [s.name for s in result.manifest.state_inputs]
    assert all(not f[n].any() for n in states for f in feeds[:1])  # the stream starts from zeros
    assert all(f[n].any() for n in states for f in feeds[1:])  # then the states the data gave
    stream = load(result.folder, "cpu").stream(batch=8)
    stream.push(x[:, :16])
    for name in states:  # the second chunk starts from the state the first one left
        np.testing.assert_allclose(feeds[1][name], stream.state[name], atol=1e-6)
    stream = load(result.folder, "cpu", variant="int8").stream(batch=8)
    hops = np.concatenate([stream.push(x[:, t:t + 1])[0] for t in range(40)], axis=1)
    assert (hops.argmax(-1) == y).mean() > 0.8
