"""Ctrl-C where it used to be lost or half-done (issue #28): inside a finalizer or a weakref callback
(an exception a signal handler raises there is printed as "Exception ignored" and dropped), swallowed
by a library (the command then went on and put its result in place), between an output's rename and
the record that it was written, and while the process exits after its command (CPython's shutdown
ignored it: exit 0). `tools/ctrl_c_trial.py` sends Ctrl-C over real exports and commands."""

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
    saved = [(state, dict(state)) for state in (interrupts._state, files._HELD)]  # noqa: SLF001 - restored after
    results = list(files._COMMITTED)  # what earlier tests in this process wrote is not this command's
    files._COMMITTED.clear()
    previous = signal.signal(signal.SIGINT, interrupts.on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        for state, was in saved:
            state.clear()
            state.update(was)
        files._COMMITTED.clear()
        files._COMMITTED.extend(results)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)


def _stopped_before_printing(code: str) -> None:
    """`code` defines `command` and is run as rnnedge's entry runs a command: exit 130, nothing printed but
    the one line."""
    done = _python(code + "rnnedge.cli.app = command\nsys.argv = ['rnnedge', 'zoo']\nentry.main()\n")
    assert done.returncode == 130 and done.stdout == "", (done.returncode, done.stdout, done.stderr)
    assert done.stderr.strip() == interrupts.INTERRUPTED, done.stderr


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


def test_ctrl_c_inside_a_weakref_callback_is_raised_after_it():
    """SIGINT handled inside a weakref callback (TensorFlow registers many; not a __del__, so not
    recognised as a finalizer by its frames): no "Exception ignored", and the command stops there
    instead of running on to its end."""
    code = ("import os, signal, sys, time, weakref\n"
            "from rnnedge import entry\n"
            "import rnnedge.cli\n"
            "class Thing: pass\n"
            "def command(**kwargs):\n"
            "    def callback(ref):\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "        for _ in range(1000): pass  # the handler runs here, inside the callback\n"
            "    thing = Thing()\n"
            "    ref = weakref.ref(thing, callback)\n"
            "    del thing\n"
            "    time.sleep(5)\n"
            "    print('not interrupted')\n"
            "    return 0\n")
    _stopped_before_printing(code)


def test_ctrl_c_while_the_process_exits_after_its_command_is_130_and_one_line(tmp_path):
    """Ctrl-C after the command wrote its result, while the process exits (TensorFlow's shutdown
    took most of a second of an export, where CPython ignores signals): exit 130 and the one line,
    which says the result was written and is whole, not exit 0 as if Ctrl-C never came."""
    out = tmp_path / "y.txt"
    code = ("import atexit, os, signal, sys, time\n"
            "from rnnedge import entry, files\n"
            "import rnnedge.cli\n"
            "def command(**kwargs):\n"
            f"    with files.atomic_path(r'{out}', result=True) as tmp:\n"
            "        tmp.write_text('whole')\n"
            "    print('done', flush=True)\n"
            "    def exiting():  # work left for the exit, as TensorFlow's is; Ctrl-C lands in it\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "        time.sleep(5)\n"
            "        print('exited on its own', flush=True)\n"
            "    atexit.register(exiting)\n"
            "    return 0\n"
            "rnnedge.cli.app = command\n"
            "sys.argv = ['rnnedge', 'run']\n"
            "entry.main()\n")
    done = _python(code)
    assert done.returncode == 130 and done.stdout.strip() == "done", (done.returncode, done.stdout, done.stderr)
    assert done.stderr.strip() == f"interrupted after {out} was written (it is complete); nothing else was changed", \
        done.stderr
    assert out.read_text() == "whole"


