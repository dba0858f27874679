"""Models as users have them: tf.keras 2 `.h5` files and SavedModel folders, tf_keras objects and
subclassed Keras 3 models, exported fused and checked against the framework that trained them."""

from __future__ import annotations

import collections
import hashlib
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pytest  # noqa: E402
from keras import layers as L  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import rnnedge  # noqa: E402
from rnnedge.cli import app  # noqa: E402
from rnnedge.errors import RnnEdgeError, first_line  # noqa: E402
from rnnedge.exporter.load import keras2  # noqa: E402
from rnnedge.pipeline import export  # noqa: E402
from tests import k2models  # noqa: E402
from tests.helpers import op_counts
from tests.kmodels import randomize  # noqa: E402

FUSED_OPS = ("LSTM", "GRU", "RNN")
FORMATS = ("h5", "savedmodel")


@pytest.fixture(scope="session")
def suite(request, tmp_path_factory) -> Path:
    """The Keras 2 suite saved both ways, cached between runs in pytest's cache (a SavedModel takes
    seconds to write; a run with `-p no:cacheprovider` writes it afresh); the cache key changes with
    the builders and the tf_keras version."""
    tf_keras = pytest.importorskip("tf_keras")
    key = hashlib.sha256(Path(k2models.__file__).read_bytes() + tf_keras.__version__.encode()).hexdigest()[:12]
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir(f"keras2-suite-{key}") if cache is not None else tmp_path_factory.mktemp("keras2-suite")
    for name in k2models.SUITE:
        done = folder / f"{name}.done"
        if not done.exists():
            k2models.build(name, folder)
            done.touch()
    return folder


def ops(folder: Path) -> collections.Counter:
    return op_counts(folder / "model.onnx")


def source_of(suite: Path, name: str, fmt: str) -> Path:
    return suite / (f"{name}.h5" if fmt == "h5" else name)


CASES = [(name, fmt) for name in k2models.SUITE for fmt in FORMATS]


@pytest.mark.parametrize("name, fmt", CASES)
def test_suite_exports_fused_with_tf_keras_parity(suite, tmp_path, name, fmt):
    result = export(source_of(suite, name, fmt), tmp_path / "o")
    found = ops(tmp_path / "o")
    fused = sum(found[op] for op in FUSED_OPS)
    print(f"\n{name:28s} {fmt:10s} fused {fused}  max|diff| {result.parity.worst_abs:.1e}")
    assert result.passed  # atol 1e-5 + rtol 1e-4 against tf_keras, on every case
    assert fused == k2models.SUITE[name][1] and not found["Loop"] and not found["Scan"], found
    source = result.manifest.source
    assert source["format"] == fmt and source["truth"]["framework"] == "tf_keras", source
    assert all(isinstance(v, list) for v in source["translated"].values())


def test_translation_is_recorded(suite, tmp_path):
    source = export(suite / "seq2seq_inference_decoder.h5", tmp_path / "o").manifest.source
    assert "dropped time_major=False" in source["translated"]["decoder"]
    assert any("initial_state" in note for note in source["translated"]["decoder"])
    assert source["truth"]["version"] == keras2._version("tf-keras")


def test_stateful_model_carries_state_over_consecutive_calls(suite, tmp_path):
    """Three consecutive calls: the ONNX state outputs fed back match tf_keras' own stateful layers."""
    import tf_keras

    manifest = export(suite / "stateful_lstm.h5", tmp_path / "o").manifest
    session = ort.InferenceSession(str(tmp_path / "o" / "model.onnx"), providers=["CPUExecutionProvider"])
    truth = tf_keras.models.load_model(suite / "stateful_lstm.h5", compile=False)
    truth.reset_states()
    (data,) = manifest.data_inputs
    feeds = {s.name: np.zeros(s.shape, np.float32) for s in manifest.inputs if s.role == "state"}
    assert len(feeds) == 4  # h and c of both layers
    rng = np.random.default_rng(1)
    for call in range(3):
        feeds[data.name] = rng.normal(size=(2, 5, 1)).astype(np.float32)
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        want = np.asarray(truth(feeds[data.name]))
        np.testing.assert_allclose(got[manifest.outputs[0].name], want, atol=1e-5, rtol=1e-4, err_msg=f"call {call}")
        feeds.update((s.feeds, got[s.name]) for s in manifest.outputs if s.role == "state")


