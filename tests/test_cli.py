"""The CLI through Typer's runner: the happy path, and one clear line with exit 1 for every bad input,
leaving no partial output behind."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import typer
from keras import layers as L
from typer.testing import CliRunner

from tests.helpers import invoke, run_without_tensorflow
from tests.kmodels import functional, seq_input, sequential

runner = CliRunner()


def assert_user_error(result, *phrases):
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for p in phrases:
        assert p in lines[-1], lines[-1]


def no_leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


@pytest.fixture(scope="module")
def gru_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "gru.keras"
    sequential([seq_input(4), L.GRU(5, return_sequences=True), L.TimeDistributed(L.Dense(2))], "gru_model").save(path)
    return path


def test_export_check_run_roundtrip(gru_file, tmp_path):
    out = tmp_path / "exp"
    result = invoke("export", gru_file, "--out", out)
    assert result.exit_code == 0, result.output
    assert "1 fused recurrent node" in result.output and "PASS" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parity"]["passed"] and manifest["inputs"][0]["shape"] == ["batch", "time", 4]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # a folder's usual mode, not mkdtemp's private 0700
    assert manifest["source"]["sha256"] and manifest["versions"]["keras"]
    check = invoke("check", out)
    assert check.exit_code == 0 and "PASS" in check.output
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(2, 9, 4)).astype("float32"))
    run = invoke("run", out, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npz")
    assert run.exit_code == 0, run.output
    y = np.load(tmp_path / "y.npz")
    keras_y = keras.models.load_model(gru_file)(np.load(tmp_path / "x.npy"))
    np.testing.assert_allclose(y[y.files[0]], keras_y, atol=1e-5)
    chunked = invoke("run", out, "--input", tmp_path / "x.npy", "--chunk", 4)
    assert chunked.exit_code == 1 and "--streaming" in chunked.output  # not a streaming export


def test_existing_out_needs_force(gru_file, tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_user_error(invoke("export", gru_file, "--out", out), "already exists", "--force")
    assert_user_error(invoke("export", gru_file, "--out", out, "--force"), "is not an export folder")  # not ours
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    assert invoke("export", gru_file, "--out", out, "--force").exit_code == 0  # an empty folder is taken
    (out / "note.txt").write_text("added to an export")
    assert invoke("export", gru_file, "--out", out, "--force").exit_code == 0  # an export is replaced whole
    assert not (out / "note.txt").exists() and (out / "model.onnx").exists()
    assert no_leftovers(tmp_path)


def test_missing_file(tmp_path):
    assert_user_error(invoke("export", tmp_path / "nope.keras", "--out", tmp_path / "o"), "no such file")
    assert not (tmp_path / "o").exists()


def test_not_a_keras_model(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_text("this is not a zip archive")
    assert_user_error(invoke("export", bad, "--out", tmp_path / "o"), "not a Keras model file", "zip archive")
    empty = tmp_path / "empty.keras"
    empty.write_bytes(b"")
    assert_user_error(invoke("export", empty, "--out", tmp_path / "o"), "is empty")
    import zipfile

    with zipfile.ZipFile(tmp_path / "zip.keras", "w") as z:  # a zip, but not Keras' layout
        z.writestr("notes.txt", "hello")
    assert_user_error(invoke("export", tmp_path / "zip.keras", "--out", tmp_path / "o"), "not a loadable Keras model")
    other = tmp_path / "model.txt"
    other.write_text("x")
    assert_user_error(invoke("export", other, "--out", tmp_path / "o"), "not a Keras model file")
    assert not (tmp_path / "o").exists() and no_leftovers(tmp_path)


def test_model_without_recurrent_layer(tmp_path):
    path = tmp_path / "dense.keras"
    sequential([keras.Input((4,)), L.Dense(2)], "dense_only").save(path)
    assert_user_error(invoke("export", path, "--out", tmp_path / "o"), "no recurrent layer")
    assert not (tmp_path / "o").exists() and no_leftovers(tmp_path)


def test_unsupported_layer_names_it(tmp_path):
    path = tmp_path / "conv_lstm.keras"
    x = keras.Input((None, 2, 6))
    functional(x, L.ConvLSTM1D(2, 2, data_format="channels_first", name="odd_conv")(x), "m").save(path)
    assert_user_error(invoke("export", path, "--out", tmp_path / "o"), "odd_conv", "not supported", "--allow-loop")
    assert not (tmp_path / "o").exists() and no_leftovers(tmp_path)


def test_export_line_says_which_layers_went_through_a_scan_and_why(tmp_path):
    path = tmp_path / "gelu.keras"
    x = seq_input()
    functional(x, L.GRU(3, return_sequences=True)(
        L.LSTM(3, activation="gelu", return_sequences=True, name="odd_lstm")(x)), "m").save(path)
    result = invoke("export", path, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "1 fused recurrent node(s), 1 layer(s) as an exact Scan (odd_lstm: no fused " \
        "form for gelu)" in result.output
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["layers"]["odd_lstm"] == "scan" and "'gelu'" in manifest["notes"]["odd_lstm"]


def test_lambda_layer_needs_unsafe(tmp_path):
    path = tmp_path / "lambda.keras"
    x = seq_input()
    functional(x, L.Lambda(lambda t: t * 2.0, name="double")(L.GRU(3)(x)), "m").save(path)
    assert_user_error(invoke("export", path, "--out", tmp_path / "o"), "Lambda", "--unsafe")
    assert not (tmp_path / "o").exists() and no_leftovers(tmp_path)
    # With --unsafe the file loads, and tf2onnx converts the Lambda inside the fused graph.
    result = invoke("export", path, "--out", tmp_path / "o", "--unsafe")
    assert result.exit_code == 0, result.output
    assert "1 fused recurrent node(s), 1 layer(s) through tf2onnx (double)" in result.output and "PASS" in result.output


def test_check_on_a_folder_that_is_not_an_export(tmp_path):
    assert_user_error(invoke("check", tmp_path), "manifest.json")
    assert_user_error(invoke("check", tmp_path / "missing"), "missing does not exist")
    (tmp_path / "file").write_text("not a folder")
    assert_user_error(invoke("check", tmp_path / "file"), "not an export folder")


def test_a_keras_file_given_to_run_or_check_is_a_model_to_export_first(gru_file, tmp_path):
    for command in (["check", gru_file], ["run", gru_file, "--input", tmp_path / "x.npy"], ["bench", gru_file]):
        assert_user_error(invoke(*command), "is a Keras model, not an export folder", "rnnedge export")


def test_run_with_a_wrong_input_shape(gru_file, tmp_path):
    out = tmp_path / "exp"
    assert invoke("export", gru_file, "--out", out).exit_code == 0
    np.save(tmp_path / "x.npy", np.zeros((2, 9, 7), "float32"))
    assert_user_error(invoke("run", out, "--input", tmp_path / "x.npy"), "x")


def test_bad_tolerance_option(gru_file, tmp_path):
    assert_user_error(invoke("export", gru_file, "--out", tmp_path / "o", "--tolerance", "oops"), "OUTPUT=ATOL")


def test_help_lists_commands_and_loads_no_heavy_library():
    """What makes `--help` fast, checked without timing it: it lists the commands and imports none of
    TensorFlow, Keras, tf2onnx, onnxruntime, onnx or matplotlib (measured: 0.4 s against 6 s with them)."""
    import subprocess
    import sys

    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("export", "check", "run", "demo"):
        assert command in result.output
    heavy = ("tensorflow", "keras", "tf2onnx", "onnxruntime", "onnx", "matplotlib")
    code = ("import sys, rnnedge.cli\n"
            "try:\n    rnnedge.cli.app(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "[]", (done.stdout, done.stderr)


def test_check_and_run_work_where_tensorflow_cannot_be_imported(gru_file, tmp_path):
    """`rnnedge check` and `rnnedge run` replay an export with numpy + onnxruntime alone."""
    out = tmp_path / "exp"
    assert invoke("export", gru_file, "--out", out).exit_code == 0
    np.save(tmp_path / "x.npy", np.ones((1, 5, 4), "float32"))
    done = run_without_tensorflow(
        "from typer.testing import CliRunner\n"
        "from rnnedge.cli import app\n"
        f"r = CliRunner().invoke(app, ['check', r'{out}'])\n"
        "assert r.exit_code == 0 and 'PASS' in r.output, r.output\n"
        f"r = CliRunner().invoke(app, ['run', r'{out}', '--input', r'{tmp_path / 'x.npy'}'])\n"
        "assert r.exit_code == 0, r.output\n"
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-800:]


def test_commands_that_need_an_extra_refuse_in_one_line_where_it_is_missing(tmp_path):
    """A runtime-only install: every command that needs TensorFlow (or matplotlib) says which extra
    to install, in one line, before any work; `rnnedge zoo` lists the names without TensorFlow."""
    folder = Path(__file__).parent.parent / "exported" / "events-gru"
    done = run_without_tensorflow(
        "from typer.testing import CliRunner\n"
        "from rnnedge.cli import app\n"
        "r = CliRunner().invoke(app, ['zoo'])\n"
        "assert r.exit_code == 0 and 'events-gru' in r.output, r.output\n"
        f"for args, extra in ((['export', 'zoo:events-gru', '--out', r'{tmp_path / 'o'}'], 'export'),\n"
        "                    (['demo', '--model', 'events-gru'], 'export'),\n"
        f"                    (['bench', r'{folder}', '--baseline', 'keras'], 'export'),\n"
        f"                    (['bench', r'{folder}', '--plot', r'{tmp_path / 'p.png'}'], 'plot')):\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    lines = r.output.strip().splitlines()\n"
        "    assert r.exit_code == 1 and len(lines) == 1, r.output\n"
        "    assert f\"pip install 'rnnedge[{extra}]'\" in lines[0], lines\n"
        "import rnnedge\n"
        "try:\n"
        f"    rnnedge.export('zoo:events-gru', r'{tmp_path / 'o'}')\n"
        "except rnnedge.RnnEdgeError as e:\n"
        "    assert \"pip install 'rnnedge[export]'\" in str(e), e\n"
        "else:\n"
        "    raise AssertionError('rnnedge.export ran without TensorFlow')\n",
        also=("matplotlib",),
    )
    assert done.returncode == 0 and "ok" in done.stdout, (done.stdout + done.stderr)[-1500:]
    assert not (tmp_path / "o").exists() and not (tmp_path / "p.png").exists()


def test_quantize_judges_on_golden_outputs_where_tensorflow_cannot_be_imported(tmp_path):
    """A runtime-only install quantizes a zoo export: its test split needs TensorFlow, so the
    variants are judged on the golden outputs (one note, once), never marked FAIL for lack of it."""
    import shutil

    folder = tmp_path / "events-gru"
    shutil.copytree(Path(__file__).parent.parent / "exported" / "events-gru", folder)
    done = run_without_tensorflow(
        "import json\n"
        "from typer.testing import CliRunner\n"
        "from rnnedge.cli import app\n"
        f"r = CliRunner().invoke(app, ['quantize', r'{folder}', '--variants', 'int8'])\n"
        "print(r.output)\n"
        "assert r.exit_code == 0, r.output\n"
        f"m = json.load(open(r'{folder / 'manifest.json'}'))\n"
        "g = m['variants']['int8']['gate']\n"
        "assert g['by'] == 'golden outputs' and g['passed'], g\n"
    )
    assert done.returncode == 0 and "ok" in done.stdout, (done.stdout + done.stderr)[-1500:]
    assert done.stdout.count("TensorFlow is not installed") == 1, done.stdout


@pytest.fixture(scope="module")
def fixed_export(tmp_path_factory):
    """An export with fixed time (6 steps) and batch (2, stateful) axes."""
    folder = tmp_path_factory.mktemp("fixed") / "exp"
    x = seq_input(3, time=6, batch=2)
    model = functional(x, L.GRU(4, stateful=True)(x), "fixed")
    from rnnedge.pipeline import export

    export(model, folder)
    return folder


def test_quantize_refuses_unknown_variants(fixed_export):
    assert_user_error(invoke("quantize", fixed_export, "--variants", "int8,int4"), "int4", "fp32, int8, fp16")


def test_quantize_refuses_data_that_does_not_fit(fixed_export, tmp_path):
    np.savez(tmp_path / "wrong.npz", other=np.zeros((2, 6, 3), "float32"))
    assert_user_error(invoke("quantize", fixed_export, "--data", tmp_path / "wrong.npz"), "no array for input")
    np.savez(tmp_path / "shape.npz", x=np.zeros((2, 6, 5), "float32"), y=np.zeros((2, 4)))
    assert_user_error(invoke("quantize", fixed_export, "--data", tmp_path / "shape.npz"), "x")
    assert not list(fixed_export.glob("model.int8*"))


def test_bench_refuses_sizes_the_fixed_axes_forbid(fixed_export):
    assert_user_error(invoke("bench", fixed_export, "--time", "9", "--runs", "2"), "time")
    assert_user_error(invoke("bench", fixed_export, "--batch", "5", "--runs", "2"), "batch")


@pytest.mark.skipif(bool({"CUDAExecutionProvider", "TensorrtExecutionProvider"}
                         & set(__import__("onnxruntime").get_available_providers())),
                    reason="a GPU provider is installed")
def test_providers_that_are_not_installed(fixed_export):
    assert_user_error(invoke("bench", fixed_export, "--provider", "tensorrt", "--runs", "2"), "TensorRT")
    assert_user_error(invoke("check", fixed_export, "--provider", "cuda"), "CUDA")
    assert_user_error(invoke("bench", fixed_export, "--variants", "int8", "--runs", "2"), "int8")


def test_quantize_refuses_unknown_options_in_one_line(tmp_path):
    import shutil

    folder = tmp_path / "events-gru"
    shutil.copytree(Path(__file__).parent.parent / "exported" / "events-gru", folder)
    before = (folder / "manifest.json").read_bytes()
    assert_user_error(invoke("quantize", folder, "--int8", "int4"), "unknown int8 setting 'int4': expected one of")
    assert_user_error(invoke("quantize", folder, "--variants", "int4"), "unknown variant(s) int4")
    assert_user_error(invoke("quantize", folder, "--int8", "static-7bit"), "needs calibration data: pass --data")
    assert (folder / "manifest.json").read_bytes() == before  # nothing rewritten


def test_quantize_explain_lists_every_setting_and_gate(tmp_path):
    import shutil

    folder = tmp_path / "events-gru"
    shutil.copytree(Path(__file__).parent.parent / "exported" / "events-gru", folder)
    result = invoke("quantize", folder, "--variants", "int8", "--explain")
    assert result.exit_code == 0, result.output
    for text in ("int8 settings tried (kept:", "weight-only", "dynamic-8bit", "NO", "why:",
                 "golden outputs (", "task metric", "recommended: CPU="):
        assert text in result.output, text


def test_messages_name_flags_not_python_arguments(tmp_path):
    """A provider that is not there: `check` and `run` point at --fallback, `bench` (no such flag) at
    --provider cpu; no message names a Python argument."""
    folder = Path(__file__).parent.parent / "exported" / "airline-gru"
    for args, hint in ((("check", folder, "--provider", "openvino"), "--fallback"),
                       (("bench", folder, "--provider", "openvino", "--runs", 2, "--warmup", 1), "--provider cpu")):
        result = invoke(*args)
        assert_user_error(result, hint)
        assert "=True" not in result.output and "fallback=" not in result.output


def test_help_reads_well():
    """Options by their metavar (no <bool>/<str> type column; an argument shows its type beside its
    name, as typer writes it), choices not broken mid-word, one --flag per boolean option."""
    from rnnedge.cli import app as cli_app

    for command in ("export", "quantize", "check", "run", "bench", "triton", "serve", "ort", "demo"):
        result = CliRunner().invoke(cli_app, [command, "--help"], terminal_width=80)
        assert result.exit_code == 0, result.output
        options = [ln for ln in result.output.splitlines() if ln.lstrip().startswith("-")]
        assert options and not [ln for ln in options if re.search(r"<(bool|str|int|float|path)>", ln)], result.output
        assert "--no-force" not in result.output and "rms e" not in result.output, result.output


def test_demo_says_where_everything_went_and_ends_with_the_zoo_table(tmp_path, monkeypatch):
    """`make demo`'s output: the default folder is demo-out/ (not the committed exported/), every file
    written is named, and the zoo's table comes last, whole at 80 columns."""
    import io

    from rich.console import Console

    from rnnedge import demo
    from rnnedge.cli import app as cli_app

    row = demo.DemoRow("airline-gru", "GRU", "rmse", 0.0609, 0.0609, 0.1291, 4.2e-7, "1 GRU", True, 14643, 0.2, 0.6,
                       True, {"int8": {"size": 6963, "metric": 0.0613, "gate": True, "setting": "weight-only"}})
    monkeypatch.setattr(demo, "export_zoo_model", lambda name, out, force: row)
    buf = io.StringIO()
    assert demo.run_demo(tmp_path, names=["airline-gru"], benchmark=False, console=Console(file=buf, width=80))
    text = buf.getvalue()
    assert f"wrote {tmp_path / 'ZOO.md'}" in text and (tmp_path / "ZOO.md").is_file()
    assert text.rstrip().endswith("┘") and text.index("wrote") < text.index("reference zoo")
    assert "…" not in text and "0.0609" in text and "14.3 KB" in text
    default = next(p for p in typer.main.get_command(cli_app).commands["demo"].params if p.name == "out").default
    assert str(default) == "demo-out"


