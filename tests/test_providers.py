"""Execution providers other than CPU: by name (plugin providers registered), precision pinned,
placement from onnxruntime's own record, parity per provider, side-by-side bench.

QNN runs here through the onnxruntime-qnn wheel's HTP (NPU) simulator (x86-64 Linux); OpenVINO's
plugin offers Intel devices only, so its tests say so in their skip reason on other CPUs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rnnedge.check import Tolerance, check_dir
from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import Manifest, TensorSpec
from rnnedge.runtime import load
from rnnedge.runtime import providers as prov
from rnnedge.runtime.placement import NodePlacement, Placement, reasons_from_log
from rnnedge.tables import CPU, OPENVINO, QNN, tolerance_of
from tests.helpers import invoke

H, F, T = 8, 4, 8


def _installed(provider: str) -> bool:
    return prov.plugin_module(provider) is not None


def _devices(provider: str) -> bool:
    return _installed(provider) and prov.register_plugin(provider) and bool(prov.plugin_devices(provider))


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


need_qnn = pytest.mark.skipif(not _installed(QNN), reason="onnxruntime-qnn is not installed (pip install "
                              "'rnnedge[qnn]'; `make install` does)")
OPENVINO_SKIP = ("onnxruntime-ep-openvino is not installed" if not _installed(OPENVINO) else
                 "OpenVINO's plugin offers no device on this machine (it claims Intel hardware only)")
need_openvino = pytest.mark.skipif(not _devices(OPENVINO), reason=OPENVINO_SKIP)


def lstm_folder(folder: Path, activations: bool) -> Path:
    """An export folder whose one fused LSTM node is built with onnx.helper, static [T, 1, F], with
    or without an explicit `activations` attribute holding ONNX's defaults."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, s).astype(np.float32), n)
             for n, s in (("W", (1, 4 * H, F)), ("R", (1, 4 * H, H)), ("B", (1, 8 * H)))]
    extra = {"activations": ["Sigmoid", "Tanh", "Tanh"]} if activations else {}
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "h"], name="lstm/LSTM/LSTM", hidden_size=H, **extra)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, 1, F])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, 1, 1, H]),
                               helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 1, H])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    Manifest(inputs=[TensorSpec("x", (T, 1, F), "float32")],
             outputs=[TensorSpec("y", (T, 1, 1, H), "float32"), TensorSpec("h", (1, 1, H), "float32")],
             opset=17, ir_version=8, fused_nodes={"lstm": ["lstm/LSTM/LSTM"]}, layers={"lstm": "fused"}).save(folder)
    return folder


# -- names, installation, precision (no plugin needed) ------------------------------------------

def test_names_resolve_to_full_names():
    assert prov.normalize_provider("QNN") == QNN
    assert prov.normalize_provider("openvino") == OPENVINO
    assert prov.normalize_provider("OpenVINOExecutionProvider") == OPENVINO
    with pytest.raises(RnnEdgeError, match="unknown provider 'npu'.*openvino.*qnn"):
        prov.normalize_provider("npu")


def test_plugin_not_installed_is_one_line_with_its_pip_line(tmp_path, monkeypatch):
    folder = lstm_folder(tmp_path / "m", activations=False)
    monkeypatch.setattr(prov, "_REGISTERED", set())
    monkeypatch.setattr(prov, "plugin_module", lambda provider: None)
    with pytest.raises(RnnEdgeError, match=r"'qnn' \(QNNExecutionProvider\) is not available.*pip install "
                                           r"'rnnedge\[qnn\]'") as e:
        load(folder, "qnn")
    assert "\n" not in str(e.value)
    with pytest.warns(RuntimeWarning, match="falling back"):
        assert load(folder, "openvino", fallback=True).provider == CPU
    r = invoke("check", folder, "--provider", "qnn")
    assert r.exit_code == 1 and "pip install 'rnnedge[openvino]'" not in r.output
    assert "rnnedge[qnn]" in r.output and "Traceback" not in r.output, r.output


