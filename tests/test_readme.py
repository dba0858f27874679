"""The README and every docs/*.md page, walked as a new user would: every command and code block in
them runs as written (with `--runs 5 --warmup 1` added to `rnnedge bench`, and a short load test for
`bench --triton`, so timing stays short), the runtime-only ones in a process where TensorFlow, Keras
and tf2onnx cannot be imported. `rnnedge serve` runs for real in the background for the rest of its
block (and for the TritonRunner example of the same page), on free ports that replace the pages'
8000 and 8001 in what follows. Each page runs under the same rules: a line that cannot run here
(minutes of training, installing packages) matches a rule in SKIP with its reason, a block skipped
says why, and any other line added to a page is run."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rnnedge.cli import app
from tests.blocking import BLOCK_TENSORFLOW

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]  # each page's examples run the same way, with the same rules

# the subprocesses run in the user's folder: import this checkout's rnnedge, as the tests do
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


# (pattern a command line matches, why it is not run here)
SKIP = [
    (r"^make demo\b", "trains all eighteen zoo models for minutes; test_cli.py checks what the demo prints"),
    (r"^make test\b", "is this test suite"),
    (r"^rnnedge demo\b", "trains the zoo for minutes (what make demo runs)"),
    (r"^pip install\b", "changes the environment; the runtime-only commands run here with TensorFlow blocked"),
]
NEEDS_TENSORFLOW = (r"^rnnedge export\b", r"--baseline\b")  # the rest must run without TensorFlow
SERVE = r"^rnnedge serve\b"
README_HTTP, README_GRPC = "127.0.0.1:8000", "127.0.0.1:8001"  # `rnnedge serve`'s default ports, in the README
TRITON_LOAD_TEST = ["--concurrency", "1,2", "--sequences", "4", "--chunks", "2", "--seconds", "10"]


def no_server() -> str | None:
    """Why no tritonserver can be started here, or None."""
    if importlib.util.find_spec("tritonclient") is None:
        return "needs the serve extra (tritonclient), not installed here"
    if importlib.util.find_spec("pytriton") is None:
        return "needs tritonserver (the nvidia-pytriton wheel), not installed here"
    return None


def page_name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def blocks(page: Path) -> list[tuple[str, int, str, str]]:
    """(page, line, language, text) of every fenced block of a page."""
    text = page.read_text()
    return [(page_name(page), text[: m.start()].count("\n") + 1, m.group(1), m.group(2))
            for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)]


def commands(text: str) -> list[str]:
    """Command lines of a bash block: comments dropped, indented lines joined to the one above."""
    out: list[str] = []
    for raw in text.splitlines():
        line = re.sub(r"(^|\s+)#.*$", "", raw).rstrip()
        if not line.strip():
            continue
        if raw[:1].isspace() and out:
            out[-1] += " " + line.strip()
        else:
            out.append(line.strip())
    return out


def skip_reason(command: str) -> str | None:
    return next((why for pattern, why in SKIP if re.search(pattern, command)), None)


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """A user's folder: model.keras (a GRU with a dynamic time axis), x.npy for it, and the committed
    exports the README names (exported/events-gru, exported/airline-gru, exported/kws-gru, exported/kws-crnn:
    its block runs once `make exported` has written it)."""
    import keras

    root = tmp_path_factory.mktemp("readme")
    # big enough that its int8 variant is smaller than fp32 (rnnedge keeps no int8 that is not)
    model = keras.Sequential([keras.Input((None, 4)), keras.layers.GRU(48), keras.layers.Dense(2)])
    model.save(root / "model.keras")
    np.save(root / "x.npy", np.ones((1, 5, 4), "float32"))
    for name in ("events-gru", "airline-gru", "kws-gru", "kws-crnn"):
        if (ROOT / "exported" / name).is_dir():
            shutil.copytree(ROOT / "exported" / name, root / "exported" / name)
    return root, model


@pytest.fixture
def workdir(user_folder, tmp_path):
    """A fresh copy of the user's folder per block: each section of the README is read on its own."""
    root, model = user_folder
    shutil.copytree(root, tmp_path / "user")
    return tmp_path / "user", model


def _argv(command: str) -> list[str]:
    """An rnnedge command's arguments, optional parts in [brackets] left out."""
    argv = shlex.split(re.sub(r"\s*\[[^\]]*\]", "", command))
    assert argv[0] == "rnnedge", f"not an rnnedge command: {command}"
    if argv[1] != "bench":
        return argv[1:]
    return argv[1:] + (TRITON_LOAD_TEST if "--triton" in argv else ["--runs", "5", "--warmup", "1"])


