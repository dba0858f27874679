"""Layers and Keras ops rnnedge has no converter of its own for go through tf2onnx, spliced into
the fused graph: real Keras against real onnxruntime (the export's parity check, atol 1e-5,
rtol 1e-4, at batch sizes 1, 3 and 2 and, where the time axis is dynamic, 7, 16 and 1 steps,
times the time stride), one fused node per recurrent layer and no Loop; plus the example models
users copy from the Keras examples, built the way their authors build them (small sizes). The
front ends over (time, frequency) in them (Conv2D and its kin, pooling, Permute) are rnnedge's own
(temporal2d.py; tests/test_frontends_whole.py checks every length)."""

from __future__ import annotations

import collections
import functools

import keras
import numpy as np
import onnx
import pytest
from keras import layers as L

from rnnedge.check import ATOL, RTOL, read_golden
from rnnedge.exporter.convert.splice import SpliceError
from rnnedge.pipeline import export
from tests.helpers import assert_fused
from tests.kmodels import functional, randomize, tokens_input

# case -> (builder, fused node counts, layer types that must go through tf2onnx, and rnnedge's own)
CASES: dict[str, tuple] = {}


def case(name, counts, spliced=(), native=()):
    def register(builder):
        CASES[name] = (functools.cache(builder), counts, tuple(spliced), tuple(native))  # built once per session
        return builder

    return register


@keras.saving.register_keras_serializable(package="rnnedge_tests")
class Gate(L.Layer):
    """A registered custom layer with a weight of its own: x * sigmoid(w) + b."""

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), name="w")
        self.b = self.add_weight(shape=(shape[-1],), name="b", initializer="zeros")

    def call(self, x):
        return x * keras.ops.sigmoid(self.w) + self.b


class NumpyDouble(L.Layer):
    """A layer that runs Python through tf.numpy_function: no converter can follow it."""

    def call(self, x):
        import tensorflow as tf

        y = tf.numpy_function(lambda v: v * 2, [x], tf.float32)
        y.set_shape(x.shape)
        return y

    def compute_output_shape(self, shape):
        return shape


class WrappedLSTM(L.Layer):
    """A custom layer that runs a recurrent layer inside its own call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lstm = L.LSTM(4)

    def call(self, x):
        return self.lstm(x)


# ------------------------------------------------------------------ front-ends and layers

@case("conv2d-pool-reshape", {"LSTM": 1}, native=[L.Conv2D, L.MaxPooling2D, L.AveragePooling2D])
def _():
    x = keras.Input((12, 6, 1), name="image")  # [batch, time (width), height, channels]
    y = L.AveragePooling2D((1, 2))(L.MaxPooling2D((2, 1), padding="same")(
        L.Conv2D(3, 3, padding="same", activation="relu")(x)))
    return functional(x, L.LSTM(5)(L.Reshape((6, 3 * 3))(y)), "m")


@case("depthwise-separable-dynamic-time", {"GRU": 1}, native=[L.DepthwiseConv2D, L.SeparableConv2D, L.Permute])
def _():
    x = keras.Input((None, 6, 2))  # dynamic time
    y = L.SeparableConv2D(3, (3, 3), padding="same")(L.DepthwiseConv2D((3, 3), depth_multiplier=2, padding="same")(x))
    y = L.Permute((1, 3, 2))(y)  # [batch, time, channels, height]
    return functional(x, L.GRU(4, return_sequences=True)(L.Reshape((-1, 3 * 6))(y)), "m")


@case("flatten-per-step-timedistributed-video", {"LSTM": 1}, [L.GlobalAveragePooling2D],
      native=[L.Conv2D, L.MaxPooling2D])
def _():
    x = keras.Input((None, 6, 6, 2), name="video")  # [batch, time, H, W, C]
    block = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(3, 3, activation="relu"), L.MaxPooling2D(2)],
                             name="block")
    y = L.TimeDistributed(block)(x)
    y = L.TimeDistributed(L.Flatten())(L.TimeDistributed(L.Conv2D(2, 1))(y))
    z = L.TimeDistributed(L.GlobalAveragePooling2D())(L.TimeDistributed(L.Conv2D(2, 2))(x))
    return functional(x, L.LSTM(4)(L.Concatenate()([y, z])), "m")


@case("lstm-attention-mha", {"LSTM": 1, "GRU": 1}, [L.Attention, L.MultiHeadAttention])
def _():
    x = keras.Input((None, 5))
    h = L.LSTM(6, return_sequences=True)(x)
    a = L.Attention()([h, h])
    m = L.MultiHeadAttention(num_heads=2, key_dim=3)(h, h)
    return functional(x, L.GRU(3)(L.Concatenate()([a, m])), "m")


@case("masked-attention", {"LSTM": 1}, [L.Attention])
def _():
    t = tokens_input()
    h = L.LSTM(6, return_sequences=True)(L.Embedding(12, 5, mask_zero=True)(t))
    return functional(t, L.Dense(2)(L.GlobalAveragePooling1D()(L.Attention()([h, h]))), "m")


@case("mask-through-spliced-layer", {"LSTM": 1}, [L.ReLU])
def _():
    """ReLU propagates the Embedding's mask unchanged: the LSTM still sees it (padded rows in parity). A
    threshold is what rnnedge's ReLU declines, so tf2onnx converts this one."""
    t = tokens_input()
    return functional(t, L.LSTM(4, return_sequences=True)(L.ReLU(threshold=0.05)(
        L.Embedding(12, 5, mask_zero=True)(t))), "m")