def test_precision_is_pinned_from_the_table():
    """OpenVINO computes in f32 unless asked (it picks bf16 on CPUs that have it); QNN's HTP in fp16."""
    name, options = prov.precision_options(OPENVINO, None)
    assert name == "f32" and json.loads(options["load_config"]) == {"CPU": {"INFERENCE_PRECISION_HINT": "f32"}}
    name, options = prov.precision_options(OPENVINO, "bf16")
    assert json.loads(options["load_config"])["CPU"]["INFERENCE_PRECISION_HINT"] == "bf16"
    assert prov.precision_options(OPENVINO, "fp16")[0] == "f16"
    assert prov.precision_options(QNN, None) == ("fp16", {"enable_htp_fp16_precision": "1", "soc_model": "60",
                                                          "htp_arch": "73"})
    with pytest.raises(RnnEdgeError, match="precision 'bf16' is not one CPUExecutionProvider can be pinned to"):
        prov.precision_options(CPU, "bf16")


def test_precision_refused_before_loading(tmp_path):
    folder = lstm_folder(tmp_path / "m", activations=False)
    with pytest.raises(RnnEdgeError, match="precision 'int4'"):
        load(folder, "cpu", precision="int4")
    assert load(folder, "cpu", precision="fp32").precision == "fp32"
    np.save(tmp_path / "x.npy", np.zeros((T, 1, F), np.float32))
    r = invoke("run", folder, "-i", tmp_path / "x.npy", "--provider", "cpu", "--precision", "bf16")
    assert r.exit_code == 1 and "precision 'bf16' is not one CPUExecutionProvider can be pinned to" in r.output


def test_reasons_from_a_providers_log():
    log = ("2026-12-07 06:01:25.9 [V:onnxruntime:, qnn_execution_provider.cc:1713 LogNodeSupport] Validation "
           "FAILED for 1 nodes in OrtNodeUnit (LSTM) :\n\tOperator type: LSTM Node name: rnn/LSTM/LSTM Node index: "
           "3\n\tREASON : QNN EP doesn't support non-default activations for LSTM.\n"
           "2026-12-07 06:01:26.0 [W:onnxruntime:, x.cc:1 F] CUDA kernel not found in registries for Op type: GRU "
           "node name: gru/GRU/GRU\n"
           "2026-12-07 06:01:26.0 [V:onnxruntime:, x.cc:1 F] node rnn/LSTM/LSTM_1 placed\n")
    found = reasons_from_log(log, ["rnn/LSTM/LSTM", "gru/GRU/GRU", "rnn/LSTM/LSTM_1", "dense/MatMul"])
    assert found == {"rnn/LSTM/LSTM": "QNN EP doesn't support non-default activations for LSTM.",
                     "gru/GRU/GRU": "CUDA kernel not found in registries for Op type: GRU node name: gru/GRU/GRU"}


def test_placement_summary_counts_what_ran_where():
    nodes = (NodePlacement("a/LSTM", "LSTM", QNN, "a"),
             NodePlacement("Squeeze", "Squeeze", CPU, "", "Cannot get shape"),
             NodePlacement("b/GRU", "GRU", CPU, "b", "Cannot get shape"))
    p = Placement(QNN, nodes)
    assert not p.complete
    assert p.summary() == ("QNN runs 1 of 3 nodes (1 of 2 recurrent); on CPU: 2 (GRU, Squeeze); QNN's reason: "
                           "'Cannot get shape' (2 nodes)")
    assert p.to_dict()["recurrent"] == {"a/LSTM": QNN, "b/GRU": CPU}
    assert any(line.startswith("! b/GRU (GRU, layer b) on CPU: Cannot get shape") for line in p.lines())


