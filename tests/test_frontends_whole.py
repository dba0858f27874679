"""Whole-sequence (non-streaming) exports of front ends over (time, frequency) by rnnedge's own
converters (temporal2d.py): Conv2D, DepthwiseConv2D, SeparableConv2D, Max/AveragePooling2D,
ZeroPadding2D and Permute, with 'same' and 'valid' time padding, strides and dilations in time,
overlapping and 'same' pools, over a dynamic time axis. Each export passes its own parity check;
then real Keras against real onnxruntime at every length from 1 to 9 steps and at 16 (lengths no
stride divides included, where 'same' padding depends on the length): where Keras gives an output,
the export matches it, and Keras refuses exactly the lengths the manifest's `min_steps` refuses."""

from __future__ import annotations

import functools

import keras
import numpy as np
import onnxruntime as ort
import pytest
from keras import layers as L

from rnnedge.check import ATOL, RTOL
from rnnedge.pipeline import export
from tests.kmodels import randomize

FRONTEND = (L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D, L.MaxPooling2D, L.AveragePooling2D, L.ZeroPadding2D,
            L.Permute)
LENGTHS = (*range(1, 10), 16)
CASES: dict[str, tuple] = {}  # name -> (builder, time stride, min_steps)


def case(name, stride=1, min_steps=0, mels=8, channels=2):
    def register(body):
        def build():
            x = keras.Input((None, mels, channels), name="mel")
            y = body(x)
            y = L.GRU(3, return_sequences=True)(L.Reshape((-1, y.shape[2] * y.shape[3]))(y))
            return randomize(keras.Model(x, y, name=name.replace("-", "_")), scale=0.5)

        CASES[name] = (functools.cache(build), stride, min_steps)
        return body

    return register


case("conv-same-strided", 2)(lambda x: L.Conv2D(3, (3, 3), strides=(2, 1), padding="same")(x))
case("conv-same-strided-both-axes", 3)(lambda x: L.Conv2D(3, (4, 3), strides=(3, 2), padding="same")(x))
case("conv-same-kernel-below-stride", 3)(lambda x: L.Conv2D(2, (2, 1), strides=(3, 1), padding="same")(x))
case("conv-valid-strided-past-and-end-padded", 2)(lambda x: L.Conv2D(3, (3, 3), strides=(2, 1), activation="relu")(
    L.ZeroPadding2D(((2, 1), (1, 1)))(x)))
case("conv-valid-strided", 2, min_steps=2)(lambda x: L.Conv2D(3, (3, 2), strides=(2, 2))(x))
case("conv-valid-dilated", min_steps=4)(lambda x: L.Conv2D(3, (3, 3), dilation_rate=(2, 1))(x))
case("conv-same-dilated-grouped")(lambda x: L.Conv2D(4, (3, 3), dilation_rate=(2, 2), groups=2, padding="same")(x))
case("depthwise-same-strided", 2)(lambda x: L.DepthwiseConv2D((3, 3), strides=(2, 2), depth_multiplier=2,
                                                               padding="same")(x))
case("depthwise-valid-strided", 2, min_steps=2)(lambda x: L.DepthwiseConv2D((3, 2), strides=(2, 2), activation="relu")(
    x))
case("depthwise-same-dilated")(lambda x: L.DepthwiseConv2D((3, 3), dilation_rate=(2, 1), padding="same")(x))
case("separable-valid-strided", 2, min_steps=2)(lambda x: L.SeparableConv2D(4, (3, 3), strides=(2, 2))(x))
case("separable-same-strided-even-kernel", 2)(lambda x: L.SeparableConv2D(
    4, (2, 3), strides=(2, 2), padding="same", depth_multiplier=2)(x))
case("max-pool-overlapping-valid", 2, min_steps=2)(lambda x: L.MaxPooling2D((3, 2), strides=(2, 2))(x))
case("max-pool-overlapping-same", 2)(lambda x: L.MaxPooling2D((3, 3), strides=(2, 2), padding="same")(x))
case("max-pool-same-below-stride", 2)(lambda x: L.MaxPooling2D((1, 2), strides=(2, 2), padding="same")(x))
case("avg-pool-overlapping-same", 2)(lambda x: L.AveragePooling2D((3, 2), strides=(2, 1), padding="same")(x))
case("avg-pool-same-below-stride", 3)(lambda x: L.AveragePooling2D((2, 3), strides=(3, 2), padding="same")(x))
case("avg-pool-overlapping-valid", min_steps=2)(lambda x: L.AveragePooling2D((3, 1), strides=(1, 1))(x))
case("permute-moves-time")(lambda x: L.Permute((2, 1, 3))(L.Conv2D(3, (3, 1))(L.Permute((2, 1, 3))(x))))
case("timedistributed-frames", mels=6, channels=1)(lambda x: L.Reshape((-1, 1, 2))(L.TimeDistributed(
    keras.Sequential([keras.Input((6, 1)), L.Reshape((3, 2, 1)), L.Conv2D(2, (2, 2)), L.MaxPooling2D((2, 1))]))(x)))
