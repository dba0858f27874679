"""A SavedModel without Keras metadata (a plain tf.Module): refused in one line, and with
--allow-loop converted whole by tf2onnx and checked against TensorFlow running the SavedModel."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import rnnedge  # noqa: E402
from rnnedge.cli import app  # noqa: E402
from rnnedge.errors import RnnEdgeError  # noqa: E402
from rnnedge.manifest import Manifest  # noqa: E402
from rnnedge.pipeline import export  # noqa: E402
from tests import k2models  # noqa: E402

tf = pytest.importorskip("tensorflow")


class Recurrent(tf.Module):
    """An Elman recurrence written with tf.scan, from an initial state, with two outputs."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.w = tf.Variable(rng.normal(size=(4, 6)).astype("float32") * 0.4)
        self.u = tf.Variable(rng.normal(size=(6, 6)).astype("float32") * 0.4)
        self.d = tf.Variable(rng.normal(size=(6, 2)).astype("float32") * 0.4)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 4], tf.float32), tf.TensorSpec([None, 6], tf.float32)])
    def __call__(self, frames, h0):
        step = lambda h, x: tf.tanh(x @ self.w + h @ self.u)  # noqa: E731
        hs = tf.scan(step, tf.transpose(frames, [1, 0, 2]), initializer=h0)
        return {"scores": tf.transpose(hs, [1, 0, 2]) @ self.d, "state": hs[-1]}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfgraph") / "recurrent"
    module = Recurrent()
    tf.saved_model.save(module, str(folder), signatures=module.__call__)
    return folder


@pytest.fixture(scope="module")
def exported(plain, tmp_path_factory):
    out = tmp_path_factory.mktemp("tfgraph-out") / "o"
    return export(plain, out, allow_loop=True)


def test_without_allow_loop_it_is_one_line_pointing_at_the_flag(plain, tmp_path):
    with pytest.raises(RnnEdgeError) as err:
        export(plain, tmp_path / "o")
    message = str(err.value)
    assert "\n" not in message and "without Keras metadata" in message and "--allow-loop" in message
    assert not (tmp_path / "o").exists()


def test_allow_loop_converts_the_whole_graph_and_checks_it_against_tensorflow(exported, plain):
    m = exported.manifest
    assert exported.parity.passed and m.parity["passed"]
    assert [s.name for s in m.inputs] == ["frames", "h0"] and [s.name for s in m.outputs] == ["scores", "state"]
    assert m.inputs[0].shape == ("batch", "time", 4) and m.outputs[1].shape == ("batch", 6)
    assert m.source["format"] == "savedmodel (tf.Module)" and m.source["truth"]["framework"] == "tensorflow"
    assert m.fused_nodes == {} and m.loop_layers == ["serving_default"]
    ops = {n.op_type for n in onnx.load(str(exported.folder / "model.onnx")).graph.node}
    assert ops & {"Loop", "Scan"} and not ops & {"LSTM", "GRU", "RNN"}  # tf2onnx's loop, never called fused
    assert max(case["steps"] for case in m.parity["cases"]) == 500  # the long case too


def test_the_export_equals_the_savedmodel_called_directly(exported, plain):
    """Independent of the export's own truth: TensorFlow's loaded SavedModel on a fresh input."""
    rng = np.random.default_rng(3)
    frames = rng.normal(size=(2, 9, 4)).astype("float32")
    h0 = rng.normal(size=(2, 6)).astype("float32")
    want = tf.saved_model.load(str(plain)).signatures["serving_default"](frames=tf.constant(frames), h0=tf.constant(h0))
    got = rnnedge.load(exported.folder).run({"frames": frames, "h0": h0})
    for name in ("scores", "state"):
        np.testing.assert_allclose(got[name], want[name].numpy(), atol=1e-5, rtol=1e-4)
    assert np.abs(got["state"]).max() > 1e-2 and np.abs(got["state"] - h0).max() > 1e-2  # it computed something


def test_the_cli_exports_it_with_allow_loop_and_refuses_streaming(plain, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(plain), "--out", str(tmp_path / "o"), "--allow-loop"])
    assert result.exit_code == 0, result.output
    assert "tf2onnx's whole graph (0 recurrent node(s) of its own, Loops for serving_default)" in result.output
    assert "against tensorflow" in result.output.splitlines()[-1]
    Manifest.load(tmp_path / "o")  # a complete export folder
    result = runner.invoke(app, ["bench", str(tmp_path / "o"), "--baseline", "keras,tf2onnx", "--runs", "3",
                                 "--warmup", "1"])  # the source folder reloaded as it was exported
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in ("fp32", "keras", "tf2onnx"))
    result = runner.invoke(app, ["export", str(plain), "--out", str(tmp_path / "s"), "--allow-loop", "--streaming"])
    assert result.exit_code == 1 and result.output.startswith("error: ") and "--streaming" in result.output
    assert not (tmp_path / "s").exists()


def test_a_savedmodel_without_signatures_is_one_line(tmp_path):
    module = tf.Module()
    module.v = tf.Variable([1.0, 2.0])
    tf.saved_model.save(module, str(tmp_path / "bare"))
    with pytest.raises(RnnEdgeError, match="without signatures.*signatures=module.__call__") as err:
        export(tmp_path / "bare", tmp_path / "o", allow_loop=True)
    assert "\n" not in str(err.value) and not (tmp_path / "o").exists()


def test_a_subclassed_tf_keras_savedmodel_goes_through_its_signature_with_allow_loop(tmp_path):
    """No configuration to rebuild it from: one line naming --allow-loop; with it, the serving
    signature tf_keras wrote, converted whole and checked against TensorFlow."""
    pytest.importorskip("tf_keras")

    net = k2models.subclassed_gru()
    x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype("float32")
    net(x)
    net.save(str(tmp_path / "net"), save_format="tf")
    with pytest.raises(RnnEdgeError, match="subclassed tf_keras model.*pass --allow-loop") as err:
        export(tmp_path / "net", tmp_path / "o")
    assert "\n" not in str(err.value)
    result = export(tmp_path / "net", tmp_path / "o", allow_loop=True)
    m = result.manifest
    assert result.parity.passed and m.source["format"] == "savedmodel (subclassed tf_keras model)"
    assert m.source["truth"]["framework"] == "tensorflow" and m.fused_nodes == {}
    (name,) = [s.name for s in m.data_inputs]
    np.testing.assert_allclose(rnnedge.load(result.folder).run({name: x}).data[0], net(x).numpy(), atol=1e-5, rtol=1e-4)


def test_a_subclassed_tf_keras_object_goes_through_a_savedmodel_of_it_with_allow_loop(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")

    class Tagger(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.lstm = tf_keras.layers.LSTM(3, return_sequences=True)

        def call(self, x):
            return self.lstm(x) * 2.0

    model = Tagger()
    x = np.random.default_rng(2).normal(size=(2, 5, 4)).astype("float32")
    model(x)
    with pytest.raises(RnnEdgeError, match="subclassed tf_keras model.*allow_loop=True") as err:
        export(model, tmp_path / "o")
    assert "\n" not in str(err.value)
    result = export(model, tmp_path / "o", allow_loop=True)
    assert result.parity.passed and result.manifest.source["format"] == "tf_keras object (subclassed)"
    source = result.manifest.source
    assert source["name"] == model.name and "rnnedge-tf-keras-" not in json.dumps(source)  # no temporary path
    (name,) = [s.name for s in result.manifest.data_inputs]
    np.testing.assert_allclose(rnnedge.load(result.folder).run({name: x}).data[0], model(x).numpy(), atol=1e-5,
                               rtol=1e-4)