def test_bench_names_the_fastest_provider():
    from rnnedge.bench import BenchRow, fastest

    def row(name, provider, ms, batch):
        return BenchRow(name, provider, batch, 16, 1, ms, ms, ms, batch / ms, 16 * batch / ms)

    rows = [row("fp32@CPU", CPU, 2.0, 1), row("fp32@OpenVINO", OPENVINO, 1.0, 1),
            row("fp32@CPU", CPU, 3.0, 32), row("fp32@OpenVINO", OPENVINO, 6.0, 32)]
    assert fastest(rows) == [
        "batch 1, 16 steps: fastest fp32@OpenVINO, 1.00 ms p50 (2.00x faster than fp32@CPU)",
        "batch 32, 16 steps: fastest fp32@CPU, 3.00 ms p50 (2.00x faster than fp32@OpenVINO)"]


# -- QNN: Qualcomm's HTP simulator ----------------------------------------------------------------

@need_qnn
def test_plugin_registered_once_per_process(monkeypatch):
    import onnxruntime as ort

    assert prov.register_plugin(QNN)
    calls = []
    real = ort.register_execution_provider_library
    monkeypatch.setattr(ort, "register_execution_provider_library", lambda *a: calls.append(a) or real(*a))
    assert prov.register_plugin(QNN) and prov.register_plugin(QNN)
    assert calls == []  # onnxruntime is asked once per process, not once per load
    assert sum(d.ep_name == QNN for d in ort.get_ep_devices()) == 1
    assert QNN in prov.available_providers()


@need_qnn
def test_qnn_places_a_fused_lstm_without_default_attributes(tmp_path):
    folder = lstm_folder(tmp_path / "plain", activations=False)
    model = load(folder, "qnn", explain=True)
    assert (model.provider, model.precision) == (QNN, "fp16")
    placement = model.placement()
    assert placement.complete, placement.lines()
    assert placement.fused[0].layer == "lstm"
    x = np.random.default_rng(1).normal(size=(T, 1, F)).astype(np.float32)
    on_cpu = load(folder, "cpu").run(x)
    on_qnn = model.run(x)
    for name in ("y", "h"):
        span = float(on_cpu[name].max() - on_cpu[name].min())
        assert 0 < np.abs(on_qnn[name] - on_cpu[name]).max() <= 0.02 * span  # fp16 on the simulator: close, not equal


@need_qnn
def test_qnn_placement_fails_a_fused_node_with_explicit_default_activations(tmp_path):
    """QNN refuses the `activations` attribute itself, even at ONNX's defaults: the node leaves the NPU,
    and the placement names the node, its layer and QNN's reason."""
    placement = load(lstm_folder(tmp_path / "acts", activations=True), "qnn", explain=True).placement()
    assert not placement.complete
    (node,) = placement.elsewhere
    assert (node.node, node.layer, node.provider) == ("lstm/LSTM/LSTM", "lstm", CPU)
    assert "non-default activations" in node.reason and "re-export" in node.reason
    assert "QNN runs 0 of 1 nodes (0 of 1 recurrent)" in placement.summary()


def static_export(tmp_path_factory, name: str) -> Path:
    """The zoo model `name` exported fresh with static shapes (QNN compiles static graphs only); its
    Keras model, not zoo:NAME, whose golden cases come from its test split's shapes."""
    from rnnedge import zoo
    from rnnedge.pipeline import export

    out = tmp_path_factory.mktemp("qnn") / name
    try:
        export(zoo.load(name).model, out, static={"batch": 1, "time": 16})
    except RnnEdgeError as e:
        if "time" not in str(e):
            raise
        export(zoo.load(name).model, out, force=True, static={"batch": 1})  # its time axis is fixed already
    return out


@pytest.fixture(scope="module")
def static_gru(tmp_path_factory):
    return static_export(tmp_path_factory, "events-gru")


@need_qnn
def test_qnn_zoo_model_parity_and_placement(static_gru):
    report = check_dir(static_gru, "qnn")
    assert report.passed, report.failures()
    assert report.provider == QNN and report.precision == "fp16"
    assert "2% of each output's range" in report.rule
    placement = report.placement
    assert placement.fused and all(n.provider == QNN for n in placement.fused), placement.lines()
    assert report.worst_abs > 1e-6  # fp16 on the NPU simulator: not CPU's numbers
    # the same check at CPU's tolerance fails: the gate is what lets fp16 pass, not a lucky match
    strict = check_dir(static_gru, "qnn", tolerance=Tolerance(*tolerance_of(CPU)))
    assert not strict.passed