def test_tf_keras_object_exports(tmp_path):
    pytest.importorskip("tf_keras")
    model = k2models.build("masked_gru_v1", tmp_path, formats=())
    result = export(model, tmp_path / "o")
    assert result.passed and result.manifest.source["format"] == "tf_keras object"
    assert ops(tmp_path / "o")["GRU"] == 2


def test_h5_without_tf_keras_is_rebuilt_from_its_configuration(suite, tmp_path, monkeypatch):
    monkeypatch.setattr(keras2, "has_tf_keras", lambda: False)
    result = export(suite / "seq2seq_training.h5", tmp_path / "o")
    truth = result.manifest.source["truth"]
    assert result.passed and truth["framework"] == "keras" and "Keras 3 rebuild" in truth["note"]
    assert ops(tmp_path / "o")["LSTM"] == 2


def _swap_initial_states(monkeypatch):
    """The rebuild made wrong on purpose: a recurrent layer's initial_state [h, c] read as [c, h]."""
    state_node = keras2._state_node

    def swapped(node, notes):
        out = state_node(node, notes)
        if isinstance(out, dict):
            out["kwargs"]["initial_state"] = out["kwargs"]["initial_state"][::-1]
        return out

    monkeypatch.setattr(keras2, "_state_node", swapped)


def test_a_rebuild_that_differs_from_tf_keras_fails_parity(suite, tmp_path, monkeypatch):
    """The truth for a Keras 2 file is tf_keras', not the rebuild's: a rebuild whose decoder takes
    its initial_state as [c, h] converts faithfully to ONNX, so only tf_keras can tell; parity fails."""
    _swap_initial_states(monkeypatch)
    with pytest.raises(rnnedge.ParityError) as err:
        export(suite / "seq2seq_inference_decoder.h5", tmp_path / "o")
    assert "\n" not in str(err.value)


def test_the_rebuild_truth_is_checked_against_tf_keras_outside_the_export(suite, tmp_path, monkeypatch):
    """Without tf_keras the rebuild computes the truth: its export (a decoder with initial_state, the
    states as outputs) gives tf_keras' outputs, run here on the golden inputs."""
    import tf_keras

    from rnnedge.check import read_golden

    monkeypatch.setattr(keras2, "has_tf_keras", lambda: False)
    result = export(suite / "seq2seq_inference_decoder.h5", tmp_path / "o")
    assert result.passed and result.manifest.source["truth"]["framework"] == "keras"
    model = tf_keras.models.load_model(suite / "seq2seq_inference_decoder.h5", compile=False)
    loaded = rnnedge.load(tmp_path / "o")
    names = [s.name for s in result.manifest.data_outputs]
    for _, inputs, _ in read_golden(tmp_path / "o"):
        want = [np.asarray(w) for w in model([inputs[s.name] for s in result.manifest.data_inputs])]
        got = loaded.run(**inputs)
        assert len(want) == len(names) == 3
        for name, w in zip(names, want):
            np.testing.assert_allclose(got[name], w, atol=1e-5, rtol=1e-4, err_msg=name)


def test_savedmodel_without_tf_keras_is_one_line(suite, tmp_path, monkeypatch):
    monkeypatch.setattr(keras2, "has_tf_keras", lambda: False)
    with pytest.raises(RnnEdgeError, match=r"needs tf_keras: pip install 'rnnedge\[export,keras2\]'"):
        export(suite / "irnn", tmp_path / "o")


@pytest.mark.parametrize("name, fmt", [("conv_lstm", "h5"), ("conv_lstm_sequences", "h5"),
                                       ("conv_lstm_sequences", "savedmodel")])
