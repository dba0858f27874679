"""Every `rnnedge ...` command a message prints, run in the situation that prints it (issue #28).

The scan finds each backticked `rnnedge ...` in the package's string literals (not docstrings or
comments) and sorts it into one of three tables: RUN (the test here, or elsewhere, that provokes the
message, runs the suggested command and checks it works), CANNOT_RUN (needs what this machine lacks:
a GPU; each one is a skipped test naming the suggestion), NOT_SUGGESTED (help text, or
the command named in "needs the X extra: pip install ..."). A new suggestion fails
`test_every_printed_suggestion_is_run_or_says_why` until it is sorted. tests/test_suggestions.py
checks statically that each one names a real command and options."""

from __future__ import annotations

import ast
import io
import json
import re
import shutil
import subprocess
import sys
import tokenize
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from rnnedge.errors import RnnEdgeError
from tests.helpers import invoke, tiny_gru_exports

ROOT = Path(__file__).resolve().parent.parent
EXPORTED = ROOT / "exported"
COMMAND = re.compile(r"`rnnedge ([^`]*)`")
HERE = "tests/test_suggestions_run.py::"
PHRASES = "tests/test_phrases_run.py::"

RUN = {  # (file, suggestion) -> the test that runs it where it is printed
    ("rnnedge/bench/candidates.py", "quantize {folder} --variants {','.join(missing)}"):
        "tests/test_combine.py::test_bench_missing_variant_suggestion_works",
    **{(f, "export"): HERE + "test_export_for_what_is_not_an_export_folder" for f in
       ("rnnedge/check/golden.py", "rnnedge/manifest.py", "rnnedge/serve/ort.py")},
    **{(f, "export --streaming"): HERE + "test_export_streaming_for_what_cannot_stream" for f in
       ("rnnedge/bench/run.py", "rnnedge/runtime/signature.py", "rnnedge/serve/loadtest.py",
        "rnnedge/serve/triton.py")},
    **{(f, q): HERE + "test_quantize_for_a_missing_variant" for f, q in
       (("rnnedge/runtime/model.py", "quantize {folder}"), ("rnnedge/serve/netron.py", "quantize"),
        ("rnnedge/web/site.py", "quantize"))},
    ("rnnedge/pipeline/target.py", "targets DIR"): HERE + "test_targets_for_an_unknown_target",
    ("rnnedge/preflight.py", "targets DIR"): HERE + "test_targets_for_an_unknown_target",
    ("rnnedge/preflight.py", "zoo"): HERE + "test_zoo_for_a_missing_model_file",
    ("rnnedge/serve/server.py", "triton DIR --out {repo}"): HERE + "test_triton_for_a_missing_repository",
    ("rnnedge/serve/triton_model.py", "triton --max-sequences"): HERE + "test_triton_max_sequences",
    ("rnnedge/web/site.py", "web"): HERE + "test_web_site_then_serve",
    ("rnnedge/cli/web.py", "web --out {site} --serve"): HERE + "test_web_site_then_serve",
    **{k: HERE + "test_serve_what_triton_wrote" for k in (
        ("rnnedge/cli/serve.py", "serve {out}"), ("rnnedge/cli/serve.py", "serve"),
        ("rnnedge/serve/client.py", "serve REPO"), ("rnnedge/serve/client.py", "triton"))},
    ("rnnedge/cli/check.py", "check {folder} --provider {label(provider).lower()}"):  # after a run on QNN
        "tests/test_providers.py::test_check_and_bench_on_qnn_from_the_command_line",
}
CANNOT_RUN = {  # (file, suggestion) -> why it is not run here
    ("rnnedge/runtime/targets.py", "bench --provider cuda,tensorrt"): "needs an NVIDIA GPU with TensorRT",
    ("rnnedge/serve/triton_model.py", "serve"): "printed inside tritonserver's python backend only where its stub "
                                                "cannot import rnnedge (a server started by hand, not by `rnnedge "
                                                "serve`, which test_serve_what_triton_wrote runs)",
}
NOT_SUGGESTED = {  # (file, text) -> what it is
    ("rnnedge/cli/common.py", "export"): "help text of DIR",
    ("rnnedge/cli/web.py", "export"): "help text of DIR",
    ("rnnedge/cli/serve.py", "triton"): "help text of REPO; the command named in a 'pip install' line",
    ("rnnedge/cli/serve.py", "view"): "the command named in a 'pip install rnnedge[view]' line",
    ("rnnedge/preflight.py", "export"): "the command named in a 'pip install rnnedge[export]' line",
    ("rnnedge/preflight.py", "demo"): "the command named in a 'pip install' line",
}