@need_qnn
@pytest.mark.parametrize("name, on_qnn", [("events-lstm", True), ("digits-simplernn", False)])
def test_qnn_more_of_the_zoo(tmp_path_factory, name, on_qnn):
    """LSTM runs wholly on the NPU; a SimpleRNN's RNN nodes stay on CPU (QNN has no RNN op), said so
    with the layer and QNN's reason, and the values are right either way."""
    report = check_dir(static_export(tmp_path_factory, name), "qnn")
    assert report.passed, report.failures()
    fused = report.placement.fused
    assert fused and all((n.provider == QNN) == on_qnn for n in fused), report.placement.lines()
    if not on_qnn:
        assert all(n.layer and "RNN" in n.reason and "SimpleRNN stays on CPU" in n.reason for n in fused)


@need_qnn
def test_check_and_bench_on_qnn_from_the_command_line(static_gru, tmp_path):
    import shutil

    folder = tmp_path / "gru"
    shutil.copytree(static_gru, folder)
    spec = Manifest.load(folder).data_inputs[0]
    np.save(tmp_path / "x.npy", np.zeros(spec.shape, np.float32))
    r = invoke("run", folder, "-i", tmp_path / "x.npy", "--provider", "qnn")
    assert r.exit_code == 0 and "QNN was never checked on this export" in r.output, r.output
    r = invoke("check", folder, "--provider", "qnn")
    assert r.exit_code == 0, r.output
    assert "placement: QNN runs" in r.output and "PASS" in r.output and "in fp16" in r.output
    entry = Manifest.load(folder).providers[f"{QNN} fp16"]
    assert entry["passed"] and entry["precision"] == "fp16"
    assert entry["versions"]["onnxruntime-qnn"] and entry["versions"]["onnxruntime"]
    assert entry["placement"]["recurrent"] and set(entry["placement"]["recurrent"].values()) == {QNN}
    assert set(entry["max_abs_error"]) == {o.name for o in Manifest.load(folder).outputs}
    r = invoke("run", folder, "-i", tmp_path / "x.npy", "--provider", "qnn")
    assert r.exit_code == 0 and "never checked" not in r.output and "FAILED" not in r.output
    r = invoke("check", folder)  # CPU: the export's own parity, nothing recorded
    assert r.exit_code == 0 and "recorded" not in r.output
    r = invoke("bench", folder, "--provider", "cpu,qnn", "--runs", "3", "--warmup", "1")
    assert r.exit_code == 0, r.output
    assert "fp32@QNN" in r.output and "fastest" in r.output and "placement of fp32@QNN: QNN runs" in r.output
    assert "simulator" in r.output  # its times are not the NPU's, and the table says so


# -- OpenVINO ---------------------------------------------------------------------------------------

@pytest.mark.skipif(not _installed(OPENVINO) or _devices(OPENVINO), reason="OpenVINO is not installed, or it "
                    "has a device here")
def test_openvino_without_a_device_is_one_line(tmp_path):
    with pytest.raises(RnnEdgeError, match="installed but found no device.*fallback=True"):
        load(lstm_folder(tmp_path / "m", activations=False), "openvino")


@need_openvino
def test_openvino_pinned_to_f32_matches_keras(static_gru):
    report = check_dir(static_gru, "openvino")
    assert report.precision == "f32" and report.passed, report.failures()
    assert report.placement.complete, report.placement.lines()


BF16 = {"avx512_bf16", "amx_bf16"} & _cpu_flags()


@need_openvino
@pytest.mark.skipif(not BF16, reason="OpenVINO computes in bf16 only on CPUs with AVX512-BF16 or AMX (no such "
                    "flag in /proc/cpuinfo here), so its f32 pin changes nothing to see")
