"""Options mean the same in every command they apply to (issue #28): an option several commands take
has one default, or the command whose default differs says why in its own help (EXPLAINED)."""

from __future__ import annotations

import collections
import shutil
import sys
import types
from pathlib import Path

import pytest
import typer

from rnnedge.cli import app

EXPORTED = Path(__file__).resolve().parent.parent / "exported"

AUDITED = ("--provider", "--threads", "--variant", "--variants", "--force", "--no-verify", "--time", "--batch",
           "--precision", "--data", "--metric", "--atol", "--rtol", "--runs", "--port", "--out")
REFERENCE = {"--provider": "check", "--threads": "run", "--atol": "export", "--rtol": "export",
             "--variants": "quantize"}  # whose default the others are compared with (else the most common)
EXPLAINED = {  # (command, option) -> (its default, words its help must hold saying why it differs)
    ("bench", "--provider"): ("cpu", "Default cpu, not auto as in check and run"),
    ("triton", "--provider"): ("", "default: cpu, or cuda with --gpu"),
    ("targets", "--provider"): (None, "default: every one"),
    ("bench", "--threads"): (1, "default 1, not every core as in run"),
    ("triton", "--threads"): (1, "default 1, not every core as in run"),
    ("check", "--atol"): (None, "the provider's"),
    ("check", "--rtol"): (None, "the provider's"),
    ("bench", "--variants"): (None, "default: every one the folder has"),
    ("web", "--port"): (8000, "8000 by default, view's 8080 left free"),
    ("demo", "--out"): (Path("demo-out"), "default demo-out"),
}


def _options() -> dict[str, dict[str, object]]:
    """option -> {command: its click parameter}."""
    found = collections.defaultdict(dict)
    for name, command in typer.main.get_command(app).commands.items():
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--"):
                    found[opt][name] = param
    return found


def _differing() -> list[tuple[str, str, object, object]]:
    """(command, option, its default, the reference default) for each unexplained difference."""
    found = []
    for option, by_command in _options().items():
        if option not in AUDITED or len(by_command) < 2:
            continue
        defaults = {c: p.default for c, p in by_command.items()}
        if option in REFERENCE:
            reference = defaults[REFERENCE[option]]
        else:
            reference = collections.Counter(map(repr, defaults.values())).most_common(1)[0][0]
            reference = next(d for d in defaults.values() if repr(d) == reference)
        for command, default in defaults.items():
            if default != reference:
                found.append((command, option, default, reference))
    return found


def test_every_audited_option_exists():
    options = _options()
    assert not [o for o in AUDITED if o not in options], [o for o in AUDITED if o not in options]


def test_an_option_shared_by_commands_has_one_default_or_says_why():
    options = _options()
    for command, option, default, reference in _differing():
        explained, why = EXPLAINED.get((command, option), (default, None))
        assert why, (f"`rnnedge {command} {option}` defaults to {default!r}, other commands to {reference!r}: "
                     "align them, or say why in its help and in EXPLAINED")
        assert why in (options[option][command].help or ""), f"{command} {option}: help does not say '{why}'"
        assert default == explained, f"`rnnedge {command} {option}` defaults to {default!r}, explained: {explained!r}"


def test_no_explanation_is_stale():
    differing = {(c, o) for c, o, _, _ in _differing()}
    assert not set(EXPLAINED) - differing, set(EXPLAINED) - differing


# Every command that reads an export and takes --no-verify, with what else it needs to run on one
# ("X" is an input file); a command gaining --no-verify must be added here.
VERIFYING = {"check": [], "run": ["-i", "X"], "bench": ["--runs", "2", "--warmup", "1"], "triton": ["--out", "REPO"],
             "web": ["--out", "SITE"], "ort": [], "view": ["--no-browse", "--port", "8123"],
             "quantize": ["--variants", "fp16"], "targets": []}
# Every command that runs an onnxruntime session in this process and takes --threads, likewise.
THREADED = {"check": [], "run": ["-i", "X"], "bench": ["--runs", "2", "--warmup", "1"], "ort": []}


def _fill(args: list[str], tmp_path: Path) -> list[str]:
    import numpy as np

    x = tmp_path / "x.npy"
    if not x.exists():
        np.save(x, np.zeros((1, 12, 1), np.float32))
    return [str({"X": x, "REPO": tmp_path / "repo", "SITE": tmp_path / "site"}.get(a, a)) for a in args]


@pytest.fixture
def netron_stand_in(monkeypatch):
    """netron stood in for (as in tests/test_view.py), for `rnnedge view`."""
    module = types.ModuleType("netron")
    module.start = lambda file, address=None, browse=True: address
    module.wait = module.stop = lambda: None
    monkeypatch.setitem(sys.modules, "netron", module)
    monkeypatch.setattr("rnnedge.preflight.missing", lambda extra: [])


def test_every_command_reading_an_export_verifies_it_unless_no_verify(tmp_path, netron_stand_in):
    """A model.onnx changed after export: each command with --no-verify refuses it in one line saying
    so, and runs it with --no-verify (ort, view, quantize and targets verify too, as check, run, bench,
    triton and web do)."""
    import onnx

    from tests.helpers import invoke

    assert set(VERIFYING) == set(_options()["--no-verify"]), set(_options()["--no-verify"]) ^ set(VERIFYING)
    folder = tmp_path / "airline-gru"
    shutil.copytree(EXPORTED / "airline-gru", folder)
    model = onnx.load(str(folder / "model.onnx"))
    model.doc_string = "changed after export"
    onnx.save(model, str(folder / "model.onnx"))
    for command, extra in VERIFYING.items():
        args = [command, str(folder), *_fill(extra, tmp_path)]
        result = invoke(*args)
        assert result.exit_code == 1 and "model.onnx does not match manifest.json" in result.output, \
            (command, result.output)
        assert "pass --no-verify" in result.output and len(result.output.strip().splitlines()) == 1, \
            (command, result.output)
        result = invoke(*args, "--no-verify")
        if command == "web" and result.exit_code == 1 and "npm" in result.output.lower():
            continue  # onnxruntime-web is not installed: the refusal above is what is checked
        assert result.exit_code == 0, (command, result.output)
    # what the commands wrote with --no-verify (model.ort and its manifest entry, a site, a repository)
    # left the changed file unrecorded: it is refused still
    result = invoke("check", folder)
    assert result.exit_code == 1 and "model.onnx does not match manifest.json" in result.output, result.output


def test_threads_reach_the_onnxruntime_session(tmp_path, monkeypatch):
    """--threads N sets the sessions' intra-op threads in every command that runs one (check and ort
    have it as run does, default onnxruntime's; bench 1); the browser's check and bench refuse it."""
    from rnnedge.runtime import model as runtime_model
    from tests.helpers import invoke

    assert set(THREADED) <= set(_options()["--threads"]), set(THREADED) - set(_options()["--threads"])
    seen = []
    made = runtime_model.session_options
    monkeypatch.setattr(runtime_model, "session_options", lambda threads=None: seen.append(threads) or made(threads))
    folder = tmp_path / "airline-gru"
    shutil.copytree(EXPORTED / "airline-gru", folder)
    for command, extra in THREADED.items():
        seen.clear()
        result = invoke(command, folder, *_fill(extra, tmp_path), "--threads", "3")
        assert result.exit_code == 0, (command, result.output)
        assert seen and set(seen) == {3}, (command, seen)
    for command in ("check", "bench"):
        result = invoke(command, folder, "--provider", "wasm", "--threads", "3")
        assert result.exit_code == 1 and "--threads" in result.output and "one thread" in result.output, \
            (command, result.output)