def package_sources():
    """(path relative to the repository, its text, the lines that are docstrings) of each module."""
    for path in sorted((ROOT / "rnnedge").rglob("*.py")):
        text = path.read_text()
        docs = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value,
                                                                                                  str):
                docs.update(range(node.lineno, node.end_lineno + 1))
        yield str(path.relative_to(ROOT)), text, docs


def printed_suggestions() -> list[tuple[str, int, str]]:
    """(file, line, text) of each `rnnedge ...` in a string literal that is not a docstring."""
    found = []
    for where, text, docs in package_sources():
        comments = {t.start[0]: t.start[1] for t in tokenize.generate_tokens(io.StringIO(text).readline)
                    if t.type == tokenize.COMMENT}
        for number, line in enumerate(text.splitlines(), 1):
            for m in COMMAND.finditer(line):
                if number not in docs and not (number in comments and m.start() > comments[number]):
                    found.append((where, number, m.group(1)))
    return found


PRINTED = printed_suggestions()


def test_every_printed_suggestion_is_run_or_says_why():
    assert len(PRINTED) >= 35, len(PRINTED)  # 40 in December 2026
    tables = (RUN, CANNOT_RUN, NOT_SUGGESTED)
    for where, number, text in PRINTED:
        homes = [t for t in tables if (where, text) in t]
        assert len(homes) == 1, f"{where}:{number}: `rnnedge {text}` is in {len(homes)} tables; sort it into one"
    keys = {(w, t) for w, _, t in PRINTED}
    assert not set().union(*tables) - keys, f"no longer printed: {set().union(*tables) - keys}"
    for test in set(RUN.values()):
        module, name = test.split("::")
        assert f"def {name}(" in (ROOT / module).read_text(), test


@pytest.mark.parametrize("key", sorted(CANNOT_RUN), ids=[f"{w}:{t}" for w, t in sorted(CANNOT_RUN)])
def test_suggestions_this_machine_cannot_run(key):
    pytest.skip(f"`rnnedge {key[1]}` ({key[0]}) not run: {CANNOT_RUN[key]}")


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """A tiny untrained GRU exported twice through the CLI: "plain" and "streaming" (and its file)."""
    return tiny_gru_exports(tmp_path_factory.mktemp("suggest"), time=None)


def _copy(folder: Path, tmp_path: Path) -> Path:
    shutil.copytree(folder, tmp_path / folder.name)
    return tmp_path / folder.name


def _suggested(message: str, text: str) -> None:
    assert f"`rnnedge {text}" in message, message


