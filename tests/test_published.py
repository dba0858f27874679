"""Model files as people publish them (issue #26): early tf.keras SavedModels, tf.saved_model.save
of a Keras model, HDF5 under a .keras name, Keras 2.0 GRUs without reset_after, token-id inputs,
custom layer classes (supplied, or revived from traced functions). Each is written as its writer
wrote it (tests/published.py), exported fused and checked against the framework that computes it."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import rnnedge  # noqa: E402
from rnnedge.cli import app  # noqa: E402
from rnnedge.errors import RnnEdgeError  # noqa: E402
from rnnedge.exporter.load import keras2  # noqa: E402
from rnnedge.pipeline import export  # noqa: E402
from tests import published  # noqa: E402
from tests.helpers import op_counts  # noqa: E402

pytest.importorskip("tf_keras")
FUSED_OPS = ("LSTM", "GRU", "RNN")
_BUILT: dict[str, Path] = {}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("published")


def built(folder: Path, name: str) -> Path:
    """The pattern's file, written once per session."""
    if name not in _BUILT:
        _BUILT[name] = published.PATTERNS[name][0](folder)
    return _BUILT[name]


def options(folder: Path, name: str) -> dict:
    return {k: str(folder / v) if k == "custom" else v for k, v in published.PATTERNS[name][3].items()}


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message and "Exception encountered" not in message, message
    return message


@pytest.mark.parametrize("name", list(published.PATTERNS))
def test_published_pattern_exports_fused_with_parity(folder, tmp_path, name):
    path = built(folder, name)
    started = time.perf_counter()
    result = export(path, tmp_path / "o", **options(folder, name))
    seconds = time.perf_counter() - started
    found = op_counts(tmp_path / "o" / "model.onnx")
    fused = sum(found[op] for op in FUSED_OPS)
    truth = result.manifest.source["truth"]
    print(f"\n{name:28s} {result.manifest.source['format'][:40]:40s} {seconds:5.1f} s  fused {fused}  "
          f"max|diff| {result.parity.worst_abs:.1e} against {truth['framework']}")
    assert result.passed  # atol 1e-5 + rtol 1e-4 on every case
    assert fused == published.PATTERNS[name][1] and not found["Loop"] and not found["Scan"], found
    assert truth["framework"] == published.PATTERNS[name][2], truth
    line = result.lines()[-1]
    if truth["framework"] != "keras":
        assert f"against {truth['framework']}" in line, line
    assert ("checked against rnnedge's rebuild, not tf_keras" in line) == bool(truth.get("rebuild")), line


def test_early_savedmodel_is_a_keras_model_with_its_metadata_in_saved_model_pb(folder, tmp_path):
    path = built(folder, "early_savedmodel")
    assert not (path / "keras_metadata.pb").exists() and keras2.has_keras_metadata(path)
    result = export(path, tmp_path / "o")
    assert "saved_model.pb" in result.manifest.source["format"]
    assert sorted(result.manifest.fused_nodes) == ["gru", "lstm"] or len(result.manifest.fused_nodes) == 2


def test_a_keras20_gru_is_read_by_its_bias_and_matches_tf_keras_on_the_file_as_saved(folder, tmp_path):
    import tf_keras

    name = "keras20_gru"
    path = built(folder, name)
    with pytest.raises(Exception, match="reset_after"):  # what tf_keras itself says of such a file
        tf_keras.models.load_model(path, compile=False)
    result = export(path, tmp_path / "o")
    source = result.manifest.source
    assert "reset_after" in source["truth"]["rebuild"] and "Keras 3 rebuild" in source["truth"]["note"]
    notes = [n for layer in source["translated"].values() for n in layer if "reset_after" in n]
    assert len(notes) == 2 and all("reset_after=False" in n for n in notes), notes
    # independent of the export's own truth: tf_keras on the file before its config was edited
    original = tf_keras.models.load_model(folder / f"{name}_as_saved.h5", compile=False)
    x = np.random.default_rng(5).normal(size=(3, 11, original.input_shape[-1])).astype("float32")
    got = rnnedge.load(tmp_path / "o").run(x)
    np.testing.assert_allclose(next(iter(got.values())), original(x).numpy(), atol=1e-5, rtol=1e-4)


def test_tf_saved_model_save_with_a_loop_needs_allow_loop_and_says_why(folder, tmp_path):
    path = published.tf_saved_model_save_simple_rnn(folder)
    with pytest.raises(RnnEdgeError) as err:
        export(path, tmp_path / "o")
    message = one_line(err)
    assert "tf.saved_model.save of a Keras model" in message and "--allow-loop" in message
    assert "Loop" in message and "cannot fuse its recurrent layers" not in message
    assert not (tmp_path / "o").exists()
    result = export(path, tmp_path / "o", allow_loop=True)
    assert result.passed and result.manifest.source["truth"]["framework"] == "tensorflow"
    assert result.manifest.loop_layers == ["serving_default"]


