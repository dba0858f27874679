"""What a hostile or unlucky user of the command line meets: outputs that would destroy something,
usage mistakes, pipes closed early, a full standard output, absurd numbers. Each is one line and a
non-zero exit, and nothing is replaced that should not be."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rnnedge.cli import app

REPO = Path(__file__).resolve().parent.parent
AIRLINE = REPO / "exported" / "airline-gru"
CLI = [sys.executable, "-m", "rnnedge"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
runner = CliRunner()


def one_line(output: str, *phrases: str) -> str:
    lines = output.rstrip("\n").splitlines()  # a blank line before the error counts as a line
    assert "Traceback" not in output and len(lines) == 1 and lines[0].startswith("error: "), output
    for p in phrases:
        assert p in lines[0], lines[0]
    return lines[0]


def refused(*args, phrases=()):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 1, r.output
    return one_line(r.output, *phrases)


@pytest.fixture
def folder(tmp_path):
    dest = tmp_path / "m"
    shutil.copytree(AIRLINE, dest)
    return dest


@pytest.fixture
def x(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=(2, 6, 1)).astype(np.float32))
    return path


def test_outputs_never_replace_inputs_exports_or_special_files(folder, x, tmp_path):
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    refused("run", folder, "-i", x, "-o", x, phrases=["is the input file"])
    refused("run", folder, "-i", x, "-o", folder / "golden.npz", "--force", phrases=["is a file of the export"])
    refused("bench", folder, "--runs", "2", "--json", folder / "manifest.json", "--force",
            phrases=["a file of the export"])
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    refused("run", folder, "-i", x, "-o", fifo, phrases=["is not a regular file"])
    refused("run", folder, "-i", x, "-o", tmp_path, phrases=["is not a regular file"])
    assert fifo.is_fifo() and {p.name: p.read_bytes() for p in folder.iterdir()} == before
    y = tmp_path / "y.npz"
    y.write_bytes(b"keep")
    refused("run", folder, "-i", x, "-o", y, phrases=["already exists: pass --force"])
    refused("bench", folder, "--runs", "2", "--csv", y, phrases=["already exists: pass --force"])
    assert y.read_bytes() == b"keep"
    r = runner.invoke(app, ["run", str(folder), "-i", str(x), "-o", str(y), "--force"])
    assert r.exit_code == 0, r.output
    assert np.load(y)["next_month"].shape == (2, 1)
    refused("bench", folder, "--runs", "2", "--plot", tmp_path / "p.txt", phrases=["expected a .png, .svg or .pdf"])


def usage(*args, phrases=()):
    """A usage mistake: exit 2 and one line through the `rnnedge` command's own entry."""
    r = subprocess.run([sys.executable, "-m", "rnnedge", *map(str, args)], capture_output=True, text=True,
                       timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2, (r.stdout, r.stderr)
    return one_line(r.stderr, *phrases)


def test_absurd_numbers_are_refused_in_one_line(folder, x, tmp_path):
    usage("run", folder, "-i", x, "--threads", "99999999999", phrases=["--threads", "less than or equal to"])
    usage("run", folder, "-i", x, "--threads", "10000", phrases=["less than or equal to"])  # not 10,000 threads made
    usage("bench", folder, "--runs", "2", "--threads", "10000", phrases=["less than or equal to"])
    usage("bench", folder, "--runs", "2", "--batch", "1,,2", phrases=["expected whole numbers separated by commas"])
    usage("bench", folder, "--time", "abc", phrases=["'--time'", "expected whole numbers separated by commas"])
    usage("run", folder, "-i", x, "--chunk", "0", phrases=["'--chunk'", "greater than or equal to 1"])
    usage("serve", tmp_path, "--timeout", "0", phrases=["'--timeout'", "not above 0"])
    refused("check", folder, "--atol", "nan", phrases=["tolerances must be finite numbers >= 0"])
    repo = tmp_path / "repo"
    pytest.importorskip("tritonclient.grpc", reason="the serve extra is not installed")
    usage("triton", folder, "--out", repo, "--threads", "99999999999", phrases=["'--threads'"])
    for args, phrase in ((["--max-batch", "99999999999999"], "max batch must be a whole number from 0 to 65,536"),
                         (["--idle-seconds", "inf"], "idle timeout must be from 0.001"),
                         (["--idle-seconds", "1e-9"], "idle timeout must be from 0.001"),
                         (["--name", ""], "model name ''")):
        refused("triton", folder, "--out", repo, *args, phrases=[phrase])
    assert not repo.exists() or not any(repo.iterdir())


def test_force_replaces_only_what_rnnedge_wrote(folder, tmp_path):
    notes = tmp_path / "thesis"
    notes.mkdir()
    (notes / "thesis.txt").write_text("precious")
    refused("export", "zoo:airline-gru", "--out", notes, "--force",
            phrases=["is not an export folder (no manifest.json)"])
    assert (notes / "thesis.txt").read_text() == "precious"
    a_file = tmp_path / "x.npy"
    a_file.write_text("")
    refused("export", "zoo:airline-gru", "--out", a_file, phrases=["exists and is not a folder"])  # not "pass --force"
    pytest.importorskip("tritonclient.grpc", reason="the serve extra is not installed")
    model = tmp_path / "repo" / "m"
    model.mkdir(parents=True)
    (model / "notes.txt").write_text("mine")
    refused("triton", folder, "--out", tmp_path / "repo", "--force", phrases=["is not a model of a Triton repository"])
    assert (model / "notes.txt").read_text() == "mine"


def command(*args, **kwargs):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=ENV, **kwargs)