def test_export_for_what_is_not_an_export_folder(exports, tmp_path):
    """Each "expected a folder written by `rnnedge export`": the same command on an export works."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "file").write_text("")
    for bad in (tmp_path / "missing", tmp_path / "m.onnx", tmp_path / "file", tmp_path / "empty"):
        result = invoke("check", bad)
        assert result.exit_code == 1 and "`rnnedge export`" in result.output, result.output
    nogolden = _copy(exports["plain"], tmp_path)
    (nogolden / "golden.npz").unlink()
    for command, extra in (("check", ("--no-verify",)), ("ort", ())):
        result = invoke(command, nogolden, *extra)
        assert result.exit_code == 1 and "`rnnedge export`" in result.output, (command, result.output)
        folder = _copy(exports["plain"], tmp_path / command)
        result = invoke(command, folder)
        if result.exit_code == 1 and "pip install" in result.output:
            continue  # the ort extra is not installed: check alone
        assert result.exit_code == 0, (command, result.output)


def test_export_streaming_for_what_cannot_stream(exports, tmp_path):
    """`rnnedge export --streaming` where a non-streaming export is streamed (runtime, bench, the load
    test) or a manifest lost its state inputs (triton): the re-export streams, benches, and serves."""
    from rnnedge.manifest import Manifest
    from rnnedge.runtime import load
    from rnnedge.serve.loadtest import load_test
    from rnnedge.serve.triton import RepositoryOptions, model_config

    plain, streaming = exports["plain"], exports["streaming"]
    with pytest.raises(RnnEdgeError) as err:
        load(plain).stream()
    _suggested(str(err.value), "export --streaming")
    result = invoke("bench", plain, "--stream", "--runs", 3)
    assert result.exit_code == 1, result.output
    _suggested(result.output, "export --streaming")
    with pytest.raises(RnnEdgeError) as err:
        load_test(plain, "http://127.0.0.1:1")
    _suggested(str(err.value), "export --streaming")
    broken = Manifest.load(streaming)
    broken.inputs = [t for t in broken.inputs if t.role != "state"]
    with pytest.raises(RnnEdgeError) as err:
        model_config(broken, RepositoryOptions(name="m"))
    _suggested(str(err.value), "export --streaming")

    x = np.random.default_rng(0).normal(size=(1, 6, 3)).astype(np.float32)
    whole = load(streaming).run(x)
    stream = load(streaming).stream()
    parts = [stream.push(x[:, :3]), stream.push(x[:, 3:])]
    name = next(iter(whole))
    np.testing.assert_allclose(np.concatenate([p[name] for p in parts], axis=1), whole[name], atol=1e-5)
    assert invoke("bench", streaming, "--stream", "--runs", 3).exit_code == 0
    assert "input" in model_config(Manifest.load(streaming), RepositoryOptions(name="m"))
    with pytest.raises(RnnEdgeError) as err:  # past the streaming check: no server at this address
        load_test(streaming, "http://127.0.0.1:1", seconds=1, sequences=1, concurrency=(1,))
    assert "export --streaming" not in str(err.value), err.value


def test_quantize_for_a_missing_variant(exports, tmp_path):
    """A variant the export lacks (runtime.load, rnnedge view, rnnedge web): `rnnedge quantize` adds it."""
    from rnnedge.manifest import Manifest
    from rnnedge.runtime import load
    from rnnedge.serve.netron import view
    from rnnedge.web.site import pick_variant

    folder = _copy(exports["plain"], tmp_path)
    with pytest.raises(RnnEdgeError) as err:
        load(folder, variant="fp16")
    _suggested(str(err.value), f"quantize {folder}")
    with pytest.raises(RnnEdgeError) as err:
        view(folder, "fp16", port=0, browse=False, say=print)
    _suggested(str(err.value), "quantize")
    with pytest.raises(RnnEdgeError) as err:
        pick_variant(Manifest.load(folder), "fp16")
    _suggested(str(err.value), "quantize")
    result = invoke("quantize", folder)
    assert result.exit_code == 0, result.output
    x = np.random.default_rng(0).normal(size=(1, 6, 3)).astype(np.float32)
    fp32, fp16 = load(folder).run(x), load(folder, variant="fp16").run(x)
    assert max(float(np.abs(fp32[k] - fp16[k]).max()) for k in fp32) < 1e-2
    assert pick_variant(Manifest.load(folder), "fp16") == Manifest.load(folder).variants["fp16"]["file"]


def test_targets_for_an_unknown_target(exports, tmp_path):
    result = invoke("export", exports["keras"], "--out", tmp_path / "o", "--target", "nosuch")
    assert result.exit_code == 1, result.output
    _suggested(result.output, "targets DIR")
    folder = _copy(EXPORTED / "airline-gru", tmp_path)
    result = invoke("targets", folder)
    assert result.exit_code == 0 and "CPU" in result.output, result.output


def test_zoo_for_a_missing_model_file(tmp_path):
    result = invoke("export", tmp_path / "nosuch.keras", "--out", tmp_path / "o")
    assert result.exit_code == 1, result.output
    _suggested(result.output, "zoo")
    result = invoke("zoo")
    assert result.exit_code == 0 and "airline-gru" in result.output, result.output


def _triton(*args) -> object:
    result = invoke("triton", *args)
    if result.exit_code == 1 and "pip install" in result.output:
        pytest.skip(f"`rnnedge triton` not run: the serve extra is not installed ({result.output.strip()})")
    assert result.exit_code == 0, result.output
    return result


def test_triton_for_a_missing_repository(tmp_path):
    """serve on a missing or empty repository suggests `rnnedge triton DIR --out REPO`, which writes one
    that passes those checks (the server itself, tritonserver, is not here)."""
    from rnnedge.serve.server import local_server

    repo = tmp_path / "repo"
    for _state in ("missing", "empty"):  # a repository missing, then empty
        with pytest.raises(RnnEdgeError) as err:
            with local_server(repo):
                pass
        _suggested(str(err.value), f"triton DIR --out {repo.resolve()}")
        repo.mkdir(exist_ok=True)
    _triton(EXPORTED / "airline-gru", "--out", repo, "--force")
    assert list(repo.glob("*/config.pbtxt")), list(repo.iterdir())
    with pytest.raises(RnnEdgeError) as err:  # past both checks: tritonserver is what is missing here
        with local_server(repo, timeout=5):
            pass
    assert "rnnedge triton" not in str(err.value), err.value


def test_triton_max_sequences(tmp_path):
    """The python backend's "all sequence slots are taken" says raise `rnnedge triton --max-sequences`:
    the option reaches the model's config."""
    _triton(EXPORTED / "airline-gru", "--out", tmp_path / "r", "--backend", "python", "--max-sequences", 37)
    configs = list((tmp_path / "r").glob("*/config.pbtxt"))
    assert configs and "37" in configs[0].read_text(), configs