def test_dash_h_is_help_everywhere():
    for args in ([], ["export"], ["check"], ["run"], ["bench"], ["quantize"]):
        result = invoke(*args, "-h")
        assert result.exit_code == 0 and "Usage: rnnedge" in result.output, (args, result.output)


def test_check_and_run_default_to_the_same_provider():
    import inspect

    from rnnedge.cli import check as commands

    defaults = {name: inspect.signature(getattr(commands, name)).parameters["provider"].default
                for name in ("check", "run")}
    assert defaults["check"] == defaults["run"] == "auto", defaults


def test_demo_prints_progress_lines_and_a_summary_not_every_benchmark_table(tmp_path, monkeypatch):
    """Piped (not a terminal), the demo prints a line per step as it goes; the terminal gets one
    summary row per model, while BENCHMARKS.md keeps every candidate's row."""
    import io

    from rich.console import Console

    from rnnedge import demo
    from rnnedge.bench.results import BenchRow

    row = demo.DemoRow("airline-gru", "GRU", "rmse", 0.0609, 0.0609, 0.1291, 4.2e-7, "1 GRU", True, 14643, 0.2, 0.6,
                       True, {})
    monkeypatch.setattr(demo, "export_zoo_model", lambda name, out, force: row)
    candidates = ["fp32", "int8", "fp16", "keras", "tf2onnx", "litert", "litert-int8"]
    bench_rows = [BenchRow(c, "CPU", 1, 12, 1, 0.1 * (k + 1), 0.1 * (k + 1), 0.1 * (k + 1), 100.0, 1200.0,
                           ratios={"keras": 40.0, "tf2onnx": 2.5} if c == "fp32" else {})
                  for k, c in enumerate(candidates)]

    def benchmark(out, names, progress):
        task = progress.add_task("benchmark", total=len(names))
        for name in names:
            progress.update(task, description=f"benchmark {name}")
            progress.advance(task)
        return [(name, bench_rows) for name in names]

    monkeypatch.setattr(demo, "benchmark_zoo", benchmark)
    buf = io.StringIO()
    assert demo.run_demo(tmp_path, names=["airline-gru"], console=Console(file=buf, width=100))
    text = buf.getvalue()
    assert "[1/1] train + export airline-gru" in text and "[1/1] benchmark airline-gru" in text
    assert "benchmark summary" in text and "40.0x" in text and "2.5x" in text
    summary = text.split("benchmark summary")[1].split("wrote")[0]
    assert [ln.split()[1] for ln in summary.splitlines() if ln.startswith("│")] == ["airline-gru"], summary  # one row
    assert "| airline-gru | litert-int8 |" in (tmp_path / "BENCHMARKS.md").read_text()


def test_the_demo_benchmarks_only_the_variants_an_export_kept(tmp_path):
    """An int8 variant no smaller than fp32 is not kept (cells-lstm): the demo's benchmark skips it."""
    import shutil

    from rnnedge import demo
    from rnnedge.manifest import Manifest

    folder = tmp_path / "m"
    shutil.copytree(Path(__file__).resolve().parent.parent / "exported" / "airline-gru", folder)
    assert demo._kept(folder) == ("fp32", "int8", "fp16")
    m = Manifest.load(folder)
    m.variants.pop("int8")
    m.save(folder)
    assert demo._kept(folder) == ("fp32", "fp16")