case("kws-dscnn-front", 8)(lambda x: L.AveragePooling2D((2, 2), padding="same")(L.SeparableConv2D(
    4, (3, 3), strides=(2, 2), padding="same")(L.DepthwiseConv2D((3, 3), padding="same")(L.Conv2D(
        4, (5, 3), strides=(2, 2), padding="same", activation="relu")(x)))))


def _layers(model) -> list:
    """The model's layers, those inside nested models and wrappers included."""
    found = []
    for layer in model.layers:
        found.append(layer)
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.Model):
            found += _layers(inner)
    return found


def _outputs(model, x):
    """Keras' outputs for `x`, or None where Keras gives none (the windows consume every step)."""
    try:
        y = np.asarray(model(x, training=False))
    except Exception:  # Keras refuses an empty convolution output, and a GRU over no steps
        return None
    return y if y.size else None


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    done = {}

    def get(name):
        if name not in done:
            builder, _, _ = CASES[name]
            keras.utils.set_random_seed(0)
            done[name] = export(builder(), tmp_path_factory.mktemp(name) / "out")
        return done[name]

    return get


@pytest.mark.parametrize("name", sorted(CASES))
def test_whole_sequence_frontend_matches_keras_at_every_length(name, exported):
    builder, stride, min_steps = CASES[name]
    model, result = builder(), exported(name)
    assert result.passed, result.parity.failures()
    routes = result.manifest.layers
    assert "tf2onnx" not in routes.values(), routes
    assert any(isinstance(layer, FRONTEND) for layer in _layers(model))
    assert (result.manifest.time_stride, result.manifest.min_steps) == (stride, min_steps)
    spec = result.manifest.data_inputs[0]
    assert spec.shape[1] == "time"
    session = ort.InferenceSession(str(result.folder / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    compared = []
    for steps in LENGTHS:
        x = rng.normal(size=(2, steps, *spec.shape[2:])).astype(np.float32)
        expected = _outputs(model, x)
        assert (expected is not None) == (steps > min_steps), (steps, min_steps)
        if expected is None:
            continue
        (got,) = session.run(None, {spec.name: x})
        assert got.shape == expected.shape, (steps, got.shape, expected.shape)
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL, err_msg=f"{steps} steps")
        compared.append(steps)
        assert np.std(expected) > 1e-3, "a constant output makes parity vacuous"
    assert len(compared) >= len(LENGTHS) - min_steps


def test_the_cases_cover_every_frontend_option():
    covered = {(type(layer), getattr(layer, "padding", None)) for build, _, _ in CASES.values()
               for layer in _layers(build())}
    for t in (L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D, L.MaxPooling2D, L.AveragePooling2D):
        assert {(t, "same"), (t, "valid")} <= covered, t.__name__
    assert {L.ZeroPadding2D, L.Permute} <= {t for t, _ in covered}


def test_what_the_converter_cannot_compute_goes_to_tf2onnx_saying_why(tmp_path):
    """'same' strided over a frequency axis of unknown size: the converter declines (rule 4), tf2onnx
    converts the layer, and the manifest's notes give the reason."""
    x = keras.Input((None, None, 2), name="mel")
    y = L.Conv2D(3, 3, strides=(1, 2), padding="same", name="front")(x)
    y = keras.ops.max(y, axis=2)  # frequency of any size, pooled away
    model = randomize(keras.Model(x, L.GRU(3)(y)))
    result = export(model, tmp_path / "o")
    assert result.passed, result.parity.failures()
    assert result.manifest.layers["front"] == "tf2onnx"
    assert result.manifest.notes["front"] == ("tf2onnx: padding='same' strided by 2 over an axis of unknown size is "
                                              "not supported")


@pytest.mark.slow
def test_kws_crnn_exports_whole_through_rnnedge_alone(zoo_cache, tmp_path):
    """The zoo's CRNN (ZeroPadding2D + Conv2D twice, strided in frequency) without --streaming: every
    front-end layer is rnnedge's own (they went to tf2onnx before), parity on the zoo's test split."""
    from rnnedge import zoo

    result = export(zoo.load("kws-crnn", cache_dir=zoo_cache), tmp_path / "crnn")
    assert result.passed, result.parity.failures()
    routes = result.manifest.layers
    assert [routes[n] for n in ("past_1", "conv_1", "past_2", "conv_2")] == ["native"] * 4
    assert "tf2onnx" not in routes.values()
    assert (result.manifest.time_stride, result.manifest.min_steps) == (1, 0)
    assert any("test split" in c.case for c in result.parity.cases)