def test_web_site_then_serve(exports, tmp_path):
    """Serving a folder that is no site suggests `rnnedge web`; the site it writes is served by the
    command it then prints, `rnnedge web --out SITE --serve` (run until the page is fetched)."""
    from rnnedge.web import serve_site

    with pytest.raises(RnnEdgeError) as err:
        serve_site(tmp_path)
    _suggested(str(err.value), "web")
    site = tmp_path / "site"
    result = invoke("web", exports["plain"], "--out", site)
    if result.exit_code == 1 and "npm" in result.output.lower():
        pytest.skip(f"`rnnedge web` not run: onnxruntime-web is not installed ({result.output.strip()})")
    assert result.exit_code == 0, result.output
    printed = result.output.split("`rnnedge ")[-1].split("`")[0].split()
    assert printed[:2] == ["web", "--out"] and printed[-1] == "--serve", result.output
    server = subprocess.Popen([sys.executable, "-m", "rnnedge", *printed, "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        assert "http://127.0.0.1:" in line, line
        url = line.split("http://")[1].split()[0]
        with urllib.request.urlopen(f"http://{url}site.json", timeout=10) as page:
            assert json.load(page)
    finally:
        server.terminate()
        server.wait(timeout=10)


# "pass --option" and the like: each phrase a message prints, with the test that follows it or why not
PHRASE = re.compile(r"\b(?:pass|with|use|add|try|give) (--[a-z][a-z0-9-]*)")
PHRASES_RUN = {
    ("rnnedge/files.py", "pass --force"): HERE + "test_force_replaces_what_exists",
    ("rnnedge/serve/ort.py", "pass --force"): HERE + "test_force_replaces_what_exists",
    ("rnnedge/web/site.py", "pass --force"): HERE + "test_force_replaces_what_exists",
    ("rnnedge/serve/triton.py", "pass --force"): HERE + "test_force_replaces_what_exists",
    ("rnnedge/manifest.py", "pass --no-verify"): HERE + "test_no_verify_runs_a_changed_folder",
    ("rnnedge/cli/web.py", "pass --out"): HERE + "test_web_out",
    ("rnnedge/preflight.py", "add --static"): HERE + "test_target_static",
    ("rnnedge/pipeline/target.py", "add --static"): HERE + "test_target_static",
    ("rnnedge/runtime/providers.py", "pass --fallback"): HERE + "test_fallback_runs_on_cpu",
    ("rnnedge/serve/triton.py", "pass --backend"): HERE + "test_triton_backend_and_gpu",
    ("rnnedge/serve/triton.py", "pass --gpu"): HERE + "test_triton_backend_and_gpu",
    ("rnnedge/serve/triton.py", "with --tensorrt"): HERE + "test_triton_backend_and_gpu",
    ("rnnedge/bench/candidates.py", "pass --source"): HERE + "test_bench_source",
    ("rnnedge/quantize/int8.py", "pass --data"): HERE + "test_int8_static_setting_data",
    ("rnnedge/bench/run.py", "pass --time"): PHRASES + "test_bench_time_for_a_baseline_of_fixed_length",
    ("rnnedge/bench/run.py", "with --stream"): PHRASES + "test_bench_stream_without_baselines",
    ("rnnedge/exporter/convert/context.py", "pass --allow-loop"):
        PHRASES + "test_allow_loop_for_a_layer_that_cannot_be_fused",
    ("rnnedge/preflight.py", "pass --data"): PHRASES + "test_export_metric_with_data",
    ("rnnedge/preflight.py", "add --quantize"): PHRASES + "test_export_metric_with_data",
    ("rnnedge/runtime/signature.py", "with --static"): PHRASES + "test_runtime_static_sizes",
    ("rnnedge/quantize/folder.py", "pass --data"): (PHRASES + "test_quantize_metric_with_data",  # 2 messages
                                                    PHRASES + "test_quantize_without_the_zoo_with_data"),
    ("rnnedge/quantize/report.py", "pass --data"): PHRASES + "test_quantize_metric_with_data",
    ("rnnedge/serve/netron.py", "pass --variant"): PHRASES + "test_view_another_variant",
    ("rnnedge/serve/server.py", "pass --log"): PHRASES + "test_serve_log_in_a_writable_folder",
    ("rnnedge/tables.py", "with --static"): PHRASES + "test_qnn_static_shapes",
    ("rnnedge/runtime/targets.py", "with --target"): PHRASES + "test_targets_export_with_target",
    ("rnnedge/preflight.py", "pass --no-benchmark"): PHRASES + "test_demo_without_the_plot_extra",
    ("rnnedge/exporter/load/source.py", "pass --unsafe"): "tests/test_cli.py::test_lambda_layer_needs_unsafe",
    ("rnnedge/exporter/load/source.py", "pass --allow-loop"): (  # a subclassed tf_keras SavedModel; a layer
        PHRASES + "test_allow_loop_and_custom_for_tf_keras_savedmodels",
        PHRASES + "test_allow_loop_for_a_layer_that_cannot_be_traced"),
    ("rnnedge/exporter/load/keras2.py", "pass --custom"): PHRASES + "test_custom_for_a_keras2_layer_class",
    ("rnnedge/exporter/load/keras2.py", "pass --allow-loop"):
        PHRASES + "test_allow_loop_for_a_savedmodel_without_keras_metadata",
    ("rnnedge/exporter/fallback.py", "pass --allow-loop"):
        PHRASES + "test_allow_loop_for_a_savedmodel_without_keras_metadata",
    ("rnnedge/runtime/datafiles.py", "with --chunk"): PHRASES + "test_run_chunk_streams_an_input_larger_than_memory",
    ("rnnedge/web/bench.py", "pass --source"): PHRASES + "test_browser_bench_tfjs_with_source",
    ("rnnedge/web/check.py", "use --provider"): PHRASES + "test_browser_check_without_webgpu_uses_wasm",
    ("rnnedge/exporter/load/keras2_files.py", "pass --custom"):
        PHRASES + "test_allow_loop_and_custom_for_tf_keras_savedmodels",
}
PHRASES_NOT_SUGGESTED = {  # (file, phrase) -> what it is: words that name an option, not advice to pass it
    ("rnnedge/cli/bench.py", "with --stream"): "help text of --time",
    ("rnnedge/cli/serve.py", "with --gpu"): "help text of --provider",
    ("rnnedge/cli/targets.py", "with --target"): "a record: \"exported with --target qnn, checked then: ...\"",
    ("rnnedge/exporter/load/source.py", "with --custom"): "the manifest's source format: \"tf_keras model with "
                                                           "--custom layer(s) ...\"",
}


def printed_phrases() -> list[tuple[str, int, str]]:
    """(file, line, phrase) of each "pass --option" in a string literal that is not a docstring."""
    found = []
    for where, text, docs in package_sources():
        for number, line in enumerate(text.splitlines(), 1):
            found += [(where, number, m.group(0)) for m in PHRASE.finditer(line)
                      if number not in docs and '"' in line[:m.start()] + line[m.end():]]
    return found


PRINTED_PHRASES = sorted({(w, p) for w, _, p in printed_phrases()})


def test_phrases_run_are_printed():
    assert len(PRINTED_PHRASES) >= 30, len(PRINTED_PHRASES)
    tables = (PHRASES_RUN, PHRASES_NOT_SUGGESTED)
    stale = set().union(*tables) - set(PRINTED_PHRASES)
    assert not stale, f"no longer printed: {stale}"
    assert not set(PHRASES_RUN) & set(PHRASES_NOT_SUGGESTED), set(PHRASES_RUN) & set(PHRASES_NOT_SUGGESTED)
    for test in {t for tests in PHRASES_RUN.values() for t in ((tests,) if isinstance(tests, str) else tests)}:
        module, name = test.split("::")
        assert f"def {name}(" in (ROOT / module).read_text(), test


def test_every_printed_phrase_is_followed_or_says_why():
    """A new "pass --option" fails here until a test reaches its message and follows it (PHRASES_RUN), or
    it is sorted as words that are no advice (PHRASES_NOT_SUGGESTED)."""
    unsorted = [k for k in PRINTED_PHRASES if k not in PHRASES_RUN and k not in PHRASES_NOT_SUGGESTED]
    assert not unsorted, f"not followed by a test yet: {unsorted}"


def _refused_then(args: list, says: str, then: list) -> None:
    """`rnnedge ARGS` is refused with a line saying `says`; `rnnedge ARGS THEN` (the advice) works."""
    result = invoke(*args)
    assert result.exit_code == 1 and says in result.output, (args, result.output)
    result = invoke(*args, *then)
    assert result.exit_code == 0, (args, then, result.output)


def test_force_replaces_what_exists(exports, tmp_path):
    folder = _copy(EXPORTED / "airline-gru", tmp_path)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 12, 1), np.float32))
    assert invoke("run", folder, "-i", x, "-o", tmp_path / "y.npz").exit_code == 0
    _refused_then(["run", folder, "-i", x, "-o", tmp_path / "y.npz"], "pass --force", ["--force"])
    _refused_then(["export", exports["keras"], "--out", exports["plain"]], "pass --force", ["--force"])
    assert invoke("web", folder, "--out", tmp_path / "site").exit_code == 0
    _refused_then(["web", folder, "--out", tmp_path / "site"], "pass --force", ["--force"])
    if invoke("ort", folder).exit_code == 0:  # else the ort extra is missing
        _refused_then(["ort", folder], "pass --force", ["--force"])
    _triton(folder, "--out", tmp_path / "repo")
    _refused_then(["triton", folder, "--out", tmp_path / "repo"], "pass --force", ["--force"])


