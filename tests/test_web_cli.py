"""`rnnedge web` (the site, its refusals) and `rnnedge check --provider wasm` (one browser launch)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from rnnedge.errors import RnnEdgeError
from rnnedge.web import assets
from tests.helpers import invoke

EXPORTED = Path(__file__).resolve().parent.parent / "exported"


def _missing(*needs) -> str | None:
    try:
        for need in needs:
            need()
    except RnnEdgeError as e:
        return str(e)
    return None


needs_npm = pytest.mark.skipif(_missing(assets.ort_dist, assets.node) is not None,
                               reason=f"no onnxruntime-web: {_missing(assets.ort_dist, assets.node)}")


@needs_npm
def test_web_writes_a_static_site_with_the_model_the_module_and_the_demo(tmp_path):
    r = invoke("web", EXPORTED / "kws-gru", "--out", tmp_path / "site", "--variant", "int8")
    assert r.exit_code == 0, r.output
    site = tmp_path / "site"
    info = json.loads((site / "site.json").read_text())
    assert info["model"] == "model.int8.onnx" and info["streaming"] and len(info["golden"]) == 5
    for name in ("index.html", "demo.mjs", "rnnedge.mjs", "manifest.json", "model.int8.onnx",
                 "ort/ort.wasm.min.mjs", "ort/ort-wasm-simd-threaded.wasm"):
        assert (site / name).is_file(), name
    assert "export async function load" in (site / "rnnedge.mjs").read_text()
    again = invoke("web", EXPORTED / "kws-gru", "--out", site)
    assert again.exit_code == 1 and "--force" in again.output


def _export_with(tmp_path, model: onnx.ModelProto | None = None, gate: bool | None = None) -> Path:
    folder = tmp_path / "export"
    shutil.copytree(EXPORTED / "kws-gru", folder)
    if model is not None:
        onnx.save(model, folder / "model.onnx")
    if gate is not None:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["variants"]["int8"]["gate"]["passed"] = gate
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@needs_npm
def test_web_refuses_a_model_with_an_op_onnxruntime_web_lacks_naming_the_op(tmp_path):
    x = helper.make_tensor_value_info("mel", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("keyword", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Mystery", ["mel"], ["keyword"], domain="my.ops")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])
    model.ir_version = 8
    r = invoke("web", _export_with(tmp_path, model), "--out", tmp_path / "site", "--no-verify")
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and "my.ops:Mystery" in r.output and "onnxruntime-web lacks" in r.output
    assert not (tmp_path / "site").exists()


def test_web_ships_only_a_variant_that_passed_its_gate(tmp_path):
    r = invoke("web", _export_with(tmp_path, gate=False), "--out", tmp_path / "site", "--variant", "int8",
               "--no-verify")
    assert r.exit_code == 1 and "failed its accuracy gate" in r.output, r.output


def test_without_a_browser_check_says_so_in_one_line_naming_the_package(monkeypatch):
    monkeypatch.setattr(assets.shutil, "which", lambda name: None)
    r = invoke("check", EXPORTED / "kws-gru", "--provider", "wasm")
    assert r.exit_code == 1 and r.output.count("\n") == 1
    assert "no browser" in r.output and "apt-get install chromium" in r.output


@pytest.mark.skipif(_missing(assets.chromium, assets.ort_dist) is not None, reason="no browser set-up")
def test_check_provider_wasm_replays_the_golden_cases_in_chromium():
    pytest.importorskip("playwright")
    r = invoke("check", EXPORTED / "kws-gru", "--provider", "wasm")
    assert r.exit_code == 0, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("PASS: 13 cases on onnxruntime-web (wasm), Chromium"), last
    assert "streamed in chunks of 3" in r.output


@pytest.mark.skipif(_missing(assets.chromium, assets.ort_dist, assets.tfjs_files) is not None,
                    reason="no browser set-up")
def test_bench_in_the_browser_against_tfjs_with_parity_of_both_against_keras(tmp_path):
    """A tiny Keras model rebuilt for TF.js (GRU reset_after=False, which TF.js loads, and LSTM), timed
    beside the export in one page; both within the usual tolerance of Keras on the timed input."""
    pytest.importorskip("playwright")
    if importlib.util.find_spec("tensorflowjs") is None:
        pytest.skip("the tensorflowjs converter is not installed (make install installs it with --no-deps)")
    import keras

    from rnnedge.pipeline import export

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 6)), keras.layers.GRU(8, reset_after=False, return_sequences=True),
                              keras.layers.LSTM(8), keras.layers.Dense(3, activation="softmax")])
    model.save(tmp_path / "tiny.keras")
    export(tmp_path / "tiny.keras", tmp_path / "tiny", streaming=False)
    r = invoke("bench", tmp_path / "tiny", "--provider", "wasm", "--baseline", "tfjs", "--runs", "5", "--warmup", "1",
               "--json", tmp_path / "rows.json")
    assert r.exit_code == 0, r.output
    rows = {row["candidate"]: row for row in json.loads((tmp_path / "rows.json").read_text())}
    assert set(rows) >= {"rnnedge (onnxruntime-web wasm)", "TensorFlow.js wasm", "TensorFlow.js cpu"}, rows
    for row in rows.values():
        assert row["runs"] >= 5 and row["p50_ms"] > 0 and row["max_abs"] <= 1e-5, row
    assert "faster than TensorFlow.js' fastest backend" in r.output


@needs_npm
def test_a_site_is_served_on_localhost_with_module_and_wasm_types(tmp_path):
    import urllib.request

    from rnnedge.web import serve_site, write_site

    site = write_site(EXPORTED / "events-gru", tmp_path / "site", ops=False)
    server = serve_site(site)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        for path, kind in (("index.html", "text/html"), ("rnnedge.mjs", "text/javascript"),
                           ("ort/ort-wasm-simd-threaded.wasm", "application/wasm")):
            with urllib.request.urlopen(base + path) as reply:
                assert reply.headers["Content-Type"].startswith(kind), (path, reply.headers["Content-Type"])
                assert reply.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    finally:
        server.shutdown()
    with pytest.raises(RnnEdgeError, match="not a site written by `rnnedge web`"):
        serve_site(tmp_path)


def test_the_browsers_bench_refuses_options_it_does_not_take():
    r = invoke("bench", EXPORTED / "kws-gru", "--provider", "wasm", "--batch", "8", "--variants", "int8")
    assert r.exit_code == 1 and r.output.count("\n") == 1
    assert "--batch, --variants: not for the browser's bench" in r.output
    r = invoke("bench", EXPORTED / "kws-gru", "--provider", "wasm", "--baseline", "keras")
    assert r.exit_code == 1 and "the baseline is tfjs" in r.output, r.output
