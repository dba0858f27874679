"""Each "pass --option" a message prints (tests/test_suggestions_run.py's PHRASES), reached and then
followed (issue #28): the situation that prints the phrase, then the same command with the advice,
which works. Tiny untrained models built in code, the committed exported/ folders copied before any
write, the CLI in process; what needs what this machine lacks skips naming it."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnedge.errors import RnnEdgeError
from tests import k2models
from tests.helpers import invoke, tiny_gru_exports

ROOT = Path(__file__).resolve().parent.parent
EXPORTED = ROOT / "exported"


def _copy(folder: Path, tmp_path: Path) -> Path:
    shutil.copytree(folder, tmp_path / folder.name)
    return tmp_path / folder.name


def _refused_then(args: list, says: str, then: list, *, drop: tuple = ()):
    """`rnnedge ARGS` is refused with a line saying `says`; `rnnedge ARGS THEN` (the advice, without the
    options in `drop`) works. Returns the second result."""
    result = invoke(*args)
    assert result.exit_code == 1 and says in result.output, (args, result.output)
    kept = [a for i, a in enumerate(args) if a not in drop and (i == 0 or args[i - 1] not in drop)]
    result = invoke(*kept, *then)
    assert result.exit_code == 0, (kept, then, result.output)
    return result


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A tiny untrained GRU whose input fixes 6 steps ("keras"), exported through the CLI as it is
    ("plain") and with --streaming ("streaming", its time axis freed)."""
    return tiny_gru_exports(tmp_path_factory.mktemp("phrases"), time=6)


def _data(tmp_path: Path, name: str, steps: int = 6, y: bool = True) -> Path:
    """An .npz of 8 typical inputs (and targets 'y' of the tiny model's [8, steps, 2] outputs)."""
    rng = np.random.default_rng(1)
    arrays = {name: rng.normal(size=(8, steps, 3)).astype(np.float32)}
    if y:
        arrays["y"] = rng.normal(size=(8, steps, 2)).astype(np.float32)
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def _input_name(folder: Path) -> str:
    return json.loads((folder / "manifest.json").read_text())["inputs"][0]["name"]


# ------------------------------------------------------------------------------------------ bench


def test_bench_time_for_a_baseline_of_fixed_length(tiny):
    """bench/run.py 'pass --time': the Keras model fixes 6 steps, the streaming export does not; the
    baselines at bench's default lengths are refused, and --time 6 times them."""
    result = _refused_then(["bench", tiny["streaming"], "--baseline", "keras", "--runs", 2, "--warmup", 1],
                           "pass --time 6", ["--time", 6])
    assert "keras" in result.output and "fp32" in result.output, result.output


def test_bench_stream_without_baselines(tiny):
    """bench/run.py 'with --stream': baselines are refused with --stream, leaving --baseline out (the
    advice) benches the stream."""
    _refused_then(["bench", tiny["streaming"], "--stream", "--baseline", "keras", "--runs", 2, "--warmup", 1],
                  "leave --baseline out", [], drop=("--baseline",))


# ------------------------------------------------------------------------------------------ export


def test_allow_loop_for_a_layer_that_cannot_be_fused(tmp_path):
    """convert/context.py 'pass --allow-loop': a GRU with an activation no fused node or Scan takes is
    refused naming the layer; with --allow-loop it exports through tf2onnx's graph, and passes parity."""
    import keras
    from keras import layers as L

    from tests.kmodels import functional, seq_input

    @keras.saving.register_keras_serializable("phrases")
    def halved(x):
        return keras.ops.tanh(x) * 0.5

    x = seq_input(3)
    functional(x, L.GRU(4, activation=halved, name="odd")(x), "m").save(tmp_path / "m.keras")
    with pytest.warns(UserWarning, match="odd stayed as Loop"):
        result = _refused_then(["export", tmp_path / "m.keras", "--out", tmp_path / "o"], "pass --allow-loop",
                               ["--allow-loop"])
    assert "PASS" in result.output and json.loads((tmp_path / "o" / "manifest.json").read_text())["loop_layers"]