def test_no_verify_runs_a_changed_folder(tmp_path):
    """A file changed after export, or one the manifest records no checksum for: refused, and run
    with --no-verify as the message says."""
    import onnx

    folder = _copy(EXPORTED / "airline-gru", tmp_path)
    model = onnx.load(str(folder / "model.onnx"))
    model.doc_string = "changed after export"
    onnx.save(model, str(folder / "model.onnx"))
    _refused_then(["check", folder], "pass --no-verify", ["--no-verify"])
    folder = _copy(EXPORTED / "airline-gru", tmp_path / "b")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"].pop("model.onnx")  # by hand: Manifest.save records every file's checksum
    (folder / "manifest.json").write_text(json.dumps(manifest))
    _refused_then(["check", folder], "pass --no-verify", ["--no-verify"])


def test_web_out(tmp_path):
    folder = EXPORTED / "airline-gru"
    _refused_then(["web", folder], "pass --out", ["--out", tmp_path / "site"])


def test_target_static(exports, tmp_path):
    """--target qnn on a model whose time axis is free says add --static time=T, which exports."""
    _refused_then(["export", exports["keras"], "--out", tmp_path / "q", "--target", "qnn"], "add --static",
                  ["--static", "time=6"])


def test_fallback_runs_on_cpu(tmp_path):
    """A provider this machine cannot start: `run` says pass --fallback, which runs on CPU."""
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 12, 1), np.float32))
    args = ["run", EXPORTED / "airline-gru", "-i", x, "--provider", "tensorrt"]
    if invoke(*args).exit_code == 0:
        pytest.skip("'pass --fallback' not run: TensorRT starts on this machine")
    with pytest.warns(RuntimeWarning, match="falling back to CPUExecutionProvider"):
        _refused_then(args, "pass --fallback", ["--fallback"])