@case("mask-keras-passes-implicitly", {"GRU": 1, "LSTM": 1}, [L.Attention])
def _():
    """Keras records a layer's mask in its node only when it is called with one tensor and no keyword
    arguments; called with training=False, or on a list (Attention), it still gets the mask at run time."""
    t = tokens_input()
    h = L.GRU(4, return_sequences=True)(L.Embedding(12, 5, mask_zero=True)(t), training=False)
    return functional(t, L.LSTM(3)(L.Attention()([h, h])), "m")


@case("native-declines-an-option", {"GRU": 1}, [L.LayerNormalization])
def _():
    """rnnedge's LayerNormalization declines normalising over time alone: tf2onnx converts that layer instead."""
    x = keras.Input((5, 3))
    return functional(x, L.GRU(4)(L.LayerNormalization(axis=1)(L.Dense(4)(x))), "m")


@case("keras-ops-in-graph", {"GRU": 1})
def _():
    x = keras.Input((None, 4))
    h = L.GRU(6, return_sequences=True)(keras.ops.tanh(x) * 2.0)
    y = keras.ops.concatenate([keras.ops.max(h, axis=1), keras.ops.mean(h, axis=1)], axis=-1)
    return functional(x, keras.ops.reshape(keras.ops.softmax(y), (-1, 3, 4)), "m")


@case("registered-custom-layer", {"LSTM": 1}, [Gate])
def _():
    x = keras.Input((None, 4))
    return functional(x, L.Dense(2)(Gate()(L.LSTM(5, return_sequences=True)(Gate()(x)))), "m")


@case("nested-model-frontend", {"GRU": 1}, [L.ReLU], native=[L.Conv2D])
def _():
    frontend = keras.Sequential([keras.Input((8, 4, 1)), L.Conv2D(2, 3, padding="same"),
                                 L.ReLU(max_value=3.0, threshold=0.1),
                                 L.Reshape((8, 8))], name="frontend")
    x = keras.Input((8, 4, 1))
    return functional(x, L.GRU(4)(frontend(x)), "m")


# ------------------------------------------------------------------ the Keras examples' models

