"""Inputs a hostile or careless user gives: each is a one-line RnnEdgeError (or the right result),
never a traceback and never a silently wrong answer."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rnnedge import metrics
from rnnedge.cli import app
from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import Manifest
from rnnedge.quantize.folder import quantize_dir, read_data
from rnnedge.runtime.datafiles import read_inputs
from rnnedge.runtime.model import load

REPO = Path(__file__).resolve().parent.parent
AIRLINE = REPO / "exported" / "airline-gru"


def copy_export(dest: Path, name: str = "airline-gru") -> Path:
    shutil.copytree(REPO / "exported" / name, dest)
    return dest


def one_line(call, *args, **kwargs) -> str:
    with pytest.raises(RnnEdgeError) as e:
        call(*args, **kwargs)
    message = str(e.value)
    assert "\n" not in message, message
    return message


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def cli_error(*args) -> str:
    r = cli(*args)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), r.output
    return lines[-1]


# 1. CSV: a first row that does not parse is data (an error), not a header to drop

@pytest.fixture(scope="module")
def airline():
    return load(AIRLINE, "cpu")


def run_csv(model, path: Path) -> np.ndarray:
    return model.run(**read_inputs(path, model))["next_month"]


def test_csv_with_bom_keeps_its_first_row(tmp_path, airline):
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf0.1\n0.2\n")
    (tmp_path / "plain.csv").write_text("0.1\n0.2\n")
    (tmp_path / "alone.csv").write_text("0.2\n")
    inputs = read_inputs(tmp_path / "bom.csv", airline)
    np.testing.assert_array_equal(inputs["window"], np.array([[[0.1], [0.2]]]))
    with_bom = run_csv(airline, tmp_path / "bom.csv")
    np.testing.assert_array_equal(with_bom, run_csv(airline, tmp_path / "plain.csv"))
    assert not np.allclose(with_bom, run_csv(airline, tmp_path / "alone.csv"))  # the probe's wrong answer


def test_csv_header_with_bom_is_still_a_header(tmp_path, airline):
    (tmp_path / "h.csv").write_bytes(b"\xef\xbb\xbfpassengers\n0.1\n0.2\n")
    np.testing.assert_array_equal(read_inputs(tmp_path / "h.csv", airline)["window"],
                                  np.array([[[0.1], [0.2]]]))


@pytest.mark.parametrize("first, cell", [("0.1.5", "'0.1.5'"), ("1e", "'1e'"), ("0,1", None), ("-", "'-'")])
def test_csv_bad_first_row_is_an_error_naming_row_and_column(tmp_path, airline, first, cell):
    (tmp_path / "x.csv").write_text(f"{first}\n0.2\n")
    message = one_line(read_inputs, tmp_path / "x.csv", airline)
    if cell is None:  # two numbers in a one-feature table: the shape is wrong, not a header
        assert "columns" in message
    else:
        assert f"row 1 column 1 holds {cell}, not a number" in message


def test_csv_bad_cell_later_names_its_column(tmp_path, airline):
    (tmp_path / "x.csv").write_text("window\n0.1\n0.2x\n")
    assert "row 3 column 1 holds '0.2x'" in one_line(read_inputs, tmp_path / "x.csv", airline)


@pytest.mark.parametrize("header", ["window", "x0", "passengers", "_t", "Month (1-12)"])
def test_csv_name_headers_are_skipped(tmp_path, airline, header):
    (tmp_path / "x.csv").write_text(f"{header}\n0.1\n0.2\n")
    assert read_inputs(tmp_path / "x.csv", airline)["window"].shape == (1, 2, 1)


def test_csv_nan_first_row_is_data_not_a_header(tmp_path, airline):
    (tmp_path / "x.csv").write_text("nan\n0.2\n")
    assert read_inputs(tmp_path / "x.csv", airline)["window"].shape == (1, 2, 1)


def test_cli_bom_csv_matches_plain_csv(tmp_path):
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf0.1\n0.2\n")
    (tmp_path / "plain.csv").write_text("0.1\n0.2\n")
    for name in ("bom", "plain"):
        r = cli("run", AIRLINE, "--input", tmp_path / f"{name}.csv", "--output", tmp_path / f"{name}.out.csv")
        assert r.exit_code == 0, r.output
    assert (tmp_path / "bom.out.csv").read_text() == (tmp_path / "plain.out.csv").read_text()
    (tmp_path / "typo.csv").write_text("0.1.5\n0.2\n")
    assert "row 1 column 1" in cli_error("run", AIRLINE, "--input", tmp_path / "typo.csv",
                                         "--output", tmp_path / "typo.out.csv")
    assert not (tmp_path / "typo.out.csv").exists()


# 2. quantize --data/--metric: targets that cannot be scored are refused before any work



def data_file(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "d.npz"
    np.savez(path, window=np.zeros((8, 5, 1), np.float32), **arrays)
    return path


@pytest.mark.parametrize("y, phrase", [
    (np.array([0.1, np.nan, 0.3, 0, 0, 0, 0, 0]), "1 NaN or infinite value(s)"),
    (np.full(8, np.inf), "8 NaN or infinite value(s)"),
    (np.zeros((3,)), "targets 'y' have 3 rows but the inputs have 'window' 8"),
    (np.array(["a"] * 8), "targets 'y' are <U1, expected real numbers"),
    (np.array(1.0), "shape []"),
    (np.zeros(8, complex), "expected real numbers"),
])
def test_read_data_refuses_targets_that_cannot_be_scored(tmp_path, y, phrase):
    manifest = Manifest.load(AIRLINE)
    assert phrase in one_line(read_data, data_file(tmp_path, y=y), manifest)


def test_read_data_keeps_good_targets(tmp_path):
    y = np.arange(8, dtype=np.float32)[:, None]
    inputs, targets = read_data(data_file(tmp_path, y=y), Manifest.load(AIRLINE))
    np.testing.assert_array_equal(targets, y)
    assert inputs["window"].shape == (8, 5, 1)
    assert read_data(data_file(tmp_path), Manifest.load(AIRLINE))[1] is None


def test_metric_without_targets_is_refused(tmp_path):
    folder = copy_export(tmp_path / "m")
    before = (folder / "manifest.json").read_text()
    message = one_line(quantize_dir, folder, "int8", data=data_file(tmp_path), metric="rmse")
    assert "--metric rmse needs targets" in message and "has none" in message
    assert "--metric rmse needs targets" in one_line(quantize_dir, folder, "int8", metric="rmse")
    assert (folder / "manifest.json").read_text() == before


@pytest.mark.parametrize("y, metric, phrase", [
    (None, "rmse", "needs targets"),
    (np.full(8, np.nan), "rmse", "NaN"),
    (np.zeros(3), "rmse", "3 rows"),
    (np.array(["cat"] * 8), "accuracy", "real numbers"),
])
def test_cli_quantize_bad_targets_is_one_line(tmp_path, y, metric, phrase):
    folder = copy_export(tmp_path / "m")
    data = data_file(tmp_path) if y is None else data_file(tmp_path, y=y)
    assert phrase in cli_error("quantize", folder, "--variants", "int8", "--data", data, "--metric", metric)


@pytest.mark.parametrize("metric", ["accuracy", "f1", "rmse"])
def test_metrics_refuse_mismatched_shapes(metric):
    assert "the output is [8, 1], the targets 'y' are [3]" in one_line(metrics.score, metric, np.zeros((8, 1)),
                                                                        np.zeros(3))
    assert "needs numbers" in one_line(metrics.score, metric, np.zeros((2, 1)), np.array(["a", "b"]))


def test_metrics_still_score_real_outputs():
    assert metrics.rmse(np.array([[1.0], [3.0]]), np.array([1.0, 1.0])) == pytest.approx(np.sqrt(2.0))
    assert metrics.accuracy(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.array([0, 1, 1])) == pytest.approx(2 / 3)
    assert metrics.accuracy(np.array([[0.7], [0.2]]), np.array([1, 1])) == 0.5
    assert metrics.f1(np.array([0.9, 0.1]), np.array([1, 1])) == pytest.approx(2 / 3)
    assert "the output is [3, 2], the targets 'y' are [2]" in one_line(
        metrics.accuracy, np.zeros((3, 2)), np.zeros(2))


# 3. .npy headers that claim more than the file holds

def lying_npy(path: Path, shape=(1, 10**11, 1), version=(1, 0)) -> Path:
    with open(path, "wb") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": shape}
        if version == (1, 0):
            np.lib.format.write_array_header_1_0(f, header)
        else:
            np.lib.format.write_array_header_2_0(f, header)
        f.write(b"\0" * 64)
    return path


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_npy_with_a_lying_header_is_one_line(tmp_path, airline, version):
    path = lying_npy(tmp_path / "huge.npy", version=version)
    message = one_line(read_inputs, path, airline)
    assert "huge.npy declares an array of shape [1, 100000000000, 1] float32" in message
    assert "holds 64 bytes of data" in message and "truncated" in message


def test_truncated_npy_is_one_line(tmp_path, airline):
    path = tmp_path / "cut.npy"
    np.save(path, np.ones((1, 50, 1), np.float32))
    path.write_bytes(path.read_bytes()[:-8])
    assert "holds 192 bytes of data" in one_line(read_inputs, path, airline)


def test_npz_member_with_a_lying_header_is_one_line(tmp_path, airline):
    member = lying_npy(tmp_path / "window.npy")
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        z.write(member, "window.npy")
    message = one_line(read_inputs, tmp_path / "huge.npz", airline)
    assert "member 'window' declares an array of shape [1, 100000000000, 1]" in message


def test_cli_lying_npy_is_one_line(tmp_path):
    path = lying_npy(tmp_path / "huge.npy")
    assert "declares an array of shape [1, 100000000000, 1]" in cli_error("run", AIRLINE, "--input", path)


def test_memory_error_names_the_file_and_shape(tmp_path, airline, monkeypatch):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((1, 7, 1), np.float32))

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(np, "load", no_memory)
    message = one_line(read_inputs, path, airline)
    assert "x.npy declares an array of shape [1, 7, 1], too large for this machine's memory" in message


def test_honest_npy_and_npz_still_load(tmp_path, airline):
    x = np.random.default_rng(0).random((2, 6, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez_compressed(tmp_path / "x.npz", window=x)
    np.testing.assert_array_equal(read_inputs(tmp_path / "x.npy", airline)["window"], x)
    np.testing.assert_array_equal(read_inputs(tmp_path / "x.npz", airline)["window"], x)
    np.save(tmp_path / "empty.npy", np.zeros((0, 6, 1), np.float32))
    assert read_inputs(tmp_path / "empty.npy", airline)["window"].shape == (0, 6, 1)


# 4. Hand-edited manifests: wrong JSON types, and a manifest that disagrees with the model file



def edit_manifest(folder: Path, change) -> Path:
    path = folder / "manifest.json"
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))
    return folder


@pytest.mark.parametrize("change, phrase", [
    (lambda d: d.update(format="2"), "'format' must be a positive integer, got '2'"),
    (lambda d: d.update(format=True), "'format' must be a positive integer"),
    (lambda d: d.update(format=2.0), "'format' must be a positive integer"),
    (lambda d: d.update(streaming="yes"), "'streaming' must be true or false, got 'yes'"),
    (lambda d: d["inputs"][0].update(dtype="float99"), "dtype 'float99' is not one of float32"),
    (lambda d: d["outputs"][0].update(dtype=None), "dtype None"),
    (lambda d: d["inputs"][0]["shape"].__setitem__(2, 1.0), "got 1.0"),
    (lambda d: d["inputs"][0]["shape"].__setitem__(2, True), "got True"),
    (lambda d: d["inputs"][0]["shape"].__setitem__(2, -1), "got -1"),
    (lambda d: d["inputs"][0].update(pad_value="zero"), "pad_value must be a number or null, got 'zero'"),
    (lambda d: d["inputs"][0].update(pad_value=False), "pad_value must be a number or null"),
    (lambda d: d["inputs"].append(3), "each of 'inputs' must be an object"),
])
def test_manifest_json_types_are_checked(tmp_path, change, phrase):
    folder = edit_manifest(copy_export(tmp_path / "m"), change)
    message = one_line(load, folder, "cpu")
    assert phrase in message and "manifest" in message and "re-export the model" in message
    assert phrase in cli_error("check", folder)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 1), np.float32))
    assert phrase in cli_error("run", folder, "--input", tmp_path / "x.npy")


@pytest.mark.parametrize("change, phrase", [
    (lambda d: d["inputs"][0]["shape"].__setitem__(2, 2),
     "manifest.json says input 'window' is [batch, time, 2] float32, model.onnx takes [batch, time, 1] float32: "
     "the manifest was edited; re-export the model"),
    (lambda d: d["inputs"][0].update(dtype="int32"), "input 'window' is [batch, time, 1] int32, model.onnx takes"),
    (lambda d: d["inputs"][0].update(shape=["batch", "time"]), "input 'window' is [batch, time] float32"),
    (lambda d: d["outputs"][0]["shape"].__setitem__(1, 3),
     "output 'next_month' is [batch, 3] float32, model.onnx gives [batch, 1] float32"),
    (lambda d: d["outputs"][0].update(dtype="bool"), "output 'next_month' is [batch, 1] bool"),
])
def test_manifest_that_disagrees_with_the_model_is_one_line(tmp_path, change, phrase):
    folder = edit_manifest(copy_export(tmp_path / "m"), change)
    assert phrase in one_line(load, folder, "cpu")
    assert phrase in cli_error("check", folder)


def test_named_axes_and_variants_still_load(tmp_path):
    """Axis names are the manifest's own (not compared); fp16/int8 variants take float32 too."""
    folder = edit_manifest(copy_export(tmp_path / "m"), lambda d: d["inputs"][0]["shape"].__setitem__(1, "steps"))
    x = np.linspace(0, 1, 6, dtype=np.float32).reshape(1, 6, 1)
    expected = load(AIRLINE, "cpu").run(window=x)["next_month"]
    np.testing.assert_array_equal(load(folder, "cpu").run(window=x)["next_month"], expected)
    for variant in ("fp16", "int8"):
        out = load(AIRLINE, "cpu", variant=variant).run(window=x)["next_month"]
        np.testing.assert_allclose(out, expected, atol=0.05)


def test_every_committed_export_agrees_with_its_model():
    for manifest in sorted((REPO / "exported").glob("*/manifest.json")):
        model = load(manifest.parent, "cpu", verify=False)
        assert model.session.get_inputs()[0].name == model.manifest.data_inputs[0].name