def test_triton_backend_and_gpu(tmp_path):
    """--provider with the onnxruntime backend says pass --backend python; --tensorrt alone says pass
    --gpu --backend onnxruntime: both write a repository (whose configs Triton's schema accepts)."""
    folder = EXPORTED / "airline-gru"
    _triton(folder, "--out", tmp_path / "probe")
    _refused_then(["triton", folder, "--out", tmp_path / "a", "--provider", "cpu"], "pass --backend python",
                  ["--backend", "python"])
    _refused_then(["triton", folder, "--out", tmp_path / "b", "--tensorrt"], "pass --gpu --backend onnxruntime",
                  ["--gpu", "--backend", "onnxruntime"])
    assert "tensorrt" in next((tmp_path / "b").glob("*/config.pbtxt")).read_text()


def test_bench_source(exports, tmp_path):
    """The source model moved away: bench's Keras baseline says pass --source FILE, which times it."""
    folder = _copy(exports["plain"], tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["source"] = {**manifest["source"], "name": "moved.keras", "path": str(tmp_path / "moved.keras")}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    _refused_then(["bench", folder, "--baseline", "keras", "--runs", 2, "--warmup", 1], "pass --source",
                  ["--source", exports["keras"]])


def test_int8_static_setting_data(tmp_path):
    """A static int8 setting without calibration data says pass --data with typical inputs, which quantizes."""
    folder = _copy(EXPORTED / "airline-gru", tmp_path)
    data = tmp_path / "typical.npz"
    np.savez(data, window=np.random.default_rng(0).normal(size=(16, 12, 1)).astype(np.float32))
    _refused_then(["quantize", folder, "--variants", "int8", "--int8", "static-7bit"], "pass --data",
                  ["--data", data])
    assert json.loads((folder / "manifest.json").read_text())["variants"]["int8"]


def test_serve_what_triton_wrote(tmp_path):
    """`rnnedge triton` says serve the onnxruntime backend's repository elsewhere, and for `rnnedge serve`
    write it with --backend python; that one is served by the `rnnedge serve REPO` it prints (run until
    stopped). A Triton URL off this machine says start one with `rnnedge serve REPO`: the loopback one
    is load-tested. A model on the server that is not the export's says serve a repository written from
    this export (`rnnedge triton`): the export's own entry is load-tested."""
    import signal
    import urllib.request

    from rnnedge.serve.client import parse_url
    from rnnedge.serve.server import find_tritonserver, free_ports

    try:
        find_tritonserver()
    except RnnEdgeError as e:
        pytest.skip(f"`rnnedge serve` not run: tritonserver is not here ({e})")
    result = _triton(EXPORTED / "airline-gru", "--out", tmp_path / "ort")
    assert "for `rnnedge serve`, write it with --backend python" in result.output, result.output
    repo = tmp_path / "repo"
    _triton(EXPORTED / "events-gru", "--out", repo, "--backend", "python")
    result = _triton(EXPORTED / "airline-gru", "--out", repo, "--backend", "python")
    printed = result.output.split("`rnnedge ")[-1].split("`")[0].split()
    assert printed == ["serve", str(repo)], result.output
    http, grpc = free_ports(2)
    server = subprocess.Popen([sys.executable, "-m", "rnnedge", *printed, "--http-port", str(http), "--grpc-port",
                               str(grpc)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        line = server.stdout.readline()
        assert line.startswith(f"serving {repo}"), line + (server.stdout.read() if server.poll() is not None else "")
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=10) as reply:
            assert reply.status == 200
        with pytest.raises(RnnEdgeError) as err:
            parse_url(f"grpc://10.1.2.3:{grpc}")
        _suggested(str(err.value), "serve REPO")
        load = ["--triton", f"grpc://127.0.0.1:{grpc}", "--concurrency", "1", "--sequences", "2", "--chunks", "2",
                "--seconds", "1"]
        result = invoke("bench", EXPORTED / "airline-gru", *load)
        assert result.exit_code == 0, result.output
        result = invoke("bench", EXPORTED / "events-gru", *load, "--triton-model", "airline-gru")
        assert result.exit_code == 1, result.output
        _suggested(result.output, "triton")
        result = invoke("bench", EXPORTED / "events-gru", *load)
        assert result.exit_code == 0, result.output
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.returncode == 0, server.stdout.read()