def test_conv_lstm_exports_as_a_scan_matching_tf_keras(tmp_path, name, fmt):
    """ConvLSTM2D without --allow-loop: an rnnedge-built Scan of Conv ops (no Loop), its default
    recurrent_activation Keras 2's hard_sigmoid, checked against tf_keras."""
    pytest.importorskip("tf_keras")
    model = k2models.build(name, tmp_path, formats=(fmt,))
    result = export(tmp_path / (f"{name}.h5" if fmt == "h5" else name), tmp_path / "o")
    print(f"\n{name} {fmt}: max|diff| {result.parity.worst_abs:.1e}")
    assert result.passed and result.manifest.source["truth"]["framework"] == "tf_keras"
    convs = [layer.name for layer in model.layers if type(layer).__name__ == "ConvLSTM2D"]
    found = ops(tmp_path / "o")
    assert found["Scan"] == len(convs) and not found["Loop"] and not any(found[op] for op in FUSED_OPS), found
    assert result.manifest.scan_layers == convs and not result.manifest.loop_layers
    assert all("ConvLSTM2D" in result.manifest.notes[c] for c in convs)
    assert all(any("recurrent_activation hard_sigmoid" in note for note in result.manifest.source["translated"][c])
               for c in convs)
    # Keras 2's hard_sigmoid, not Keras 3's: the gates are computed as tf_keras does at every step
    x = np.random.default_rng(1).normal(0, 2, (2, model.input_shape[1] or 4, *model.input_shape[2:])).astype("float32")
    want = model(x).numpy()
    assert np.isfinite(want).all() and np.ptp(want) > 1e-3
    np.testing.assert_allclose(rnnedge.load(tmp_path / "o").run(x).data[0], want, atol=1e-5, rtol=1e-4)


def hard_sigmoid_gates():
    """Keras 2's hard_sigmoid, clip(0.2x + 0.5), as gates and as a Dense activation: Keras 3's
    function of that name is clip(x/6 + 0.5), so a rebuild that kept the name would differ."""
    import tf_keras

    L2 = tf_keras.layers
    model = tf_keras.Sequential([
        L2.LSTM(5, recurrent_activation="hard_sigmoid", return_sequences=True, input_shape=(None, 3)),
        L2.GRU(4, recurrent_activation="hard_sigmoid", reset_after=False, return_sequences=True),
        L2.Dense(2, activation="hard_sigmoid")])
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.8, w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.mark.parametrize("with_tf_keras", [True, False], ids=["tf_keras-truth", "rebuild-truth"])
def test_keras2_hard_sigmoid_is_keras2s_function(tmp_path, monkeypatch, with_tf_keras):
    pytest.importorskip("tf_keras")
    model = hard_sigmoid_gates()
    model.save(tmp_path / "gates.h5")
    if not with_tf_keras:  # the rebuild is the truth: compared with tf_keras here, outside the export
        monkeypatch.setattr(keras2, "has_tf_keras", lambda: False)
    result = export(tmp_path / "gates.h5", tmp_path / "o")
    assert result.passed and ops(tmp_path / "o")["LSTM"] == 1 and ops(tmp_path / "o")["GRU"] == 1
    x = np.random.default_rng(1).normal(0, 2, (2, 9, 3)).astype("float32")
    want = model(x).numpy()
    got = rnnedge.load(tmp_path / "o").run(x).data[0]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    keras3_gates = keras.activations.hard_sigmoid(keras.ops.convert_to_tensor(x)).numpy()
    assert np.abs(keras3_gates - np.clip(0.2 * x + 0.5, 0, 1)).max() > 0.05  # the two functions differ here
    notes = result.manifest.source["translated"]
    assert all(any("hard_sigmoid" in n for n in notes[layer.name]) for layer in model.layers)  # lstm, gru, dense