@case("example-crnn-ocr", {"LSTM": 2}, native=[L.Conv2D, L.MaxPooling2D])
def _():
    """keras.io "OCR model for reading Captchas": its prediction model (image -> dense2)."""
    img_width, img_height, vocab = 32, 16, 9
    input_img = L.Input(shape=(img_width, img_height, 1), name="image", dtype="float32")
    x = L.Conv2D(8, (3, 3), activation="relu", kernel_initializer="he_normal", padding="same", name="Conv1")(input_img)
    x = L.MaxPooling2D((2, 2), name="pool1")(x)
    x = L.Conv2D(8, (3, 3), activation="relu", kernel_initializer="he_normal", padding="same", name="Conv2")(x)
    x = L.MaxPooling2D((2, 2), name="pool2")(x)
    x = L.Reshape(target_shape=((img_width // 4), (img_height // 4) * 8), name="reshape")(x)
    x = L.Dense(16, activation="relu", name="dense1")(x)
    x = L.Dropout(0.2)(x)
    x = L.Bidirectional(L.LSTM(8, return_sequences=True, dropout=0.25))(x)
    x = L.Bidirectional(L.LSTM(6, return_sequences=True, dropout=0.25))(x)
    x = L.Dense(vocab + 1, activation="softmax", name="dense2")(x)
    return randomize(keras.models.Model(input_img, x, name="ocr_model_v1"))


@case("example-deepspeech2", {"GRU": 2}, native=[L.Conv2D, L.ReLU])
def _():
    """keras.io "Automatic Speech Recognition using CTC": build_model (DeepSpeech2-like)."""
    input_dim, output_dim, rnn_layers, rnn_units = 16, 6, 2, 6
    input_spectrogram = L.Input((None, input_dim), name="input")
    x = L.Reshape((-1, input_dim, 1), name="expand_dim")(input_spectrogram)
    x = L.Conv2D(filters=4, kernel_size=[11, 41], strides=[2, 2], padding="same", use_bias=False, name="conv_1")(x)
    x = L.BatchNormalization(name="conv_1_bn")(x)
    x = L.ReLU(name="conv_1_relu")(x)
    x = L.Conv2D(filters=4, kernel_size=[11, 21], strides=[1, 2], padding="same", use_bias=False, name="conv_2")(x)
    x = L.BatchNormalization(name="conv_2_bn")(x)
    x = L.ReLU(name="conv_2_relu")(x)
    x = L.Reshape((-1, x.shape[-2] * x.shape[-1]))(x)
    for i in range(1, rnn_layers + 1):
        recurrent = L.GRU(units=rnn_units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                          return_sequences=True, reset_after=True, name=f"gru_{i}")
        x = L.Bidirectional(recurrent, name=f"bidirectional_{i}", merge_mode="concat")(x)
        if i < rnn_layers:
            x = L.Dropout(rate=0.5)(x)
    x = L.Dense(units=rnn_units * 2, name="dense_1")(x)
    x = L.ReLU(name="dense_1_relu")(x)
    x = L.Dropout(rate=0.5)(x)
    output = L.Dense(units=output_dim + 1, activation="softmax")(x)
    return randomize(keras.Model(input_spectrogram, output, name="DeepSpeech_2"), scale=0.3)


@case("example-keyword-spotting", {"GRU": 1}, native=[L.Conv2D, L.DepthwiseConv2D, L.MaxPooling2D, L.Softmax])
def _():
    """A keyword-spotting CRNN over MFCC frames: conv front-end, GRU, pooled softmax."""
    n_mfcc, n_keywords = 10, 4
    inputs = keras.Input((None, n_mfcc, 1), name="mfcc")
    x = L.Conv2D(4, (3, 3), padding="same", activation="relu")(inputs)
    x = L.DepthwiseConv2D((3, 3), padding="same", activation="relu")(x)
    x = L.MaxPooling2D((1, 2))(x)
    x = L.Reshape((-1, (n_mfcc // 2) * 4))(x)
    x = L.GRU(8, return_sequences=True)(x)
    x = L.GlobalAveragePooling1D(keepdims=True)(x)
    x = L.Dense(n_keywords)(x)
    return randomize(keras.Model(inputs, L.Softmax()(x), name="kws"))


@case("example-number-addition", {"LSTM": 2}, [L.RepeatVector])
def _():
    """keras.io "Sequence to sequence learning for performing number addition"."""
    digits, chars = 3, "0123456789+ "
    maxlen = digits + 1 + digits
    num_layers = 1
    model = keras.Sequential(name="addition")
    model.add(L.Input((maxlen, len(chars))))
    model.add(L.LSTM(16))
    model.add(L.RepeatVector(digits + 1))
    for _ in range(num_layers):
        model.add(L.LSTM(16, return_sequences=True))
    model.add(L.Dense(len(chars), activation="softmax"))
    return randomize(model)


# ------------------------------------------------------------------ tests

def layer_types(model) -> dict:
    """type -> names of the layers of that type, nested models and wrappers included ("outer/inner")."""
    found = collections.defaultdict(list)

    def walk(layers, scope):
        for layer in layers:
            found[type(layer)].append(scope + layer.name)
            if isinstance(layer, keras.Model):
                walk(layer.layers, f"{scope}{layer.name}/")
            elif isinstance(getattr(layer, "layer", None), keras.layers.Layer):
                walk([layer.layer], scope)

    walk(model.layers, "")
    return found


@pytest.mark.parametrize("name", sorted(CASES))
def test_spliced_export_matches_keras(name, tmp_path):
    builder, counts, spliced, native = CASES[name]
    keras.utils.set_random_seed(0)
    model = builder()
    result = export(model, tmp_path / "out")
    assert result.passed, result.parity.failures()
    assert (result.parity.tolerance.atol, result.parity.tolerance.rtol) == (ATOL, RTOL) == (1e-5, 1e-4)
    assert_fused(tmp_path / "out" / "model.onnx", counts)
    routes = result.manifest.layers
    types = layer_types(model)
    for t in spliced:
        assert types[t] and all(routes.get(n) == "tf2onnx" for n in types[t]), (t.__name__, types[t], routes)
    for t in native:
        assert types[t] and all(routes.get(n) == "native" for n in types[t]), (t.__name__, types[t], routes)
    assert ("tf2onnx" in routes.values()) == bool(spliced or not native)
    fused = [n for n, r in routes.items() if r == "fused"]
    assert sorted(fused) == sorted(result.manifest.fused_nodes)
    # Dynamic axes stay dynamic: every case ran, at several batch sizes (and lengths where time is free).
    spec = result.manifest.data_inputs[0]
    assert spec.shape[0] == "batch"
    golden = read_golden(tmp_path / "out")
    assert {ins[spec.name].shape[0] for _, ins, _ in golden} == {1, 2, 3}
    if model.inputs[0].shape[1] is None:  # times the stride over time (none but deepspeech2's), all > 500 at most
        stride = result.manifest.time_stride
        assert (stride, result.manifest.min_steps) == ((2, 0) if name == "example-deepspeech2" else (1, 0))
        lengths = {ins[spec.name].shape[1] for _, ins, _ in golden}
        assert spec.shape[1] == "time" and lengths == {stride, 7 * stride, 16 * stride, 500}
    for _, _, outs in golden:
        assert all(np.nanstd(v) > 1e-4 for v in outs.values()), "a constant output makes parity vacuous"


def test_every_required_frontend_layer_has_a_case():
    """The layer types users bring in front of (and after) recurrent layers, each in a case above
    where it goes through tf2onnx, or rnnedge's own converter (the front ends over time)."""
    required = {L.RepeatVector, L.Attention, L.MultiHeadAttention, L.ReLU, L.GlobalAveragePooling2D}
    covered = {t for _, _, spliced, _ in CASES.values() for t in spliced}
    assert not required - covered, sorted(t.__name__ for t in required - covered)
    required = {L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D, L.MaxPooling2D, L.AveragePooling2D, L.Permute, L.ReLU,
                L.Softmax}
    covered = {t for _, _, _, native in CASES.values() for t in native}
    assert not required - covered, sorted(t.__name__ for t in required - covered)


def test_consecutive_layers_share_one_tf2onnx_call(tmp_path, monkeypatch):
    from rnnedge.exporter.convert import splice

    runs = []
    original = splice._tf2onnx
    monkeypatch.setattr(splice, "_tf2onnx",
                        lambda calls, *a: runs.append([c[0].name for c in calls]) or original(calls, *a))
    x = keras.Input((None, 4))
    h = L.UnitNormalization(name="norm")(L.Rescaling(2.0, 0.5, name="scale")(L.Dense(4, name="dense")(x)))
    result = export(functional(x, L.Dense(2, name="out")(L.GRU(3, return_sequences=True)(h)), "m"), tmp_path / "o")
    assert result.passed
    assert runs == [["scale", "norm"]]  # Dense and GRU are rnnedge's own


def test_spliced_weights_are_kept_once(tmp_path):
    """A custom layer called twice (on either side of a GRU) is two tf2onnx graphs: its weight is stored once."""
    x = keras.Input((None, 4))
    gate = Gate(name="gate")
    model = functional(x, gate(L.GRU(4, return_sequences=True)(gate(x))), "m")
    result = export(model, tmp_path / "o")
    assert result.passed, result.parity.failures()
    w = keras.ops.convert_to_numpy(gate.w)
    proto = onnx.load(tmp_path / "o" / "model.onnx")
    copies = [t.name for t in proto.graph.initializer
              if t.dims == list(w.shape) and np.allclose(onnx.numpy_helper.to_array(t), 1 / (1 + np.exp(-w)))
              or t.dims == list(w.shape) and np.allclose(onnx.numpy_helper.to_array(t), w)]
    assert len(copies) == 1, copies
    names = [n.name for n in proto.graph.node]
    assert len(names) == len(set(names))


def test_a_saved_model_with_a_registered_layer_exports_from_its_file(tmp_path):
    path = tmp_path / "gate.keras"
    CASES["registered-custom-layer"][0]().save(path)
    result = export(str(path), tmp_path / "o")
    assert result.passed and "tf2onnx" in result.manifest.layers.values()


def test_a_layer_neither_route_converts_is_refused_in_one_line(tmp_path):
    x = keras.Input((None, 4))
    model = keras.Model(x, L.LSTM(3)(NumpyDouble(name="py_double")(x)))
    for allow_loop in (False, True):  # the whole-graph fallback would meet the same layer
        with pytest.raises(SpliceError) as err:
            export(model, tmp_path / "o", allow_loop=allow_loop)
        message = str(err.value)
        assert "'py_double'" in message and "PyFunc" in message and "tf2onnx" in message and "\n" not in message
        assert not (tmp_path / "o").exists()


def test_a_recurrent_layer_inside_a_custom_layer_is_never_given_to_tf2onnx(tmp_path):
    """The custom layer is opened (tests/test_inline.py): its LSTM is fused, nothing spliced."""
    x = keras.Input((None, 4))
    model = keras.Model(x, L.GRU(3)(L.Reshape((1, 4))(WrappedLSTM(name="wrapped")(x))))
    result = export(model, tmp_path / "o")
    assert len(result.manifest.fused_nodes) == 2 and not result.manifest.tf2onnx_layers  # the LSTM and the GRU
    assert list(result.manifest.source["opened"]) == ["wrapped"]


def test_cli_summary_names_the_tf2onnx_layers(tmp_path):
    from typer.testing import CliRunner

    from rnnedge.cli import app

    path = tmp_path / "m.keras"
    CASES["example-number-addition"][0]().save(path)
    result = CliRunner().invoke(app, ["export", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "2 fused recurrent node(s), 1 layer(s) through tf2onnx (repeat_vector" in result.output
