"""Inputs a hostile or careless user gives: each is a one-line RnnEdgeError (or the right result),
never a traceback and never a silently wrong answer."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rnnedge.cli import app
from rnnedge.errors import RnnEdgeError
from rnnedge.runtime.files import read_inputs
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
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit), r.output
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