def test_export_metric_with_data(tiny, tmp_path):
    """preflight.py 'pass --data' and 'add --quantize': --metric without --data, then without --quantize,
    is refused before TensorFlow loads; with both, the task metric judges the variant."""
    data = _data(tmp_path, _input_name(tiny["plain"]))
    result = invoke("export", tiny["keras"], "--out", tmp_path / "o", "--metric", "rmse")
    assert result.exit_code == 1 and "pass --data FILE" in result.output, result.output
    _refused_then(["export", tiny["keras"], "--out", tmp_path / "o", "--metric", "rmse", "--data", data],
                  "add --quantize", ["--quantize", "fp16"])
    task = json.loads((tmp_path / "o" / "manifest.json").read_text())["variants"]["fp16"]["gate"]["task"]
    assert task["metric"] == "rmse" and task["passed"], task


def test_runtime_static_sizes(tiny, tmp_path):
    """runtime/signature.py 'with --static': an export fixed at batch=1 fed 2 sequences says give those
    sizes; 1 sequence runs."""
    folder = tmp_path / "static"
    assert invoke("export", tiny["keras"], "--out", folder, "--static", "batch=1").exit_code == 0
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x2.npy", rng.normal(size=(2, 6, 3)).astype(np.float32))
    np.save(tmp_path / "x1.npy", rng.normal(size=(1, 6, 3)).astype(np.float32))
    result = invoke("run", folder, "-i", tmp_path / "x2.npy")
    assert result.exit_code == 1 and "exported with --static batch=1: give those sizes" in result.output, \
        result.output
    result = invoke("run", folder, "-i", tmp_path / "x1.npy")
    assert result.exit_code == 0 and "shape (1, 6, 2)" in result.output, result.output


# ------------------------------------------------------------------------------------------ quantize


def test_quantize_metric_with_data(tiny, tmp_path):
    """quantize/folder.py 'pass --data' (a --metric with no targets) and quantize/report.py 'pass --data'
    (the gate's "task metric: none"): with --data holding 'y' and --metric, the task metric judges."""
    folder = _copy(tiny["plain"], tmp_path)
    data = _data(tmp_path, _input_name(folder))
    result = invoke("quantize", folder, "--variants", "fp16", "--explain")
    assert result.exit_code == 0 and "task metric: none (pass --data with targets 'y' and --metric" in result.output, \
        result.output
    _refused_then(["quantize", folder, "--variants", "fp16", "--explain", "--metric", "rmse"],
                  "pass --data with an array 'y'", ["--data", data])
    result = invoke("quantize", folder, "--variants", "fp16", "--explain", "--metric", "rmse", "--data", data)
    assert "task metric (pass): rmse" in result.output, result.output
    assert json.loads((folder / "manifest.json").read_text())["variants"]["fp16"]["gate"]["task"]["metric"] == "rmse"


def test_quantize_without_the_zoo_with_data(tmp_path, monkeypatch):
    """quantize/folder.py 'pass --data' (no TensorFlow, so no zoo test split): the variants are judged on
    the golden outputs only; --data with targets 'y' gives the task metric."""
    import rnnedge

    folder = _copy(EXPORTED / "airline-gru", tmp_path)
    monkeypatch.setitem(sys.modules, "rnnedge.zoo", None)  # `from rnnedge import zoo` fails as without TensorFlow
    monkeypatch.delattr(rnnedge, "zoo", raising=False)
    result = invoke("quantize", folder, "--variants", "fp16", "--explain")
    assert result.exit_code == 0 and "pass --data with targets 'y' for a task metric" in result.output, result.output
    assert "task metric: none" in result.output
    x = np.random.default_rng(0).normal(size=(16, 12, 1)).astype(np.float32)
    from rnnedge.runtime import load

    y = next(iter(load(folder).run(x).values()))
    np.savez(tmp_path / "d.npz", window=x, y=y)
    result = invoke("quantize", folder, "--variants", "fp16", "--explain", "--data", tmp_path / "d.npz")
    assert result.exit_code == 0 and "task metric (pass): rmse" in result.output, result.output


# ------------------------------------------------------------------------------------------ view, serve