def _runtime_only(argvs: list[list[str]], cwd: Path) -> None:
    """Run CLI commands in a fresh process where TensorFlow cannot be imported."""
    code = BLOCK_TENSORFLOW + (
        "import json\n"
        "from typer.testing import CliRunner\n"
        "from rnnedge.cli import app\n"
        f"for argv in json.loads({json.dumps(json.dumps(argvs))}):\n"
        "    r = CliRunner().invoke(app, argv)\n"
        "    assert r.exit_code == 0, (argv, r.output, r.exception)\n"
        "    assert 'Traceback' not in r.output, (argv, r.output)\n"
        "assert not [k for k in sys.modules if k.split('.')[0] in BLOCKED]\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd, env=ENV)
    assert done.returncode == 0 and "ok" in done.stdout, (done.stdout + done.stderr)[-2000:]


@contextlib.contextmanager
def served(command: str, cwd: Path):
    """The README's `rnnedge serve REPO`, run for real in the background (TensorFlow blocked) on free
    ports: other runs on this machine may hold the README's 8000 and 8001. Yields (a function that
    rewrites the README's addresses to the server's, REPO). Stopped with Ctrl-C, as the README says,
    which ends it cleanly."""
    from rnnedge.serve.server import free_port

    http, grpc = free_port(), free_port()
    argv = _argv(command) + ["--http-port", str(http), "--grpc-port", str(grpc)]
    code = BLOCK_TENSORFLOW + f"sys.argv = ['rnnedge', *{argv!r}]\nfrom rnnedge.entry import main\nmain()\n"
    log = cwd / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=ENV)
    try:
        deadline = time.monotonic() + 180  # a bound only: `rnnedge serve` itself gives up after 60 s
        while "serving" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert f"http://127.0.0.1:{http}  grpc://127.0.0.1:{grpc}" in log.read_text(), log.read_text()
        yield (lambda text: text.replace(README_HTTP, f"127.0.0.1:{http}").replace(README_GRPC, f"127.0.0.1:{grpc}"),
               cwd / argv[1])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.terminate()  # `rnnedge serve` stops its server on SIGTERM too
            proc.wait(timeout=60)
    assert proc.returncode == 0 and "stopping" in log.read_text(), (proc.returncode, log.read_text())
    assert "Traceback" not in log.read_text(), log.read_text()


def _curl(command: str, repo: Path) -> None:
    """The README's curl call answers JSON naming the model's outputs, with the values rnnedge's
    runtime gives the request's input (the export the repository serves)."""
    argv = shlex.split(command)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (command, done.stderr)
    answer = json.loads(done.stdout)
    request = json.loads(argv[argv.index("-d") + 1])
    model = re.search(r"/v2/models/([^/]+)/infer", command).group(1)
    assert answer["model_name"] == model and "error" not in answer, answer
    import rnnedge

    local = rnnedge.load(repo / model / "1" / "export", "cpu")
    feeds = {i["name"]: np.array(i["data"], np.float32).reshape(i["shape"]) for i in request["inputs"]}
    want = local.run(**feeds)
    assert sorted(o["name"] for o in answer["outputs"]) == sorted(s.name for s in local.manifest.data_outputs), answer
    for o in answer["outputs"]:
        got = np.array(o["data"], np.float32).reshape(o["shape"])
        np.testing.assert_allclose(got, want[o["name"]], atol=1e-5, err_msg=o["name"])


def _run_commands(cmds: list[str], root: Path, skipped: list[str]) -> int:
    """Run a block's commands that need no server: those needing TensorFlow in this process, in order
    (the exports the others read come first), then the rest in one process without TensorFlow.
    Commands that cannot run here are added to `skipped` with their reason; returns how many ran."""
    with_tf, without_tf = [], []
    for command in cmds:
        why = skip_reason(command)
        if why is None and " triton " in f" {command} " and importlib.util.find_spec("tritonclient") is None:
            why = "needs the serve extra (tritonclient), not installed here"
        if why:
            skipped.append(f"{command}: {why}")
        elif any(re.search(p, command) for p in NEEDS_TENSORFLOW):
            with_tf.append(_argv(command))
        else:
            without_tf.append(_argv(command))
    for argv in with_tf:
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 0, (argv, result.output, result.exception)
        assert not re.search(r"Traceback|absl|WARNING", result.output), (argv, result.output)
    if without_tf:
        _runtime_only(without_tf, root)
    return len(with_tf) + len(without_tf)


