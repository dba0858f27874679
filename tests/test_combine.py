"""Features that combine, and suggestions that lead somewhere (issue #28): each suggestion a
command prints is followed here and works, or the command no longer makes it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import Manifest
from tests.helpers import invoke

EXPORTED = Path(__file__).resolve().parent.parent / "exported"


@pytest.fixture
def airline(tmp_path) -> Path:
    folder = tmp_path / "airline-gru"
    shutil.copytree(EXPORTED / "airline-gru", folder)
    return folder


def _one_line_error(result) -> str:
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_bench_times_every_variant_present_by_default(airline):
    from rnnedge.bench import bench_dir

    rows = bench_dir(airline, runs=3, warmup=0)
    assert {r.candidate for r in rows} == {"fp32", "int8", "fp16"}, rows
    assert {r.candidate for r in bench_dir(airline, variants=["fp16"], runs=3, warmup=0)} == {"fp16"}


def test_bench_unknown_variant_suggests_nothing_that_refuses(airline):
    line = _one_line_error(invoke("bench", airline, "--variants", "int4", "--runs", "2"))
    assert "'int4'" in line and "fp32, int8" in line.replace("fp16, ", "") and "rnnedge quantize" not in line
    quantize = invoke("quantize", airline, "--variants", "int4")  # what it used to suggest: refused
    assert quantize.exit_code == 1


def test_bench_missing_variant_suggestion_works(airline):
    """A known variant the folder lacks: bench suggests `rnnedge quantize DIR --variants fp16`, which
    makes it, and bench then times it."""
    m = Manifest.load(airline)
    m.variants.pop("fp16")
    m.source = {"name": "copy"}  # judged on the golden outputs (no TensorFlow)
    m.save(airline)
    (airline / "model.fp16.onnx").unlink()
    line = _one_line_error(invoke("bench", airline, "--variants", "fp16", "--runs", "2"))
    suggested = line.split("`")[1].split()
    assert suggested[:2] == ["rnnedge", "quantize"], line
    assert invoke(*suggested[1:]).exit_code == 0
    assert invoke("bench", airline, "--variants", "fp16", "--runs", "2", "--warmup", "0").exit_code == 0


def test_run_takes_a_variant_and_summarises_what_it_writes(airline, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).normal(size=(40, 12, 1)).astype(np.float32))
    out = tmp_path / "y.npz"
    result = invoke("run", airline, "-i", x, "-o", out, "--variant", "int8")
    assert result.exit_code == 0, result.output
    y = np.load(out)["next_month"]
    assert y.shape == (40, 1)
    assert f"min {y.min():.5g}, max {y.max():.5g}" in result.output and "[" not in result.output  # no values
    import rnnedge

    int8 = rnnedge.load(airline, "cpu", variant="int8").run(np.load(x))["next_month"]
    fp32 = rnnedge.load(airline, "cpu").run(np.load(x))["next_month"]
    np.testing.assert_allclose(y, int8, atol=1e-6)
    assert np.abs(int8 - fp32).max() > 0  # the int8 file ran, not model.onnx
    shown = invoke("run", airline, "-i", x)  # no file: the values are the result
    assert shown.exit_code == 0 and "[" in shown.output


def test_run_threads_go_up_to_what_the_runtime_accepts(airline, tmp_path):
    import os

    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 12, 1), np.float32))
    most = 4 * (os.cpu_count() or 1)
    assert invoke("run", airline, "-i", x, "--threads", most).exit_code == 0
    assert invoke("run", airline, "-i", x, "--threads", most + 1).exit_code == 2  # typer's range, one line


def test_triton_onnxruntime_repository_does_not_suggest_rnnedge_serve(airline, tmp_path):
    result = invoke("triton", airline, "--out", tmp_path / "repo")
    if result.exit_code == 1 and "pip install" in result.output:
        pytest.skip("the serve extra is not installed")
    assert result.exit_code == 0, result.output
    assert "rnnedge serve" not in result.output.replace("for `rnnedge serve`, write it with --backend python", "")
    python = invoke("triton", airline, "--out", tmp_path / "repo2", "--backend", "python")
    assert python.exit_code == 0 and f"`rnnedge serve {tmp_path / 'repo2'}`" in python.output


def test_bidirectional_streaming_suggests_what_works(tmp_path):
    """Bidirectional + --streaming is refused without suggesting --allow-loop (which refuses too);
    its suggestion, exporting without --streaming, works."""
    import keras
    from keras import layers as L

    from rnnedge.pipeline import export
    from tests.kmodels import functional, seq_input

    keras.utils.set_random_seed(0)
    x = seq_input(3)
    model = functional(x, L.Dense(2)(L.Bidirectional(L.GRU(4), name="bi")(x)), "m")
    with pytest.raises(RnnEdgeError) as err:
        export(model, tmp_path / "s", streaming=True)
    message = str(err.value)
    assert "--allow-loop" not in message and "export without --streaming" in message, message
    with pytest.raises(RnnEdgeError):
        export(model, tmp_path / "s", streaming=True, allow_loop=True)
    assert export(model, tmp_path / "o").passed


def test_bench_finds_the_source_model_from_the_manifests_path(tmp_path, monkeypatch):
    """An export from a relative path records where the file was; bench's baselines find it from
    another folder."""
    import keras
    from keras import layers as L

    from rnnedge.bench.candidates import keras_source
    from rnnedge.pipeline import export
    from tests.kmodels import functional, seq_input

    keras.utils.set_random_seed(0)
    x = seq_input(3)
    functional(x, L.Dense(2)(L.GRU(4)(x)), "m").save(tmp_path / "m.keras")
    monkeypatch.chdir(tmp_path)
    export("m.keras", tmp_path / "o")
    source = json.loads((tmp_path / "o" / "manifest.json").read_text())["source"]
    assert source["name"] == "m.keras" and source["path"] == str(tmp_path / "m.keras")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = keras_source(None, Manifest.load(tmp_path / "o"), ["keras"], 1)
    assert model.count_params() == keras.models.load_model(tmp_path / "m.keras").count_params()


def test_integer_files_feeding_float_inputs_are_said_or_refused(airline, tmp_path):
    """An int64 .npy is cast to float32 with a warning line; values float32 cannot hold exactly are
    refused in one line."""
    import os
    import subprocess
    import sys

    x = tmp_path / "x.npy"
    np.save(x, np.arange(24, dtype=np.int64).reshape(2, 12, 1))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-m", "rnnedge", "run", str(airline), "-i", str(x)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == f"warning: {x}: input 'window' holds int64 values; cast to float32", done.stderr
    np.save(x, np.full((1, 12, 1), 2**24 + 1, np.int64))
    with pytest.warns(UserWarning, match="holds int64 values; cast to float32"):
        line = _one_line_error(invoke("run", airline, "-i", x))
    assert "int64 value 16777217" in line and "changes when cast to float32" in line, line


def test_export_quantize_names_are_refused_before_tensorflow_loads(tmp_path, monkeypatch):
    import rnnedge.pipeline

    def no_work(*args, **kwargs):
        raise AssertionError("export started")

    monkeypatch.setattr(rnnedge.pipeline, "export", no_work)
    line = _one_line_error(invoke("export", "zoo:airline-gru", "--out", tmp_path / "o", "--quantize", "int4"))
    assert "int4" in line and "fp32, int8, fp16" in line and not (tmp_path / "o").exists()


def test_demo_progress_never_counts_past_its_total(tmp_path, monkeypatch):
    """The benchmark step's counter includes the sweep over lengths: [n/N] with n <= N throughout."""
    import io
    import re
    import types

    from rich.console import Console

    from rnnedge import bench, demo, zoo

    fake = types.SimpleNamespace(model=types.SimpleNamespace(inputs=[types.SimpleNamespace(shape=(None, None, 1))]))
    monkeypatch.setattr(zoo, "load", lambda name: fake)
    monkeypatch.setattr(bench, "bench_dir", lambda *a, **k: [])
    monkeypatch.setattr(bench, "plot", lambda *a, **k: None)
    monkeypatch.setattr(demo, "_kept", lambda folder: ["fp32"])
    text = io.StringIO()
    progress = demo.LineProgress(Console(file=text, width=200))
    demo.benchmark_zoo(tmp_path, ["airline-gru", demo.PLOT_MODEL], progress)
    counts = [tuple(map(int, m)) for m in re.findall(r"\[(\d+)/(\d+)\]", text.getvalue())]
    assert counts == [(1, 3), (2, 3), (3, 3)], text.getvalue()


@pytest.mark.parametrize("static", [{"batch": 1}, {"batch": 1, "time": 50}], ids=["batch", "batch-time"])
def test_zoo_export_with_static_axes_scores_its_test_split(tmp_path, static):
    """`export zoo:events-lstm --static batch=1[,time=50]`: a fixed batch is scored in slices of it
    (the metric from onnxruntime equals Keras' own); a fixed time the test split does not have
    leaves the onnxruntime metric out, saying why, instead of failing on the split's shape."""
    from rnnedge.pipeline import export

    result = export("zoo:events-lstm", tmp_path / "o", static=static, quantize=["fp16"])
    task = result.manifest.task
    assert result.passed and "fp16" in result.manifest.variants
    if "time" in static:
        assert task["onnx"] is None and "--static fixed time=50" in task["note"], task
    else:
        assert task["onnx"] == pytest.approx(task["keras"], abs=1e-3), task


def test_bench_ratios_far_below_one_keep_their_digits():
    from rnnedge.bench.report import ratio

    assert [ratio(v) for v in (2.0, 0.5, 0.0031, 0.000456)] == ["2.00x", "0.50x", "0.0031x", "0.00046x"]