@pytest.mark.parametrize("allow_loop", [False, True])
def test_token_id_inputs_get_ids_within_the_vocabulary_on_every_path(folder, tmp_path, allow_loop):
    path = built(folder, "tf_saved_model_save_tokens")
    result = export(path, tmp_path / "o", allow_loop=allow_loop)
    spec = result.manifest.inputs[0]
    assert result.passed and spec.dtype == "float32" and spec.vocab == 30  # the Embedding's input_dim
    with np.load(tmp_path / "o" / "golden.npz") as golden:
        ids = np.concatenate([golden[k].ravel() for k in golden.files if k.endswith(spec.name)])
    assert ids.size and np.all(ids == np.round(ids)) and ids.min() >= 0 and ids.max() < 30 and ids.max() > 10
    kept = export(built(folder, "early_savedmodel_tokens"), tmp_path / "k", allow_loop=allow_loop).manifest.inputs[0]
    assert kept.dtype.startswith("int") and kept.vocab == 30


def test_allow_loop_fallback_feeds_an_embedding_ids(tmp_path):
    """A Keras 3 model whose float input feeds an Embedding, through tf2onnx's whole graph."""
    import keras

    x = keras.Input((None,), dtype="float32")
    e = keras.layers.Embedding(7, 4)(x)
    model = keras.Model(x, keras.layers.Dense(1)(keras.layers.SimpleRNN(3, activation="gelu")(e)))
    result = export(model, tmp_path / "o", allow_loop=True)
    assert result.passed and result.manifest.inputs[0].vocab == 7


def test_custom_classes_come_from_a_module_file_or_a_dotted_path(folder, tmp_path, monkeypatch):
    path = built(folder, "keras3_custom_layer")
    with pytest.raises(RnnEdgeError) as err:
        export(path, tmp_path / "o")
    message = one_line(err)
    assert "'Scale'" in message and "--custom" in message
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "c"), "--custom",
                                 str(folder / "user_layers.py")])
    assert result.exit_code == 0, result.output
    monkeypatch.syspath_prepend(str(folder))
    assert export(path, tmp_path / "d", custom="user_layers").passed
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["source"]["custom"] == [str((folder / "user_layers.py").resolve())]
    result = runner.invoke(app, ["bench", str(tmp_path / "c"), "--baseline", "keras", "--runs", "2", "--warmup", "1"])
    assert result.exit_code == 0 and "keras" in result.output, result.output  # the source reloaded with its classes
    result = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "e"), "--custom", "no_such_module"])
    assert result.exit_code == 1 and result.output.startswith("error: --custom no_such_module") \
        and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "e").exists()


def test_custom_keeps_safe_mode_on_for_lambda(folder, tmp_path):
    import keras

    x = keras.Input((None, 3))
    h = keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.LSTM(2)(x))
    keras.Model(x, h).save(tmp_path / "lambda.keras")
    with pytest.raises(RnnEdgeError, match="Lambda.*--unsafe"):
        export(tmp_path / "lambda.keras", tmp_path / "o", custom=str(published.custom_module(folder)))


def test_a_revived_custom_layer_is_named_with_the_shapes_it_was_traced_for(folder, tmp_path):
    path = built(folder, "revived_custom_layer")
    with pytest.raises(keras2.RevivedError) as err:
        keras2.from_savedmodel(path)
    message = one_line(err)
    assert "'twice'" in message and "(None, 4)" in message and "--custom" in message
    result = export(path, tmp_path / "o")  # its signature: the traced functions at their traced lengths
    assert "revived" in result.manifest.source["format"]
    assert result.manifest.inputs[0].shape == ("batch", 12, 3)  # the length it was traced with
    built(folder, "keras2_custom_layer")  # writes user_tf_keras_layers.py, which defines Twice
    supplied = export(path, tmp_path / "s", custom=str(folder / "user_tf_keras_layers.py"))
    assert supplied.passed and "--custom layer(s) 'twice'" in supplied.manifest.source["format"]


def test_hdf5_under_any_name_and_files_no_keras_can_describe(folder, tmp_path):
    import h5py

    other = tmp_path / "forecaster.model"
    shutil.copy(built(folder, "h5_named_keras"), other)
    assert export(other, tmp_path / "o").passed
    weights = tmp_path / "weights.keras"
    with h5py.File(weights, "w") as f:
        f.attrs["layer_names"] = [b"dense"]
    with pytest.raises(RnnEdgeError) as err:
        export(weights, tmp_path / "w")
    assert "weights only (no model configuration)" in one_line(err)
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(RnnEdgeError) as err:
        export(empty, tmp_path / "e")
    assert "neither a model configuration nor weights" in one_line(err)
    broken = tmp_path / "broken.h5"
    with h5py.File(broken, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential"}).encode()
        f.attrs["keras_version"] = b"2.1.6"
    with pytest.raises(RnnEdgeError) as err:
        export(broken, tmp_path / "b")
    one_line(err)