def serve_block(page: str, before_line: int) -> list[str]:
    """The commands of the last bash block of `page` above `before_line` that starts a server."""
    found = [b for b in BLOCKS if b[0] == page and b[1] < before_line and b[2] == "bash"
             and any(re.search(SERVE, c) for c in commands(b[3]))]
    assert found, f"{page}:{before_line}: no `rnnedge serve` block above this example"
    return commands(found[-1][3])


BLOCKS = [b for page in PAGES for b in blocks(page)]


def test_every_page_has_examples_to_run():
    """The parametrization below covers the README and each docs page (a page moved or renamed is still walked)."""
    assert (ROOT / "docs").is_dir() and len(PAGES) > 1
    assert {page_name(p) for p in PAGES} >= {"README.md", "docs/commands.md", "docs/python.md"}
    assert {b[0] for b in BLOCKS} >= {"README.md", "docs/commands.md", "docs/python.md", "docs/serving.md"}


@pytest.mark.parametrize("page,line,language,text", BLOCKS, ids=[f"{b[0]}-line-{b[1]}" for b in BLOCKS])
def test_readme_block_runs_as_written(page, line, language, text, workdir, monkeypatch):
    root, model = workdir
    monkeypatch.chdir(root)
    if language == "":
        pytest.skip("a diagram (the code layout), not code")
    if language == "js":
        assert page == "docs/browser.md", f"{page}:{line}: tests/test_web.py runs docs/browser.md's JavaScript only"
        pytest.skip("JavaScript: tests/test_web.py runs it in Chromium")
    if language == "python" and "TritonRunner" in text:
        if no_server():
            pytest.skip(no_server())
        cmds = serve_block(page, line)  # the README's own commands write the repository and serve it
        at = next(k for k, c in enumerate(cmds) if re.search(SERVE, c))
        skipped: list[str] = []
        assert _run_commands(cmds[:at], root, skipped) and not skipped, skipped
        # chunk1, chunk2: a golden sequence of the export; the stream's result must be Keras' for it
        setup = ("from rnnedge.check import compare, read_golden\n"
                 "case, inputs, expected = read_golden('exported/airline-gru')[0]\n"
                 "chunk1, chunk2 = inputs['window'][:, :5], inputs['window'][:, 5:]\n")
        check = ("\nparity = compare(case, {'next_month': expected['next_month']}, {'next_month': y})\n"
                 "assert parity, parity\n")
        with served(cmds[at], root) as (address, _):
            code = BLOCK_TENSORFLOW + setup + address(text) + check + (
                "assert not [k for k in sys.modules if k.split('.')[0] in BLOCKED]\nprint('ok')\n")
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                  cwd=root, env=ENV)
            assert done.returncode == 0 and "ok" in done.stdout, (done.stdout + done.stderr)[-2000:]
        return
    if language == "python":
        export_part, _, runtime_part = text.partition("# run (numpy + onnxruntime only)")
        exec(compile(export_part, f"{page}:{line}", "exec"), {"keras_model": model})  # noqa: S102
        setup = ("import numpy as np\n"
                 "x = np.zeros((1, 20, 40), np.float32)\n"  # exported/events-gru: frames [batch, time, 40]
                 "chunks = [np.zeros((1, k, 40), np.float32) for k in (1, 3, 5)]\n")
        code = BLOCK_TENSORFLOW + "import rnnedge\n" + setup + runtime_part + (
            "\nassert not [k for k in sys.modules if k.split('.')[0] in BLOCKED]\nprint('ok')\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root,
                              env=ENV)
        assert done.returncode == 0 and "ok" in done.stdout, (done.stdout + done.stderr)[-2000:]
        return
    assert language == "bash", f"{page}:{line}: a ```{language} block this test cannot run"
    skipped: list[str] = []
    cmds = commands(text)
    at = next((k for k, c in enumerate(cmds) if re.search(SERVE, c)), len(cmds))
    ran = _run_commands(cmds[:at], root, skipped)
    if at < len(cmds) and no_server():
        skipped += [f"{c}: {no_server()}" for c in cmds[at:]]
    elif at < len(cmds):
        with served(cmds[at], root) as (address, repo):  # the rest of the block talks to it
            ran += 1
            rest = [address(c) for c in cmds[at + 1:]]
            curls = [c for c in rest if re.search(r"^curl\b", c)]
            ran += _run_commands([c for c in rest if c not in curls], root, skipped)
            for command in curls:
                if shutil.which("curl") is None:
                    skipped.append(f"{command}: curl is not installed here")
                    continue
                _curl(command, repo)
                ran += 1
    if skipped and not ran:
        pytest.skip("; ".join(skipped))
