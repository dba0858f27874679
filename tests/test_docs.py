"""The README and docs/ as a reader meets them: a README short enough to read in five minutes that
links every page, links that lead somewhere, a commands page naming every command and option the
command line has. No TensorFlow here (make test-fast runs it); tests/test_docs_layers.py checks the
supported-layers page against the converter registry, tests/test_readme.py runs every page's examples."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command

from rnnedge.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
# what each reference page must exist for (issue #30): the README links them all
REFERENCE = ["commands", "formats", "providers", "streaming", "serving", "browser", "keras2", "quantization",
             "python", "layers", "layout"]


def anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for heading in re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M), re.M):
        out.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return out


def test_the_readme_reads_in_five_minutes():
    text = README.read_text()
    assert len(text.splitlines()) <= 300, len(text.splitlines())
    for needed in ("make demo", "make test", "make test-fast"):
        assert needed in text, needed
    linked = set(re.findall(r"\]\(docs/([\w-]+)\.md", text))
    assert set(REFERENCE) <= linked, set(REFERENCE) - linked
    assert {p.stem for p in DOCS.glob("*.md")} <= linked, "a docs page the README does not link"


def test_the_code_layout_is_in_one_place():
    """The package map lives in docs/layout.md alone (one place to keep in step with the code)."""
    holders = [p.name for p in PAGES if re.search(r"^runtime/ +export folder", p.read_text(), re.M)]
    assert holders == ["layout.md"], holders


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_link_leads_somewhere(page):
    """Relative links name a file that exists, and an anchor that one of its headings gives."""
    text = page.read_text()
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"\w+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            bad.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            bad.append(f"{target}: no heading gives #{anchor}")
    assert not bad, bad


def test_the_commands_page_names_every_command_and_option():
    text = (DOCS / "commands.md").read_text()
    missing = []
    for name, command in get_command(app).commands.items():
        if f"### `rnnedge {name}`" not in text:
            missing.append(f"rnnedge {name}")
            continue
        section = text.split(f"### `rnnedge {name}`", 1)[1].split("\n### ", 1)[0]
        for param in command.params:
            names = param.opts + param.secondary_opts if param.param_type_name == "option" else [param.name.upper()]
            missing += [f"rnnedge {name} {o}" for o in names if f"`{o}`" not in section]
    assert not missing, f"docs/commands.md does not name: {missing}"

