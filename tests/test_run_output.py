"""`rnnedge run` shows the values (numpy's preview, whole when small) and writes JSON to standard
output with `--output -`."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from keras import layers as L

from rnnedge.runtime.datafiles import outputs_json, preview
from tests.kmodels import seq_input, sequential
from tests.test_cli import assert_user_error, invoke


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    layers = [seq_input(3), L.GRU(4, return_sequences=True), L.TimeDistributed(L.Dense(2), name="time_distributed")]
    sequential(layers, "g").save(root / "g.keras")
    assert invoke("export", root / "g.keras", "--out", root / "exp").exit_code == 0
    return root


def test_run_prints_small_outputs_whole(exported, tmp_path):
    x = np.random.default_rng(0).normal(size=(1, 2, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = invoke("run", exported / "exp", "--input", tmp_path / "x.npy")
    assert result.exit_code == 0, result.output
    y = np.asarray(keras.models.load_model(exported / "g.keras")(x))
    printed = result.output.split("\n", 1)[1].rsplit("provider:", 1)[0]
    np.testing.assert_allclose(np.array(eval(printed)), y, atol=1e-4)  # noqa: S307 - numpy's own rendering
    assert "..." not in printed


def test_run_summarises_large_outputs(exported, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((4, 100, 3), np.float32))
    result = invoke("run", exported / "exp", "--input", tmp_path / "x.npy")
    assert result.exit_code == 0 and "...," in result.output and len(result.output.splitlines()) < 40


def test_output_dash_writes_json_to_stdout(exported, tmp_path):
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = invoke("run", exported / "exp", "--input", tmp_path / "x.npy", "--output", "-")
    assert result.exit_code == 0, result.output
    values = json.loads(result.stdout)  # nothing else on standard output
    y = np.asarray(keras.models.load_model(exported / "g.keras")(x))
    np.testing.assert_allclose(np.array(values["time_distributed"]), y, atol=1e-5)
    assert not (tmp_path / "-").exists()


def test_json_and_preview_of_odd_values():
    assert json.loads(outputs_json({"y": np.array([1.0, np.nan, np.inf])})) == {"y": [1.0, None, None]}
    assert json.loads(outputs_json({"ids": np.array([[1, 2]], np.int64)})) == {"ids": [[1, 2]]}
    assert preview(np.arange(6.0)) == "[0., 1., 2., 3., 4., 5.]"
    assert "..." in preview(np.zeros((50, 50)))


def test_run_output_of_another_kind_is_one_line(exported, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((1, 2, 3), np.float32))
    assert_user_error(invoke("run", exported / "exp", "--input", tmp_path / "x.npy", "--output", tmp_path / "y.txt"),
                      ".npz, .npy or .csv file name, or - for JSON")
