"""The README, walked as a new user would: every command and code block in it runs as written
(with `--runs 5 --warmup 1` added to `rnnedge bench` so timing stays short), the runtime-only ones
in a process where TensorFlow, Keras and tf2onnx cannot be imported. A line that cannot run here
(a server, minutes of training, installing packages) matches a rule in SKIP with its reason; any
other line that is added to the README is run."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rnnedge.cli import app
from tests.blocking import BLOCK_TENSORFLOW

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# the subprocesses run in the user's folder: import this checkout's rnnedge, as the tests do
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


# (pattern a command line matches, why it is not run here)
SKIP = [
    (r"^make demo\b", "trains all fifteen zoo models for minutes; test_cli.py checks what the demo prints"),
    (r"^make test\b", "is this test suite"),
    (r"^rnnedge demo\b", "trains the zoo for minutes (what make demo runs)"),
    (r"^rnnedge serve\b", "runs tritonserver in the foreground; tests/test_serve.py starts a real one"),
    (r"--triton\b", "needs a running tritonserver; tests/test_serve.py load-tests a real one"),
    (r"^curl\b", "needs a running tritonserver"),
    (r"^pip install\b", "changes the environment; the runtime-only commands run here with TensorFlow blocked"),
]
NEEDS_TENSORFLOW = (r"^rnnedge export\b", r"--baseline\b")  # the rest must run without TensorFlow


def blocks() -> list[tuple[int, str, str]]:
    """(line, language, text) of every fenced block."""
    text = README.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1), m.group(2))
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
    exports the README names (exported/events-gru, exported/airline-gru)."""
    import keras

    root = tmp_path_factory.mktemp("readme")
    model = keras.Sequential([keras.Input((None, 4)), keras.layers.GRU(8), keras.layers.Dense(2)])
    model.save(root / "model.keras")
    np.save(root / "x.npy", np.ones((1, 5, 4), "float32"))
    for name in ("events-gru", "airline-gru"):
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
    return argv[1:] + (["--runs", "5", "--warmup", "1"] if argv[1] == "bench" else [])


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


BLOCKS = blocks()


@pytest.mark.parametrize("line,language,text", BLOCKS, ids=[f"README-line-{b[0]}" for b in BLOCKS])
def test_readme_block_runs_as_written(line, language, text, workdir, monkeypatch):
    root, model = workdir
    monkeypatch.chdir(root)
    if language == "":
        pytest.skip("a diagram (the code layout), not code")
    if language == "python":
        if "TritonRunner" in text:
            pytest.skip("streams through a running tritonserver; tests/test_serve.py does this against a real one")
        export_part, _, runtime_part = text.partition("# run (numpy + onnxruntime only)")
        exec(compile(export_part, f"README.md:{line}", "exec"), {"keras_model": model})  # noqa: S102
        setup = ("import numpy as np\n"
                 "x = np.zeros((1, 20, 40), np.float32)\n"  # exported/events-gru: frames [batch, time, 40]
                 "chunks = [np.zeros((1, k, 40), np.float32) for k in (1, 3, 5)]\n")
        code = BLOCK_TENSORFLOW + "import rnnedge\n" + setup + runtime_part + (
            "\nassert not [k for k in sys.modules if k.split('.')[0] in BLOCKED]\nprint('ok')\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root, env=ENV)
        assert done.returncode == 0 and "ok" in done.stdout, (done.stdout + done.stderr)[-2000:]
        return
    assert language == "bash", f"README.md:{line}: a ```{language} block this test cannot run"
    skipped, with_tf, without_tf = [], [], []
    for command in commands(text):
        why = skip_reason(command)
        if why is None and " triton " in f" {command} " and importlib.util.find_spec("tritonclient") is None:
            why = "needs the serve extra (tritonclient), not installed here"
        if why:
            skipped.append(f"{command}: {why}")
        elif any(re.search(p, command) for p in NEEDS_TENSORFLOW):
            with_tf.append(_argv(command))
        else:
            without_tf.append(_argv(command))
    for argv in with_tf:  # in order: the exports the runtime-only commands read come first
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 0, (argv, result.output, result.exception)
        assert not re.search(r"Traceback|absl|WARNING", result.output), (argv, result.output)
    if without_tf:
        _runtime_only(without_tf, root)
    if skipped and not (with_tf or without_tf):
        pytest.skip("; ".join(skipped))
