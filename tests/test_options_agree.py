"""Options mean the same in every command they apply to (issue #28): an option several commands take
has one default, or the command whose default differs says why in its own help (EXPLAINED)."""

from __future__ import annotations

import collections
from pathlib import Path

import typer

from rnnedge.cli import app

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