def test_no_result_is_put_in_place_after_a_swallowed_ctrl_c(tmp_path, ctrl_c_handler):
    """A library swallowed the KeyboardInterrupt and the command went on: its output file and its
    export folder are not renamed into place (the export used to finish and appear after Ctrl-C),
    and nothing is left beside them."""
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        pass  # what a library may do
    out = tmp_path / "y.txt"
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_path(out, result=True) as tmp:
            tmp.write_text("whole")
    folder = tmp_path / "exp"
    scratch = files.temp_dir(folder)
    (scratch / "manifest.json").write_text("{}")
    with pytest.raises(KeyboardInterrupt):
        files.replace_dir(scratch, folder)
    files.discard_dir(scratch)  # as the export does on any exception
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_ctrl_c_in_the_interpreters_teardown_is_never_a_kill_without_a_line():
    """A finalizer that runs in the interpreter's teardown (where CPython has handed SIGINT back to
    its default action: TensorFlow's objects, 0.9 s of an export) and Ctrl-C landing in it: the
    process exits 130 with the one line, or ends before any teardown (0); never killed by the
    signal with nothing said."""
    code = ("import os, signal, sys\n"
            "from rnnedge import entry\n"
            "import rnnedge.cli\n"
            "class Teardown:\n"
            "    def __del__(self):\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "        for _ in range(1000): pass\n"
            "def command(**kwargs):\n"
            "    global kept\n"
            "    kept = Teardown()  # freed when the modules are cleared\n"
            "    kept.me = kept\n"
            "    print('done', flush=True)\n"
            "    return 0\n"
            "rnnedge.cli.app = command\n"
            "sys.argv = ['rnnedge', 'zoo']\n"
            "entry.main()\n")
    done = _python(code)
    assert done.returncode in (0, 130) and done.stdout.strip() == "done", (done.returncode, done.stdout, done.stderr)
    assert done.stderr.strip() == ("" if done.returncode == 0 else interrupts.INTERRUPTED), done.stderr


def test_an_interrupted_command_still_removes_its_temporary_files(tmp_path):
    """What a library removes at exit (TensorFlow's autograph writes `__autograph_generated_file*.py`
    to TMPDIR and removes it in an atexit function) is removed when Ctrl-C ends the command too,
    not left behind by the quick exit (seen in the Ctrl-C trial of exports)."""
    scratch = tmp_path / "__generated.py"
    code = ("import atexit, os, signal, sys, time\n"
            "from pathlib import Path\n"
            "from rnnedge import entry\n"
            "import rnnedge.cli\n"
            "def command(**kwargs):\n"
            f"    scratch = Path(r'{scratch}')\n"
            "    scratch.write_text('')\n"
            "    atexit.register(scratch.unlink)\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(5)\n"
            "rnnedge.cli.app = command\n"
            "sys.argv = ['rnnedge', 'zoo']\n"
            "entry.main()\n")
    done = _python(code)
    assert done.returncode == 130 and done.stderr.strip() == interrupts.INTERRUPTED, (done.returncode, done.stderr)
    assert not scratch.exists()


def _ctrl_c_after_each_rename(monkeypatch):
    real = os.replace

    def replace_then_ctrl_c(a, b):
        real(a, b)
        signal.raise_signal(signal.SIGINT)  # handled here, right after the rename

    monkeypatch.setattr(files.os, "replace", replace_then_ctrl_c)