def test_usage_mistakes_are_one_line_and_exit_2():
    for args, phrase in ((["run", "--chunk", "abc"], "Invalid value for '--chunk'"),
                         (["run"], "Missing argument 'DIR' (see '"),
                         (["bogus"], "No such command 'bogus'")):
        r = command(*args)
        assert r.returncode == 2, r
        one_line(r.stderr, phrase)
    r = command("--version")
    assert r.returncode == 0 and r.stdout.startswith("rnnedge ")
    r = command()
    assert r.returncode == 2 and "Usage:" in r.stdout + r.stderr and "export" in r.stdout + r.stderr  # the help


def test_a_closed_pipe_and_a_full_standard_output(x):
    proc = subprocess.Popen([*CLI, "check", str(AIRLINE)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    proc.stdout.close()  # `| head -0`: nobody reads
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == "", err  # as a process ended by SIGPIPE; not "1", which means FAIL
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with open("/dev/full", "w") as full:
        r = subprocess.run([*CLI, "run", str(AIRLINE), "-i", str(x)], stdout=full, stderr=subprocess.PIPE, text=True,
                           env=ENV)
    assert r.returncode == 1
    one_line(r.stderr, "cannot write the standard output: the disk is full")


def test_quantize_data_is_read_as_carefully_as_run_inputs(folder, tmp_path):
    before = (folder / "manifest.json").read_text()
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK not a zip at all")
    refused("quantize", folder, "--variants", "fp16", "--data", junk, phrases=["neither a .npy array nor a zip"])
    lying = tmp_path / "lying.npy"
    with open(lying, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (1, 10**11, 1)})
        f.write(b"\0" * 64)
    archive = tmp_path / "lying.npz"
    import zipfile

    with zipfile.ZipFile(archive, "w") as z:
        z.write(lying, "window.npy")
    refused("quantize", folder, "--variants", "fp16", "--data", archive, phrases=["declares an array of shape"])
    assert (folder / "manifest.json").read_text() == before


@pytest.mark.parametrize("command", ["check", "bench", "quantize", "targets", "view"])
def test_a_missing_folder_is_one_line_and_nothing_before_it(command, tmp_path):
    refused(command, tmp_path / "missing", phrases=["does not exist"])