def test_openvino_in_bf16_fails_parity_at_its_tolerance(static_gru):
    """Without the f32 pin OpenVINO computes in bf16 on such CPUs: 1e-3 to 1e-2 off, beyond its tolerance."""
    report = check_dir(static_gru, "openvino", precision="bf16", tolerance=Tolerance(*tolerance_of(OPENVINO)))
    assert not report.passed


# -- tools/gpu_check.py: the zoo on CUDA and TensorRT (no GPU here: what can be checked on CPU) ------

def _gpu_check():
    import importlib.util
    import sys

    tools = Path(__file__).resolve().parent.parent / "tools"
    sys.path.insert(0, str(tools))
    spec = importlib.util.spec_from_file_location("gpu_check", tools / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_refuses_in_one_line_without_cuda(capsys, monkeypatch):
    import onnxruntime as ort

    gpu_check = _gpu_check()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert gpu_check.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no CUDA provider" in err and "rnnedge[gpu]" in err


def test_gpu_check_arguments_and_shared_code_path(monkeypatch, tmp_path):
    """Where CUDA is there, it runs provider_zoo's code on cuda,tensorrt with Keras beside them,
    inside its time budget, and fails where a check fails."""
    gpu_check = _gpu_check()
    args = gpu_check.parse(["--models", "events-gru", "--batch", "1", "--minutes", "2", "--json",
                            str(tmp_path / "rows.json")])
    assert (args.provider, args.models, args.batch, args.minutes, args.runs) == ("cuda,tensorrt", "events-gru", "1",
                                                                              2.0, 50)
    with pytest.raises(SystemExit):
        gpu_check.parse(["--minutes", "0"])
    seen = {}

    def fake_run(args, baselines=(), deadline=None):
        seen.update(provider=args.provider, baselines=baselines, deadline=deadline)
        return [{"model": "events-gru", "batch": 1, "checks": [{"provider": "CUDAExecutionProvider", "passed": False}]}]

    monkeypatch.setattr(gpu_check, "cuda_missing", lambda: None)
    monkeypatch.setattr(gpu_check.provider_zoo, "run", fake_run)
    assert gpu_check.main(["--minutes", "2", "--json", str(tmp_path / "rows.json")]) == 1
    assert seen["provider"] == "cuda,tensorrt" and seen["baselines"] == ("keras",)
    assert 100 < seen["deadline"] - __import__("time").monotonic() <= 120
    assert json.loads((tmp_path / "rows.json").read_text())[0]["model"] == "events-gru"


def test_triton_python_backend_takes_the_provider_by_name(tmp_path):
    from rnnedge.serve.triton import write_repository

    folder = lstm_folder(tmp_path / "m", activations=False)
    target = write_repository(folder, tmp_path / "repo", backend="python", provider="qnn", precision="fp16")
    config = (target / "config.pbtxt").read_text()
    assert 'key: "rnnedge_provider" value: { string_value: "qnn" }' in config
    assert 'key: "rnnedge_precision" value: { string_value: "fp16" }' in config
    with pytest.raises(RnnEdgeError, match="python backend"):
        write_repository(folder, tmp_path / "repo2", provider="qnn")  # the onnxruntime backend picks its own
    with pytest.raises(RnnEdgeError, match="unknown provider 'npu'"):
        write_repository(folder, tmp_path / "repo3", backend="python", provider="npu")


@need_qnn
def test_providers_logs_never_reach_the_terminal(tmp_path, capfd):
    """The verbose session log read for the reasons, and what the plugin prints at start, stay captured."""
    model = load(lstm_folder(tmp_path / "acts", activations=True), "qnn", explain=True)
    model.run(np.zeros((T, 1, F), np.float32))
    assert "non-default activations" in model.session_log  # captured...
    out, err = capfd.readouterr()
    assert "onnxruntime" not in out + err and "LIBNATIVE" not in out + err, (out + err)[:500]  # ...not shown
