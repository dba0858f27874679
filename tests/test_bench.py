"""rnnedge.bench: rows, files, plots and errors. No timing assertions: only that the numbers are
there and ordered (latencies belong in tools/bench_*.py, which print them)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from rnnedge import RnnEdgeError
from rnnedge.bench import (
    BenchRow,
    bench_dir,
    markdown,
    measure,
    plot,
    random_inputs,
    read_json,
    rich_table,
    write_csv,
    write_json,
)
from rnnedge.manifest import MODEL, Manifest, TensorSpec
from rnnedge.quantize import quantize_file

try:
    from tests.onnx_fixtures import gru_folder, token_folder
except ImportError:  # tests/ on sys.path (pytest's default "prepend" import mode)
    from onnx_fixtures import gru_folder, token_folder

FAST = dict(runs=5, warmup=1)


@pytest.fixture(scope="module")
def keras_gru():
    import keras

    x = keras.Input((None, 4), name="x")
    y = keras.layers.Dense(3)(keras.layers.GRU(8)(x))
    return keras.Model(x, y, name="tiny_gru")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, keras_gru):
    from rnnedge.pipeline import export

    folder = tmp_path_factory.mktemp("bench") / "gru"
    export(keras_gru, folder)
    return folder


@pytest.fixture(scope="module")
def streaming(tmp_path_factory):
    return gru_folder(tmp_path_factory.mktemp("bench") / "stream")


def check_rows(rows, n):
    assert len(rows) == n
    for r in rows:
        assert isinstance(r, BenchRow)
        assert 0 < r.p50_ms <= r.p90_ms <= r.p99_ms
        assert r.seq_per_s > 0 and r.steps_per_s >= r.seq_per_s
        assert r.runs == FAST["runs"] and r.threads == 1


def test_export_against_baselines(exported, keras_gru):
    baselines = ("tf2onnx", "keras", "litert", "litert-int8")
    rows = bench_dir(exported, batches=(1, 2), times=(5,), baselines=baselines, source=keras_gru, **FAST)
    check_rows(rows, 2 * 5)
    assert [r.candidate for r in rows[:5]] == ["fp32", *baselines]
    assert {(r.batch, r.time) for r in rows} == {(1, 5), (2, 5)}
    for r in rows:
        assert set(r.ratios) == set(baselines)
        assert all(v > 0 for v in r.ratios.values())
    for b in baselines:
        assert next(r for r in rows if r.candidate == b).ratios[b] == pytest.approx(1.0)
    errors = {r.candidate: r.error for r in rows}
    assert errors["keras"] < 1e-6 and errors["tf2onnx"] < 1e-4  # baselines have a max |diff| too
    assert errors["litert"] < 1e-4 and 0 <= errors["litert-int8"] < 1.0  # (a tiny GRU's weights stay float)
    assert {r.candidate: r.provider for r in rows} == {"fp32": "CPUExecutionProvider",
                                                       "tf2onnx": "CPUExecutionProvider", "keras": "TensorFlow",
                                                       "litert": "LiteRT (CPU)",
                                                       "litert-int8": "LiteRT (CPU)"}


def test_litert_baseline_computes_what_keras_computes(tmp_path):
    """The LiteRT candidate is timed on a faithful conversion: same outputs as Keras, inputs matched by name."""
    import keras

    from rnnedge.bench.baselines import LiteRTRunner
    from rnnedge.pipeline import export
    from rnnedge.samples import random_inputs

    a, b = keras.Input((None, 3), name="a"), keras.Input((None, 2), name="b")
    # Recurrent kernels over 1024 weights: LiteRT's dynamic-range quantization leaves smaller tensors in float.
    y = keras.layers.Dense(2)(keras.layers.Concatenate()([keras.layers.LSTM(32)(a), keras.layers.SimpleRNN(40)(b)]))
    model = keras.Model([a, b], y, name="two_inputs")
    export(model, tmp_path / "m")
    manifest = Manifest.load(tmp_path / "m")
    feeds = random_inputs(manifest, 2, 6)
    want = model([feeds["a"], feeds["b"]]).numpy()
    (out,) = [s.name for s in manifest.data_outputs]
    lite = LiteRTRunner(model, ["a", "b"], [out], threads=1)
    np.testing.assert_allclose(lite.run({"b": feeds["b"], "a": feeds["a"]})[out], want, atol=1e-5)  # by name
    # int8 weights: close, not equal
    int8 = LiteRTRunner(model, ["a", "b"], [out], threads=1, int8=True).run(feeds)[out]
    assert 0 < np.abs(int8 - want).max() < 0.05


def test_check_and_bench_take_the_same_runners(tmp_path, keras_gru):
    """One runner interface (a name, run(feeds) -> outputs, bind(feeds) for timing): check compares
    the baselines with Keras' golden outputs as it does onnxruntime, and can fail."""
    from rnnedge.bench.baselines import KerasRunner, LiteRTRunner, tf2onnx_runner
    from rnnedge.check import Tolerance, check_runner
    from rnnedge.pipeline import export
    from rnnedge.runtime import load
    from rnnedge.runtime.runner import OrtRunner

    export(keras_gru, tmp_path / "m")
    manifest = Manifest.load(tmp_path / "m")
    ins, outs = [s.name for s in manifest.data_inputs], [s.name for s in manifest.data_outputs]
    runners = [OrtRunner(load(tmp_path / "m", "cpu").session, "fp32"), tf2onnx_runner(keras_gru),
               KerasRunner(keras_gru, ins, outs), LiteRTRunner(keras_gru, ins, outs)]
    for runner in runners:
        report = check_runner(runner, tmp_path / "m", Tolerance(1e-5, 1e-4))
        assert report.passed and report.provider == runner.name, report.failures()
        assert measure({runner.name: runner.bind(random_inputs(manifest, 1, 5))},
                       runs=3, warmup=1)[runner.name].size == 3

    class Off:
        name = "off by one"

        def run(self, feeds):
            return {k: v + 1 for k, v in runners[0].run(feeds).items()}

    assert not check_runner(Off(), tmp_path / "m")