def test_view_another_variant(fake_netron, tiny):
    """serve/netron.py 'pass --variant': a variant the folder lacks; one it has is served."""
    _refused_then(["view", tiny["plain"], "--variant", "int8", "--no-browse", "--port", 8123], "pass --variant",
                  ["--variant", "fp32"], drop=("--variant",))
    assert fake_netron == [("start", str(tiny["plain"] / "model.onnx"), ("127.0.0.1", 8123), False), ("wait",)]


def test_serve_log_in_a_writable_folder(tmp_path):
    """serve/server.py 'pass --log': a log file in a folder that does not exist is refused; the same
    repository with --log in one that does starts tritonserver, which writes its log there."""
    pytest.importorskip("tritonclient", reason="the serve extra is not installed: pip install 'rnnedge[serve]'")
    from rnnedge.serve.server import find_tritonserver, local_server

    try:
        find_tritonserver()
    except RnnEdgeError as e:
        pytest.skip(f"'pass --log' not followed: tritonserver is not here ({e})")
    repo = tmp_path / "repo"
    assert invoke("triton", EXPORTED / "airline-gru", "--out", repo, "--backend", "python").exit_code == 0
    with pytest.raises(RnnEdgeError, match="pass --log a file in a folder that exists") as err:
        with local_server(repo, log=tmp_path / "no" / "such" / "x.log"):
            pass
    assert "\n" not in str(err.value)
    with local_server(repo, log=tmp_path / "x.log") as server:
        assert server.alive()
    assert (tmp_path / "x.log").stat().st_size > 0


# ------------------------------------------------------------------------------------------ targets


def test_qnn_static_shapes(tiny, tmp_path):
    """tables.py 'with --static': QNN cannot start on dynamic shapes and says re-export with --static
    batch=B,time=T; the static export runs every node on QNN (its HTP simulator here) within its gate."""
    from rnnedge.runtime.qnn import qnn_installed

    if not qnn_installed():
        pytest.skip("'with --static' (tables.py) not followed: onnxruntime-qnn is not installed")
    result = invoke("check", tiny["plain"], "--provider", "qnn")
    assert result.exit_code == 1 and "QNN needs static shapes: re-export with --static batch=B,time=T" in \
        result.output, result.output
    folder = tmp_path / "static"
    assert invoke("export", tiny["keras"], "--out", folder, "--static", "batch=1").exit_code == 0
    result = invoke("check", folder, "--provider", "qnn")
    assert result.exit_code == 0 and "PASS" in result.output and "QNN runs 7 of 7 nodes" in result.output, \
        result.output


def test_targets_export_with_target(tmp_path):
    """runtime/targets.py 'with --target': `rnnedge targets` on a SimpleRNN says export with --target
    qnn (or --static); the export it advises is ready for QNN by the same command."""
    import keras
    from keras import layers as L

    from tests.kmodels import seq_input, sequential

    keras.utils.set_random_seed(0)
    sequential([seq_input(3, time=6), L.SimpleRNN(4), L.Dense(2)], "srnn").save(tmp_path / "s.keras")
    assert invoke("export", tmp_path / "s.keras", "--out", tmp_path / "plain").exit_code == 0
    result = invoke("targets", tmp_path / "plain", "--provider", "qnn")
    assert result.exit_code == 1 and "fix: export with --target qnn" in result.output, result.output
    result = invoke("export", tmp_path / "s.keras", "--out", tmp_path / "qnn", "--target", "qnn")
    assert result.exit_code == 0, result.output
    result = invoke("targets", tmp_path / "qnn", "--provider", "qnn")
    assert result.exit_code == 0 and "export with --target" not in result.output, result.output


# ------------------------------------------------------------------------------------------ demo


def test_demo_without_the_plot_extra(tmp_path, monkeypatch):
    """preflight.py 'pass --no-benchmark': without matplotlib the demo is refused before TensorFlow loads;
    with --no-benchmark it exports (one zoo model here) and plots nothing."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not importable, as where the plot extra is missing
    result = _refused_then(["demo", "--model", "airline-gru", "--out", tmp_path / "d"], "pass --no-benchmark",
                           ["--no-benchmark"])
    assert (tmp_path / "d" / "airline-gru" / "model.onnx").is_file() and not list((tmp_path / "d").glob("*.png"))
    assert "BENCHMARKS.md" not in result.output


# ------------------------------------------------------------------------------------------ Keras 2, SavedModels

TF_KERAS_LAYERS = '''"""A user's tf_keras custom layer."""
import tf_keras


