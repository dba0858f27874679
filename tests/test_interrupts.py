"""Ctrl-C where it used to be lost or half-done (issue #28): inside a finalizer (an exception a
signal handler raises there is printed as "Exception ignored" and dropped), swallowed by a library,
and between an output's rename and the record that it was written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rnnedge import files, interrupts

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def ctrl_c_handler():
    """The rnnedge command's SIGINT handler for the test, with interrupts' state restored after."""
    saved = dict(interrupts._state)  # noqa: SLF001 - the test restores what it changed
    previous = signal.signal(signal.SIGINT, interrupts.on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        interrupts._state.clear()
        interrupts._state.update(saved)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)


def test_ctrl_c_inside_a_finalizer_is_raised_after_it():
    """SIGINT delivered while a __del__ runs (as TensorFlow's AtomicFunction.__del__ does under the
    garbage collector): no "Exception ignored", and KeyboardInterrupt comes moments later, outside."""
    code = ("import os, signal, time\n"
            "from rnnedge import interrupts\n"
            "signal.signal(signal.SIGINT, interrupts.on_sigint)\n"
            "class Held:\n"
            "    def __del__(self):\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "        for _ in range(1000): pass  # the handler runs here, inside the finalizer\n"
            "Held()\n"
            "try:\n"
            "    time.sleep(2)\n"
            "    print('not interrupted')\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted outside the finalizer')\n")
    done = _python(code)
    assert done.stdout.strip() == "interrupted outside the finalizer", (done.stdout, done.stderr)
    assert "Exception ignored" not in done.stderr, done.stderr


def test_a_swallowed_ctrl_c_still_ends_the_command_with_130_and_one_line():
    """A command that returns normally although Ctrl-C came (a library caught the KeyboardInterrupt)
    exits 130 with the one line, not 0."""
    code = ("import os, signal, sys\n"
            "from rnnedge import entry\n"
            "import rnnedge.cli\n"
            "def swallowing(**kwargs):\n"
            "    try:\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "        for _ in range(1000): pass\n"
            "    except KeyboardInterrupt:\n"
            "        pass  # what a library may do\n"
            "    print('done')\n"
            "    return 0\n"
            "rnnedge.cli.app = swallowing\n"
            "sys.argv = ['rnnedge', 'zoo']\n"
            "entry.main()\n")
    done = _python(code)
    assert done.returncode == 130, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.strip() == interrupts.INTERRUPTED, done.stderr


def test_serve_ending_on_ctrl_c_keeps_exit_0():
    code = ("import os, signal, sys\n"
            "from rnnedge import entry, interrupts\n"
            "import rnnedge.cli\n"
            "def serving(**kwargs):\n"
            "    try:\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "        for _ in range(1000): pass\n"
            "    except KeyboardInterrupt:\n"
            "        interrupts.handled()\n"
            "    return 0\n"
            "rnnedge.cli.app = serving\n"
            "sys.argv = ['rnnedge', 'serve']\n"
            "entry.main()\n")
    done = _python(code)
    assert done.returncode == 0 and done.stderr == "", (done.returncode, done.stderr)


def test_ctrl_c_right_after_an_output_is_renamed_says_it_was_written(tmp_path, monkeypatch, ctrl_c_handler):
    """The `run -o y.npz` race: Ctrl-C landing just after the rename put y.npz in place. The
    interruption comes once the write is recorded, so the line names the file as written."""
    real = os.replace

    def replace_then_ctrl_c(a, b):
        real(a, b)
        signal.raise_signal(signal.SIGINT)  # handled here, right after the rename

    monkeypatch.setattr(files.os, "replace", replace_then_ctrl_c)
    out = tmp_path / "y.txt"
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_path(out, result=True) as tmp:
            tmp.write_text("whole")
    assert out.read_text() == "whole" and files.last_committed() == out
    assert interrupts.interrupted_line().startswith(f"interrupted after {out} was written")


def test_ctrl_c_inside_a_held_block_comes_when_it_ends(ctrl_c_handler):
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with files.held():
            signal.raise_signal(signal.SIGINT)
            steps.append("after the signal")
        steps.append("after the block")
    assert steps == ["after the signal"]
