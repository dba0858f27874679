"""Native log lines are kept off the terminal while a step works, and shown when it fails."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from rnnedge.logs import quiet_native_stderr

REPO = Path(__file__).resolve().parent.parent
TINY = """
import sys, keras
from keras import layers as L
x = L.Input((None, 3), name="x")
keras.Model(x, L.Dense(2, name="y")(L.GRU(4, name="rnn")(x)), name="tiny").save(sys.argv[1])
"""


def test_quiet_native_stderr_hides_a_working_step_and_replays_a_failing_one(capfd):
    with quiet_native_stderr():
        os.write(2, b"I0000 cpu_feature_guard.cc: noise\n")
    assert "noise" not in capfd.readouterr().err
    with pytest.raises(RuntimeError), quiet_native_stderr():
        os.write(2, b"E0000 converter.cc: the real reason\n")
        raise RuntimeError("conversion failed")
    assert "the real reason" in capfd.readouterr().err


NOISY = """
import os, sys
import rnnedge.cli as cli

@cli.app.command("noisy")
def noisy(fail: bool = False):
    os.write(2, b"I0000 00:00 port.cc:153] native noise\\n")
    sys.stderr.write("rnnedge's own line\\n")
    if fail:
        raise RuntimeError("a bug")
    print("done")

from rnnedge.entry import main
sys.argv = ["rnnedge", "noisy", *sys.argv[1:]]
main()
"""


def _noisy(*args):
    return subprocess.run([sys.executable, "-c", NOISY, *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_the_command_holds_native_lines_and_replays_them_before_a_bug_traceback():
    ok = _noisy()
    assert ok.returncode == 0 and ok.stdout.strip() == "done", ok
    assert "native noise" not in ok.stderr and "rnnedge's own line" in ok.stderr, ok.stderr
    bug = _noisy("--fail")
    assert bug.returncode == 1
    assert "native noise" in bug.stderr and "Traceback" in bug.stderr, bug.stderr
    assert bug.stderr.index("native noise") < bug.stderr.index("Traceback")  # the context first


def test_an_export_in_a_terminal_shows_only_rnnedge_lines(tmp_path):
    """A real export under a pseudo-terminal, with oneDNN asked for (TensorFlow prints its lines then,
    whatever TF_CPP_MIN_LOG_LEVEL says, on AVX-512 CPUs at least): every line is rnnedge's."""
    model = tmp_path / "tiny.keras"
    subprocess.run([sys.executable, "-c", TINY, str(model)], check=True, timeout=300, cwd=REPO,
                   env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=str(REPO), TF_ENABLE_ONEDNN_OPTS="1", TERM="xterm")
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its terminal, stdout and stderr alike
        os.chdir(tmp_path)
        os.execve(sys.executable, [sys.executable, "-m", "rnnedge", "export", str(model), "--out", "out"], env)
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    assert os.waitstatus_to_exitcode(status) == 0, text
    rnnedge = ("wrote out:", "input ", "output ", "state ", "fused ", "ok ", "PASS:")  # what an export prints
    assert lines and lines[0].startswith("wrote out:") and lines[-1].startswith("PASS:"), text
    assert all(ln.startswith(rnnedge) for ln in lines), text  # and nothing else: no I0000/E0000/WARNING line


def test_quiet_native_stderr_replays_nothing_when_the_user_interrupts(capfd):
    with pytest.raises(KeyboardInterrupt), quiet_native_stderr():
        os.write(2, b"I0000 port.cc: oneDNN noise\n")
        raise KeyboardInterrupt
    assert "oneDNN noise" not in capfd.readouterr().err
