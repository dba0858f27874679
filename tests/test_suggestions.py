"""Every command and option rnnedge's messages suggest exists (issue #28): each `rnnedge CMD
--option ...` written in the package names a real command and options that command takes, and each
"pass --option" names an option some command takes. (tests/test_combine.py follows suggestions
for real.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from rnnedge.cli import app

PACKAGE = Path(__file__).resolve().parent.parent / "rnnedge"
COMMAND = re.compile(r"`rnnedge ([^`]*)`")
PASS = re.compile(r"\b(?:pass|with|use|add|try|give) (--[a-z][a-z0-9-]*)")


def _commands() -> dict[str, set[str]]:
    """command name -> its options (long and short), from the Typer app itself."""
    group = typer.main.get_command(app)
    found = {}
    for name, command in group.commands.items():
        found[name] = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    return found


def _suggestions() -> list[tuple[str, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        found += [(f"{path.relative_to(PACKAGE.parent)}", m.group(1)) for m in COMMAND.finditer(text)]
    return found


SUGGESTED = _suggestions()


def test_the_package_suggests_commands():
    assert len(SUGGESTED) >= 60, len(SUGGESTED)  # the scan finds them (75 in December 2026)


@pytest.mark.parametrize("where, text", SUGGESTED, ids=[f"{w}:{t}" for w, t in SUGGESTED])
def test_a_suggested_command_exists_with_its_options(where, text):
    commands = _commands()
    words = text.replace("[", " ").replace("]", " ").split()
    if not words or words[0].startswith("-") or words[0] == "...":  # `rnnedge --help`, `rnnedge ... | head`
        assert not words or words[0] in ("--help", "...", "--version"), (where, text)
        return
    assert words[0] in commands, f"{where}: `rnnedge {text}` names no command ({', '.join(sorted(commands))})"
    for word in words[1:]:
        option = word.split("=")[0]
        if option.startswith("-") and option != "-":
            assert option in commands[words[0]], f"{where}: `rnnedge {text}`: {words[0]} takes no {option}"


def test_every_option_a_message_tells_users_to_pass_exists():
    every = set().union(*_commands().values())
    for path in sorted(PACKAGE.rglob("*.py")):
        for m in PASS.finditer(path.read_text()):
            assert m.group(1) in every, f"{path}: '{m.group(0)}': no command takes {m.group(1)}"