def test_litert_conversion_failure_is_one_line(monkeypatch, keras_gru):
    import tensorflow as tf

    from rnnedge.bench.baselines import litert_export

    class Refuses:
        def convert(self):
            raise RuntimeError("trace.py:1:1: note: here\n"
                               "trace.py:2:1: error: 'tf.Foo' op is neither a custom op nor flex op\nmore")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_concrete_functions", staticmethod(lambda *a, **k: Refuses()))
    with pytest.raises(RnnEdgeError, match=r"^LiteRT could not convert model 'tiny_gru' for input shapes \(1, 5, 4\): "
                                           r"'tf.Foo' op is neither a custom op nor flex op$"):
        litert_export(keras_gru, [(1, 5, 4)])


def test_default_time_and_batch(streaming):
    from rich.progress import Progress

    with Progress(auto_refresh=False, transient=True) as progress:
        rows = bench_dir(streaming, progress=progress, **FAST)
    assert progress.tasks[0].completed == progress.tasks[0].total == 1
    check_rows(rows, 1)
    assert (rows[0].batch, rows[0].time, rows[0].candidate) == (1, 100, "fp32")
    assert rows[0].steps_per_s == pytest.approx(rows[0].seq_per_s * 100)
    assert rows[0].ratios == {}


def test_files(streaming, tmp_path):
    ticks = []
    rows = bench_dir(streaming, batches=(1, 3), times=(4, 40), progress=ticks.append, **FAST)
    check_rows(rows, 4)
    assert ticks == [1] * 4  # one per case
    j = write_json(rows, tmp_path / "out" / "bench.json")
    assert read_json(j) == rows
    assert json.loads(j.read_text())[0]["p50_ms"] == rows[0].p50_ms
    c = write_csv(rows, tmp_path / "bench.csv")
    with open(c, newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and float(table[0]["p50_ms"]) == pytest.approx(rows[0].p50_ms)
    assert [int(t["time"]) for t in table] == [r.time for r in rows]
    for name in ("bench.png", "single.png"):
        png = plot(rows if name == "bench.png" else rows[:1], tmp_path / name)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = markdown(rows)
    assert md.count("\n") == 2 + len(rows) and "| fp32 |" in md
    assert rich_table(rows).row_count == len(rows)


def test_variants(tmp_path):
    folder = gru_folder(tmp_path / "gru")
    manifest = Manifest.load(folder)
    manifest.variants["int8"] = quantize_file(folder / MODEL, folder / "model.int8.onnx", "int8")
    manifest.save(folder)
    rows = bench_dir(folder, variants=("fp32", "int8"), times=(8,), **FAST)
    check_rows(rows, 2)
    assert [r.candidate for r in rows] == ["fp32", "int8"]


def test_stream(streaming, tmp_path):
    rows = bench_dir(streaming, stream=True, batches=(2,), **FAST)
    check_rows(rows, 2)
    assert [r.candidate for r in rows] == ["stream-fp32", "floor"]
    assert all(r.time == 1 and r.batch == 2 and set(r.ratios) == {"floor"} for r in rows)
    tokens = token_folder(tmp_path / "tokens")  # integer ids with a vocabulary
    rows = bench_dir(tokens, stream=True, times=(1, 6), **FAST)
    check_rows(rows, 4)
    assert [r.time for r in rows] == [1, 1, 6, 6]
    assert plot(rows, tmp_path / "stream.png").read_bytes()[:4] == b"\x89PNG"


def test_measure_interleaves():
    seen = []
    out = measure({"a": lambda: seen.append("a"), "b": lambda: seen.append("b")}, runs=7, warmup=2)
    assert {k: v.shape for k, v in out.items()} == {"a": (7,), "b": (7,)}
    assert len(seen) == 18
    assert all(sorted(seen[i:i + 2]) == ["a", "b"] for i in range(0, 18, 2))  # each round runs both


# ---------------------------------------------------------------------------------------- errors


def fixed_folder(folder, batch=1, steps=10, features=4):
    """Identity with a fixed batch and time axis: x [1, 10, 4] -> y."""
    folder.mkdir(parents=True)
    spec = TensorSpec("x", (batch, steps, features), "float32")
    out = TensorSpec("y", (batch, steps, features), "float32")
    vi = [helper.make_tensor_value_info(s.name, onnx.TensorProto.FLOAT, list(s.shape)) for s in (spec, out)]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "fixed", vi[:1], vi[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / MODEL)
    Manifest(inputs=[spec], outputs=[out], opset=17, ir_version=8, source={"name": "fixed"}).save(folder)
    return folder


def test_fixed_axes(tmp_path):
    folder = fixed_folder(tmp_path / "fixed")
    rows = bench_dir(folder, **FAST)  # nothing asked: the fixed sizes
    check_rows(rows, 1)
    assert (rows[0].batch, rows[0].time) == (1, 10)
    with pytest.raises(RnnEdgeError, match=r"input 'x' has a fixed time axis \(dimension 1\) of 10, but time 16"):
        bench_dir(folder, times=(10, 16), **FAST)
    with pytest.raises(RnnEdgeError, match=r"input 'x' has a fixed batch axis \(dimension 0\) of 1, but batch 8"):
        bench_dir(folder, batches=(8,), **FAST)


def test_unknown_variant(streaming):
    with pytest.raises(RnnEdgeError, match=r"no 'fp16' variant \(it has: fp32.*rnnedge quantize .* --variants fp16"):
        bench_dir(streaming, variants=("fp32", "fp16"), **FAST)


def test_stream_needs_streaming_export(exported):
    with pytest.raises(RnnEdgeError, match="export --streaming"):
        bench_dir(exported, stream=True, **FAST)


def test_baselines_need_source(exported):
    # exported from an in-memory model: the manifest's source is a model name, not a file
    with pytest.raises(RnnEdgeError, match=r"need the export extra .*\(--source FILE\)"):
        bench_dir(exported, baselines=("keras",), **FAST)
    with pytest.raises(RnnEdgeError, match="unknown baseline 'onnx'"):
        bench_dir(exported, baselines=("onnx",), **FAST)


def test_stream_takes_no_baselines(streaming, keras_gru):
    with pytest.raises(RnnEdgeError, match="floor"):
        bench_dir(streaming, stream=True, baselines=("keras",), source=keras_gru, **FAST)


@pytest.mark.parametrize("bad", [dict(runs=0), dict(threads=0), dict(batches=(0,)), dict(times=(-1,))])
def test_bad_numbers(streaming, bad):
    with pytest.raises(RnnEdgeError, match=">= "):
        bench_dir(streaming, **{**FAST, **bad})


def test_row_checks():
    with pytest.raises(ValueError, match="ordered"):
        BenchRow("fp32", "cpu", 1, 10, 1, 2.0, 1.0, 3.0, 1.0, 1.0)
    assert np.isclose(BenchRow("fp32", "cpu", 1, None, 1, 1.0, 1.0, 1.0, 1.0, 1.0, {"keras": 4}).ratios["keras"], 4.0)


def test_baselines_refuse_a_length_the_keras_model_does_not_take(tmp_path):
    keras = pytest.importorskip("keras")
    from rnnedge.bench import bench_dir
    from rnnedge.pipeline import export

    x = keras.Input((6, 3))
    model = keras.Model(x, keras.layers.GRU(4)(x))
    export(model, tmp_path / "m", streaming=True)  # the stream frees the time axis; Keras keeps 6 steps
    with pytest.raises(RnnEdgeError, match="--time 6"):
        bench_dir(tmp_path / "m", baselines=("tf2onnx",), source=model, times=(10,), runs=2, warmup=0)
    rows = bench_dir(tmp_path / "m", baselines=("tf2onnx",), source=model, times=(6,), runs=2, warmup=0)
    assert {r.candidate for r in rows} == {"fp32", "tf2onnx"}


def test_litert_refuses_stateful_models_in_one_line(tmp_path):
    import keras

    from rnnedge.pipeline import export

    x = keras.Input((None, 3), batch_size=1, name="x")
    model = keras.Model(x, keras.layers.GRU(4, stateful=True, name="memory")(x))
    export(model, tmp_path / "m")
    with pytest.raises(RnnEdgeError, match=r"^LiteRT could not convert model '.*': stateful layer\(s\) memory keep"):
        bench_dir(tmp_path / "m", baselines=("litert",), source=model, times=(4,), **FAST)


def test_the_triton_section_survives_a_new_benchmarks_file():
    from rnnedge.demo import TRITON_SECTION, keep_section, replace_section

    text = replace_section("# Benchmarks\n\n| table |\n", TRITON_SECTION, "## Triton\nfigures 1")
    assert text.startswith("# Benchmarks") and "figures 1" in text
    again = replace_section(text, TRITON_SECTION, "## Triton\nfigures 2")
    assert "figures 2" in again and "figures 1" not in again and again.count(TRITON_SECTION[0]) == 1
    regenerated = "# Benchmarks\n\n| new table |\n" + keep_section(again, TRITON_SECTION)
    assert "| new table |" in regenerated and "figures 2" in regenerated
    assert keep_section("# no section", TRITON_SECTION) == ""


def test_tables_stay_whole_at_80_columns_and_when_piped():
    """No cell is cut: where the columns do not fit they split into tables keyed by candidate and time."""
    import io

    from rich.console import Console

    from rnnedge.bench import BenchRow

    rows = [BenchRow(candidate=c, provider=p, batch=1, time=t, threads=1, p50_ms=1094.25 * k, p90_ms=5000.0,
                     p99_ms=6000.0, seq_per_s=123456.0, steps_per_s=98765432.0, error=1e-7 if c == "fp32" else None,
                     ratios={"keras": 12.5, "tf2onnx": 3.25, "litert": 1.5, "litert-int8": 0.75})
            for k, (c, p) in enumerate((("fp32", "CPUExecutionProvider"), ("litert-int8", "LiteRT (CPU)")), 1)
            for t in (16, 400)]
    for width in (60, 80, 100):
        buf = io.StringIO()
        Console(file=buf, width=width).print(rich_table(rows))  # a file: what piped output gets
        text = buf.getvalue()
        assert "…" not in text and max(len(line) for line in text.splitlines()) <= width, text
        for cell in ("1094", "2188", "123,456", "98,765,432", "litert-int8", "LiteRT", "12.50x", "0.75x"):
            assert cell in text, (cell, text)


def test_cli_plot_draws_latency_against_length_by_default(tmp_path):
    """`rnnedge bench DIR --plot` with no --time sweeps 16, 100 and 400 steps (the model's time axis
    is dynamic), so the plot is lines over lengths, not one bar."""
    from typer.testing import CliRunner

    from rnnedge.cli import app

    folder = Path(__file__).parent.parent / "exported" / "events-gru"
    png, rows = tmp_path / "lat.png", tmp_path / "rows.json"
    result = CliRunner().invoke(app, ["bench", str(folder), "--plot", str(png), "--json", str(rows),
                                      "--runs", "3", "--warmup", "1"])
    assert result.exit_code == 0, result.output
    got = read_json(rows)
    assert sorted({r.time for r in got}) == [16, 100, 400]
    assert {r.candidate for r in got} == {"fp32", "int8", "fp16"}  # every variant the folder has, by default
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