@pytest.mark.parametrize("writer", ["json", "csv", "plot", "check-plot"])
def test_ctrl_c_right_after_bench_or_check_writes_a_file_says_it_was_written(tmp_path, monkeypatch, ctrl_c_handler,
                                                                             writer):
    """`bench --json/--csv/--plot`, `check --plot`: Ctrl-C just after the file is in place says it
    was written (the trial saw "what was being written was discarded" with b.json there, whole); a
    figure is written whole or not at all (matplotlib wrote it in place)."""
    from rnnedge.bench import report, results
    from rnnedge.check.compare import CaseParity, OutputParity, ParityReport
    from rnnedge.check.plot import plot_errors

    if writer.endswith("plot"):
        pytest.importorskip("matplotlib")
    rows = [results.BenchRow("fp32", "cpu", 1, t, 1, 1.0 * t, 1.0 * t, 1.0 * t, 1.0, 1.0) for t in (4, 16)]
    out = tmp_path / f"b.{'png' if writer.endswith('plot') else writer}"
    parity = ParityReport("CPUExecutionProvider", (CaseParity("c", (OutputParity(
        "y", 3e-6, 1e-6, 1e-3, 1e-5, 1e-4, True, "", 4, (0.0, 1e-7, 0.0, 3e-6)),), 4),))
    write = {"json": lambda: results.write_json(rows, out), "csv": lambda: results.write_csv(rows, out),
             "plot": lambda: report.plot(rows, out), "check-plot": lambda: plot_errors(parity, out)}[writer]
    _ctrl_c_after_each_rename(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        write()
    assert out.stat().st_size > 0 and [p.name for p in tmp_path.iterdir()] == [out.name]
    assert interrupts.interrupted_line() == f"interrupted after {out} was written (it is complete); " \
        "nothing else was changed"


def test_the_line_names_every_result_written(tmp_path, ctrl_c_handler):
    first, second = tmp_path / "b.json", tmp_path / "b.csv"
    for path in (first, second):
        files.write_text(path, "whole", result=True)
    assert interrupts.interrupted_line() == f"interrupted after {first} and {second} were written (they are " \
        "complete); nothing else was changed"


def test_the_exit_after_a_command_waits_for_its_threads_and_not_for_idle_pools():
    """The command's own exit (without CPython's shutdown) does what that shutdown does with threads:
    a thread that is not a daemon finishes its work; a thread pool left open is told to stop
    instead of being waited for forever."""
    code = ("import concurrent.futures, sys, threading, time\n"
            "from rnnedge import entry\n"
            "import rnnedge.cli\n"
            "def command(**kwargs):\n"
            "    global pool\n"
            "    pool = concurrent.futures.ThreadPoolExecutor(2)  # never shut down\n"
            "    pool.submit(int).result()\n"
            "    threading.Thread(target=lambda: (time.sleep(0.5), print('worker done', flush=True))).start()\n"
            "    return 0\n"
            "rnnedge.cli.app = command\n"
            "sys.argv = ['rnnedge', 'zoo']\n"
            "entry.main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == "worker done", (done.returncode, done.stdout, done.stderr)


def test_ctrl_c_in_the_entrys_own_code_after_the_command_is_one_line(tmp_path):
    """Ctrl-C landing in `rnnedge.entry.main` itself, after the command returned and before the
    handler for the process's end is set (the trial hit it: `run -o` killed by SIGINT with a
    KeyboardInterrupt traceback): 130 and the one line naming the file written."""
    out = tmp_path / "y.txt"
    code = ("import sys\n"
            "from rnnedge import entry, files, interrupts\n"
            "import rnnedge.cli\n"
            "def command(**kwargs):\n"
            f"    with files.atomic_path(r'{out}', result=True) as tmp:\n"
            "        tmp.write_text('whole')\n"
            "    return 0\n"
            "real = entry._ended\n"
            "def ended(code):\n"
            "    interrupts.on_sigint(2, sys._getframe(1))  # Ctrl-C lands in main, between two of its lines\n"
            "    return real(code)\n"
            "entry._ended = ended\n"
            "rnnedge.cli.app = command\n"
            "sys.argv = ['rnnedge', 'run']\n"
            "entry.main()\n")
    done = _python(code)
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert done.stderr.strip() == f"interrupted after {out} was written (it is complete); nothing else was changed", \
        done.stderr


def test_ctrl_c_in_the_entrys_own_code_before_the_command_runs_none_of_it():
    """Ctrl-C noted in `rnnedge.entry.main`'s own code before the command starts (not raised there,
    see above) stops it before it begins, rather than after it ran to its end."""
    code = ("import sys\n"
            "from rnnedge import entry, interrupts\n"
            "import rnnedge.cli\n"
            "def command(**kwargs):\n"
            "    print('the command ran')\n"
            "    return 0\n"
            "def held():\n"
            "    interrupts.on_sigint(2, sys._getframe(1))  # Ctrl-C lands in main, between two of its lines\n"
            "entry.hold_stderr = held\n")
    _stopped_before_printing(code)