def test_bad_keras2_inputs_are_one_line(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    import tensorflow as tf

    model = k2models.build("irnn", tmp_path, formats=())
    model.save_weights(tmp_path / "weights.h5")
    with pytest.raises(RnnEdgeError, match="weights only .*load_weights"):
        export(tmp_path / "weights.h5", tmp_path / "o")

    class Plain(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def __call__(self, x):
            return x * 2.0

    tf.saved_model.save(Plain(), str(tmp_path / "plain"))  # no Loop in tf2onnx's graph of it: exported as is (#26)
    plain = export(tmp_path / "plain", tmp_path / "p")
    assert plain.passed and plain.manifest.source["truth"]["framework"] == "tensorflow"

    class Twice(tf_keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    x = tf_keras.Input((None, 3))
    tf_keras.Model(x, tf_keras.layers.LSTM(2)(Twice(name="twice")(x))).save(tmp_path / "custom.h5")
    with pytest.raises(RnnEdgeError, match="'Twice' is known to neither.*--custom"):
        export(tmp_path / "custom.h5", tmp_path / "o")

    lstm = tf_keras.Sequential([tf_keras.layers.LSTM(2, time_major=True, input_shape=(None, 3))])
    lstm.save(tmp_path / "time_major.h5")
    with pytest.raises(RnnEdgeError, match="time_major=True has no Keras 3 equivalent"):
        export(tmp_path / "time_major.h5", tmp_path / "o", force=True)
    assert not (tmp_path / "o").exists()


def test_cli_exports_h5_and_savedmodel(suite, tmp_path):
    runner = CliRunner()
    for source in (suite / "text_generation.h5", suite / "irnn"):
        out = tmp_path / source.name
        result = runner.invoke(app, ["export", str(source), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "1 fused recurrent node(s)" in result.output and "PASS" in result.output
        assert f"against tf_keras {keras2._version('tf-keras')}" in result.output
    result = runner.invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "SavedModel folder (with saved_model.pb)" in result.output


def test_keras2_h5_and_its_keras_file_export_to_the_same_model(suite, tmp_path):
    """The same model from a Keras 2 .h5 (rebuilt, truth from tf_keras) and from the .keras file of
    its rebuild: both pass parity against their own truth, hold the same fused nodes, and give the
    same outputs as tf_keras on inputs neither export saw. The export times are printed (first
    calls, a figure to read, not an assertion)."""
    import tf_keras

    rebuilt = keras2.from_h5(suite / "addition_rnn.h5").model
    rebuilt.save(tmp_path / "addition_rnn.keras")
    times, results = {}, {}
    for source in (suite / "addition_rnn.h5", tmp_path / "addition_rnn.keras"):
        started = time.perf_counter()
        results[source.suffix] = export(source, tmp_path / source.suffix[1:])
        times[source.suffix] = time.perf_counter() - started
    h5, native = results[".h5"], results[".keras"]
    assert h5.passed and native.passed
    assert h5.manifest.source["truth"]["framework"] == "tf_keras"
    assert native.manifest.source["truth"]["framework"] == "keras"
    assert ops(tmp_path / "h5") == ops(tmp_path / "keras") and sum(ops(tmp_path / "h5")[op] for op in FUSED_OPS) == 2
    spec = h5.manifest.data_inputs[0]
    x = np.random.default_rng(5).normal(0, 1, (3, 11, spec.shape[-1])).astype("float32")
    if isinstance(spec.shape[1], int):
        x = np.random.default_rng(5).normal(0, 1, (3, *spec.shape[1:])).astype("float32")
    want = np.asarray(tf_keras.models.load_model(suite / "addition_rnn.h5", compile=False)(x))
    for folder in ("h5", "keras"):
        np.testing.assert_allclose(rnnedge.load(tmp_path / folder).run(x).data[0], want, atol=1e-5, rtol=1e-4)
    print(f"\nexport time: Keras 2 .h5 {times['.h5']:.2f} s, .keras {times['.keras']:.2f} s (first call)")


# Subclassed Keras 3 models: call() traced into a functional graph sharing the model's layers.

class Tagger(keras.Model):
    def __init__(self):
        super().__init__()
        self.lstm = L.LSTM(6, return_sequences=True)
        self.dense = L.Dense(3)

    def call(self, x):
        return self.dense(self.lstm(x))


class TwoBranches(keras.Model):
    """keras.ops in call(), a Bidirectional and a GRU over the same input."""

    def __init__(self):
        super().__init__()
        self.bi = L.Bidirectional(L.LSTM(4))
        self.gru = L.GRU(5)

    def call(self, x):
        return keras.ops.concatenate([self.bi(x), keras.ops.tanh(self.gru(x)) * 2.0], axis=-1)


class TwoInputs(keras.Model):
    def __init__(self):
        super().__init__()
        self.rnn = L.SimpleRNN(4)

    def call(self, inputs):
        x, scale = inputs
        return self.rnn(x) * scale


class TokenTagger(keras.Model):
    """Token ids through an Embedding with a zero mask: traced with an int32 input and a free time axis."""

    def __init__(self):
        super().__init__()
        self.embed = L.Embedding(30, 6, mask_zero=True)
        self.gru = L.GRU(5, return_sequences=True)

    def call(self, tokens):
        return keras.ops.softmax(self.gru(self.embed(tokens)))


class Branching(keras.Model):
    def __init__(self):
        super().__init__()
        self.lstm = L.LSTM(4)

    def call(self, x):
        if keras.ops.mean(x) > 0:  # Python control flow on a tensor's value
            return self.lstm(x)
        return -self.lstm(x)


@pytest.mark.parametrize("make, inputs, fused", [
    (Tagger, [(2, 7, 3)], {"LSTM": 1}),
    (TokenTagger, [(2, 7)], {"GRU": 1}),
    (TwoBranches, [(2, 5, 3)], {"LSTM": 1, "GRU": 1}),
    (TwoInputs, [(2, 5, 3), (2, 1)], {"RNN": 1}),
])
def test_subclassed_models_are_traced(tmp_path, make, inputs, fused):
    model = make()
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 30, size=s).astype(np.int32) if make is TokenTagger else
              rng.normal(size=s).astype(np.float32) for s in inputs]
    model(arrays if len(arrays) > 1 else arrays[0])
    randomize(model)
    result = export(model, tmp_path / "o")
    assert result.passed and result.manifest.source["format"] == "subclassed"
    found = ops(tmp_path / "o")
    assert {op: found[op] for op in fused} == fused and not found["Loop"]
    if make is TokenTagger:
        (tokens,) = result.manifest.data_inputs
        assert tokens.dtype == "int32" and tokens.shape == ("batch", "time") and tokens.pad_value == 0


def test_untraceable_subclassed_model_is_one_line(tmp_path):
    model = Branching()
    model(np.ones((1, 4, 2), np.float32))
    with pytest.raises(RnnEdgeError, match="cannot be traced.*branches in Python on a tensor.s value.*keras.ops.cond"):
        export(model, tmp_path / "o")


# Keras 3 defects met on the way.

def test_adapted_normalization_before_lstm(tmp_path):
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(0).normal(3.0, 2.0, size=(64, 6, 4)).astype(np.float32))
    x = keras.Input((None, 4))
    model = keras.Model(x, L.LSTM(5)(norm(x)))
    assert export(model, tmp_path / "o").passed
    assert ops(tmp_path / "o")["LSTM"] == 1


def test_keras3_h5_with_embedding_mask(tmp_path):
    x = keras.Input((None,), dtype="int32")
    model = randomize(keras.Model(x, L.GRU(4)(L.Embedding(20, 5, mask_zero=True)(x))))
    model.save(tmp_path / "masked.h5")
    assert export(tmp_path / "masked.h5", tmp_path / "o").passed
    assert ops(tmp_path / "o")["GRU"] == 1
    tokens = np.array([[3, 5, 7, 0, 0], [0, 0, 4, 9, 2]], np.int32)  # padded at the back and at the front
    got = rnnedge.load(tmp_path / "o").run(tokens)[0]
    np.testing.assert_allclose(got, np.asarray(model(tokens)), atol=1e-5, rtol=1e-4)  # the original, not the loaded


def test_long_reasons_end_cleanly():
    reason = first_line(ValueError("Unknown layer: 'NotEqual'. Please see https://keras.io/guides/"
                                       "serialization_and_saving/#registering-the-custom-object " + "x" * 200))
    assert reason.endswith(" ...") and "https://keras.io/guides/serialization_and_saving/#reg" not in reason[-10:]


def test_a_quoted_converter_failure_hides_paths_and_keeps_tensorflows_own_error():
    """first_line(scrub=True), for tf2onnx's and onnxruntime's failures (the --allow-loop fallback)."""
    trace = ValueError("in user code:\n\n    File \"/tmp/tmpab12/module.py\", line 3, in call\n\n"
                       "    ValueError: Bad shape at /tmp/tmpab12/x.pb. More text\n")
    assert first_line(trace, scrub=True) == "Bad shape at <file>"
    said = first_line(RuntimeError("Load model from /var/x/m.onnx failed"), scrub=True)
    assert said == "Load model from <file> failed"


def _k2_layers():
    import tf_keras

    return tf_keras, tf_keras.layers


def norms_and_noise():
    """Layers whose Keras 2 arguments Keras 3 reads otherwise: BatchNormalization's list axis,
    SpatialDropout1D's trainable and noise_shape, LeakyReLU's alpha (Keras 3: negative_slope,
    another default), GaussianNoise."""
    k, L2 = _k2_layers()
    return k.Sequential([L2.SpatialDropout1D(0.2, input_shape=(None, 3)), L2.LSTM(5, return_sequences=True),
                         L2.BatchNormalization(), L2.LeakyReLU(0.1), L2.GaussianNoise(0.3),
                         L2.LayerNormalization(), L2.GRU(4), L2.Dropout(0.2), L2.Dense(2)])


def nested_models():
    """A Sequential with an input shape and a functional model, each nested in a functional model
    (Keras 2 numbers their calls from 1); the Sequential is called twice."""
    k, L2 = _k2_layers()
    inner = k.Sequential([L2.LSTM(4, return_sequences=True, input_shape=(None, 3)), L2.GRU(3)], name="inner")
    y = L2.Input((None, 3))
    block = k.Model(y, L2.SimpleRNN(2)(y), name="block")
    a, b = L2.Input((None, 3)), L2.Input((None, 3))
    return k.Model([a, b], L2.Dense(2)(L2.Concatenate()([inner(a), inner(b), block(a)])))


def backward_layer():
    """Bidirectional with a backward layer of its own (stored without a module in Keras 2)."""
    k, L2 = _k2_layers()
    forward = L2.LSTM(4, return_sequences=True)
    backward = L2.LSTM(4, return_sequences=True, go_backwards=True, activation="relu")
    return k.Sequential([L2.Bidirectional(forward, backward_layer=backward, input_shape=(None, 3)), L2.Dense(2)])


def nested_outputs():
    """Nested models whose calls are the outer model's outputs: a functional model called twice
    (Keras 2 and Keras 3 number a functional model's output_layers alike) and a Sequential with an
    input shape (Keras 2 numbers its calls from 1)."""
    k, L2 = _k2_layers()
    y = L2.Input((None, 3))
    block = k.Model(y, L2.GRU(2, return_sequences=True)(y), name="block")
    inner = k.Sequential([L2.LSTM(4, input_shape=(None, 3))], name="inner")
    a, b = L2.Input((None, 3)), L2.Input((None, 3))
    return k.Model([a, b], [block(a), block(b), inner(b)])


HELD_OUT = {"norms_and_noise": (norms_and_noise, 2), "nested_models": (nested_models, 5),  # inner called twice
            "backward_layer": (backward_layer, 1), "nested_outputs": (nested_outputs, 3)}


@pytest.mark.parametrize("with_tf_keras", [True, False], ids=["tf_keras", "h5py"])
@pytest.mark.parametrize("name", HELD_OUT)
def test_keras2_arguments_and_nesting_keras3_reads_otherwise(tmp_path, monkeypatch, name, with_tf_keras):
    pytest.importorskip("tf_keras")
    build, fused = HELD_OUT[name]
    model = build()
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    for layer in model.layers:
        if "BatchNormalization" in type(layer).__name__:  # a variance is positive
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma, beta, mean, np.abs(variance) + 0.1])
    model.save(tmp_path / "m.h5")
    if not with_tf_keras:
        monkeypatch.setattr(keras2, "has_tf_keras", lambda: False)
    result = export(tmp_path / "m.h5", tmp_path / "o")
    assert result.passed and sum(ops(tmp_path / "o")[op] for op in FUSED_OPS) == fused
    rng = np.random.default_rng(1)  # one generator: every input gets values of its own
    feeds = {s.name: rng.normal(0, 1, (2, 6, 3)).astype("float32") for s in result.manifest.data_inputs}
    got = rnnedge.load(tmp_path / "o").run(feeds).data
    want = model(list(feeds.values()) if len(feeds) > 1 else [*feeds.values()][0])
    want = [np.asarray(w) for w in (want if isinstance(want, (list, tuple)) else [want])]
    assert len(got) == len(want)
    for g, w in zip(got, want):  # tf_keras itself, outside the export, every output
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4)


def test_a_keras2_argument_keras3_lacks_is_one_line_naming_the_layer():
    pytest.importorskip("tf_keras")
    config = {"class_name": "Sequential", "config": norms_and_noise().get_config()}
    gru = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "GRU")
    gru["config"]["zoneout"] = 0.1
    with pytest.raises(RnnEdgeError) as err:
        keras2.rebuild(config, {}, "m.h5")
    message = str(err.value)
    assert "\n" not in message and f"layer '{gru['config']['name']}' (GRU)" in message and "zoneout=0.1" in message