class Twice(tf_keras.layers.Layer):
    def call(self, x):
        return x * 2.0
'''


def test_custom_for_a_keras2_layer_class(tmp_path):
    """exporter/load/keras2.py 'pass --custom': a tf_keras .h5 file with a layer class neither Keras nor
    rnnedge knows is refused naming it; --custom module.py defining it exports, checked against tf_keras."""
    tf_keras = pytest.importorskip("tf_keras")

    class Twice(tf_keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    x = tf_keras.Input((None, 3))
    tf_keras.Model(x, tf_keras.layers.LSTM(2)(Twice(name="twice")(x))).save(tmp_path / "custom.h5")
    (tmp_path / "user_layers.py").write_text(TF_KERAS_LAYERS)
    result = _refused_then(["export", tmp_path / "custom.h5", "--out", tmp_path / "o"],
                           "'Twice' is known to neither Keras nor rnnedge (a custom layer?); pass --custom",
                           ["--custom", tmp_path / "user_layers.py"])
    assert "PASS" in result.output and "against tensorflow" in result.output, result.output


def test_allow_loop_for_a_savedmodel_without_keras_metadata(tmp_path):
    """exporter/fallback.py and exporter/load/keras2.py 'pass --allow-loop': tf.saved_model.save of a
    SimpleRNN model (no Keras metadata; tf2onnx keeps the recurrence a Loop) is refused, by the export
    and by the Keras 2 reader alike; with --allow-loop it exports, checked against TensorFlow."""
    pytest.importorskip("tf_keras")
    from rnnedge.exporter.load import keras2
    from tests import published

    path = published.tf_saved_model_save_simple_rnn(tmp_path)
    with pytest.raises(RnnEdgeError, match=r"without Keras metadata.*\(pass --allow-loop where tf2onnx's graph"):
        keras2.from_savedmodel(path)
    result = _refused_then(["export", path, "--out", tmp_path / "o"], "Loop/Scan", ["--allow-loop"])
    assert "pass --allow-loop to export it with them" in invoke("export", path, "--out", tmp_path / "p").output
    assert "Loops for serving_default" in result.output and "PASS" in result.output, result.output


def test_allow_loop_for_a_layer_that_cannot_be_traced(tmp_path):
    """exporter/load/source.py 'pass --allow-loop' (a layer running a GRU from a state sized by the batch,
    unknown while tracing): refused with the advice; with allow_loop the model exports as it is, and
    its outputs equal Keras'."""
    import keras

    from rnnedge.pipeline import export
    from rnnedge.runtime import load

    class Wrapped(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.gru = keras.layers.GRU(4)

        def call(self, x):
            return self.gru(x, initial_state=[keras.ops.zeros((keras.ops.shape(x)[0], 4))])

    keras.utils.set_random_seed(0)
    x = keras.Input((None, 3))
    model = keras.Model(x, keras.layers.Dense(2)(Wrapped(name="wrapped")(x)))
    with pytest.raises(RnnEdgeError, match="unknown while tracing.*or pass --allow-loop"):
        export(model, tmp_path / "o")
    with pytest.warns(UserWarning, match="fell back to the plain tf2onnx graph"):
        result = export(model, tmp_path / "o", allow_loop=True)
    assert result.passed
    feed = np.random.default_rng(0).normal(size=(2, 7, 3)).astype(np.float32)
    got = next(iter(load(tmp_path / "o").run(feed).values()))
    np.testing.assert_allclose(got, np.asarray(model(feed)), atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------ the browser


def _browser_or_skip(phrase: str, *needs) -> None:
    from rnnedge.web import assets

    pytest.importorskip("playwright", reason=f"'{phrase}' not followed: playwright is not installed")
    try:
        for need in (assets.chromium, assets.ort_dist, *needs):
            need()
    except RnnEdgeError as e:
        pytest.skip(f"'{phrase}' not followed: no browser set-up ({e})")


def test_browser_check_without_webgpu_uses_wasm(monkeypatch):
    """web/check.py 'use --provider': Chromium launched as where it has no WebGPU (--disable-gpu, no
    --enable-unsafe-webgpu) offers no adapter, and says use --provider wasm, which passes."""
    _browser_or_skip("use --provider")
    from rnnedge.web.browser import Browser

    launch = Browser.__init__
    monkeypatch.setattr(Browser, "__init__", lambda self, site, webgpu=False: launch(self, site, webgpu=False))
    result = invoke("check", EXPORTED / "airline-gru", "--provider", "webgpu")
    assert result.exit_code == 1 and "offers no WebGPU adapter here" in result.output, result.output
    assert "use --provider wasm" in result.output
    result = invoke("check", EXPORTED / "airline-gru", "--provider", "wasm")
    assert result.exit_code == 0 and "PASS" in result.output.splitlines()[-1], result.output


def test_browser_bench_json_with_force(tmp_path):
    """files.py's 'pass --force', as the browser's bench prints it: --json is not replaced; --force replaces it."""
    _browser_or_skip("pass --force")
    rows = tmp_path / "rows.json"
    rows.write_text("[]")
    _refused_then(["bench", EXPORTED / "airline-gru", "--provider", "wasm", "--runs", 3, "--warmup", 1,
                   "--json", rows], "pass --force", ["--force"])
    assert json.loads(rows.read_text())[0]["runs"] >= 3


def test_browser_bench_tfjs_with_source(tmp_path):
    """web/bench.py 'pass --source': the TF.js baseline of an export whose manifest names no source is
    refused; --source MODEL converts that model and times it beside the export."""
    from rnnedge.web import assets

    _browser_or_skip("pass --source", assets.tfjs_files)
    if importlib.util.find_spec("tensorflowjs") is None:  # imported by rnnedge.web.tfjs with its imports stubbed
        pytest.skip("'pass --source' not followed: the tensorflowjs converter is not installed")
    import keras

    keras.utils.set_random_seed(0)
    keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(4, reset_after=False),
                      keras.layers.Dense(2)]).save(tmp_path / "g.keras")
    assert invoke("export", tmp_path / "g.keras", "--out", tmp_path / "g").exit_code == 0
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    manifest["source"] = {k: v for k, v in manifest["source"].items() if k not in ("name", "path")}
    (tmp_path / "g" / "manifest.json").write_text(json.dumps(manifest))
    result = _refused_then(["bench", tmp_path / "g", "--provider", "wasm", "--baseline", "tfjs", "--runs", 3,
                            "--warmup", 1], "the manifest names none; pass --source",
                           ["--source", tmp_path / "g.keras"])
    assert "TensorFlow.js" in result.output, result.output


# ------------------------------------------------------------------------------------------ run


def _rss(pid: int) -> dict[str, int]:
    """RssAnon and RssFile of a process, in bytes."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("RssAnon", "RssFile")}


def _sparse_npz(path: Path, name: str, shape: tuple[int, ...]) -> None:
    """An .npz of one float32 member declaring `shape`, stored (zip64), its data a hole in a sparse file."""
    import io
    import struct

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": shape})
    size = len(head.getvalue()) + int(np.prod(shape, dtype=object)) * 4
    member = f"{name}.npy".encode()
    extra = struct.pack("<HHQQ", 1, 16, size, size)
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, 0, 2**32 - 1, 2**32 - 1, len(member),
                        len(extra)) + member + extra
    with open(path, "wb") as f:
        f.write(local + head.getvalue())
        f.seek(len(local) + size)
        extra = struct.pack("<HHQQQ", 1, 24, size, size, 0)
        central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, 0, 2**32 - 1, 2**32 - 1,
                              len(member), len(extra), 0, 0, 0, 0, 2**32 - 1) + member + extra
        f.write(central)
        end = f.tell()
        f.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, 1, 1, len(central), len(local) + size))
        f.write(struct.pack("<IIQI", 0x07064B50, 0, end, 1))
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), 2**32 - 1, 0))


def test_run_chunk_streams_an_input_larger_than_memory(tmp_path):
    """runtime/datafiles.py 'with --chunk': an .npz and a .npy of 1 TiB (sparse files: they take no disk)
    are refused as too large for memory, the .npz saying save it as .npy and stream it with --chunk;
    `run --chunk` maps the .npy and streams it chunk by chunk: still running after seconds, its
    anonymous memory small while the mapped file it has read grows."""
    import subprocess

    try:
        overcommit = Path("/proc/sys/vm/overcommit_memory").read_text().strip()
    except OSError:
        pytest.skip("'with --chunk' not followed: no /proc here to read the process's memory")
    if overcommit == "1":  # the kernel would grant 1 TiB, and numpy read it all
        pytest.skip("'with --chunk' not followed: vm.overcommit_memory=1 grants any allocation")
    steps = 2**38  # float32 [1, steps, 1]: 1 TiB
    big = tmp_path / "big.npy"
    with open(big, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (1, steps, 1)})
        f.truncate(f.tell() + steps * 4)
    folder = EXPORTED / "airline-gru"
    _sparse_npz(tmp_path / "big.npz", "window", (1, steps, 1))
    result = invoke("run", folder, "-i", tmp_path / "big.npz")
    assert result.exit_code == 1 and "save it with numpy.save as .npy and stream it with --chunk" in result.output, \
        result.output
    result = invoke("run", folder, "-i", big)
    assert result.exit_code == 1 and "too large for this machine's memory" in result.output, result.output
    assert "stream it with --chunk" in result.output
    process = subprocess.Popen([sys.executable, "-m", "rnnedge", "run", str(folder), "-i", str(big), "--chunk",
                                "100000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        import time

        time.sleep(4)
        assert process.poll() is None, process.communicate()[0]  # not refused, not done: streaming
        first = _rss(process.pid)
        time.sleep(2)
        then = _rss(process.pid)
        assert then["RssAnon"] < 2**31, then  # far below the file's 1 TiB
        assert then["RssFile"] > first["RssFile"] + 2**20, (first, then)  # it read on through the file
    finally:
        process.kill()
        process.wait(timeout=10)


def test_allow_loop_and_custom_for_tf_keras_savedmodels(tmp_path):
    """exporter/load/source.py 'pass --allow-loop' (a subclassed tf_keras SavedModel: no configuration to
    rebuild) and exporter/load/keras2_files.py 'pass --custom' (a layer revived from traced functions, its
    class not supplied): each followed through the CLI, checked against TensorFlow."""
    tf_keras = pytest.importorskip("tf_keras")
    from rnnedge.exporter.load import keras2

    class Twice(tf_keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype("float32")
    net = k2models.subclassed_gru()
    net(x)
    net.save(str(tmp_path / "net"), save_format="tf")
    result = _refused_then(["export", tmp_path / "net", "--out", tmp_path / "o"], "or pass --allow-loop",
                           ["--allow-loop"])
    assert "PASS" in result.output and "against tensorflow" in result.output, result.output

    inputs = tf_keras.Input((6, 3))
    tf_keras.Model(inputs, tf_keras.layers.Dense(2)(Twice(name="twice")(tf_keras.layers.LSTM(4)(inputs)))).save(
        str(tmp_path / "revived"), save_format="tf")
    with pytest.raises(RnnEdgeError, match="'twice'.*exist only as traced functions.*pass --custom module.py"):
        keras2.from_savedmodel(tmp_path / "revived")  # the export goes on through the signature at 6 steps
    (tmp_path / "user_layers.py").write_text(TF_KERAS_LAYERS)
    result = invoke("export", tmp_path / "revived", "--out", tmp_path / "r", "--custom", tmp_path / "user_layers.py")
    assert result.exit_code == 0 and "PASS" in result.output, result.output
    source = json.loads((tmp_path / "r" / "manifest.json").read_text())["source"]
    assert "--custom layer(s) 'twice'" in source["format"], source
