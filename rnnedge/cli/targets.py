"""`rnnedge targets`: which execution providers can run an export's recurrent nodes, from their
documented restrictions (no provider needs to be installed; no TensorFlow)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rnnedge.cli.common import Folder, NoVerify, app, say, user_errors
from rnnedge.errors import RnnEdgeError


@app.command()
def targets(
    folder: Folder,
    provider: Annotated[Optional[str], typer.Option(metavar="LIST", help="Only these providers (e.g. qnn,cuda; "
                                                    "default: every one); "
                                                    "exit 1 if one would leave a recurrent node on CPU.")] = None,
    no_verify: NoVerify = False,
):
    """Say, per execution provider, whether every recurrent node can run there, and what to change if not."""
    with user_errors():
        from rnnedge.manifest import Manifest
        from rnnedge.runtime.targets import TARGETS, assess, table_lines, target_line

        wanted = TARGETS
        if provider is not None:
            wanted = tuple(p.strip().lower() for p in provider.split(",") if p.strip())
            unknown = [p for p in wanted if p not in TARGETS]
            if unknown or not wanted:
                raise RnnEdgeError(f"--provider {provider}: expected some of {', '.join(TARGETS)}")
        verdicts = assess(folder, wanted, verify=not no_verify)
        say(table_lines(verdicts))
        record = Manifest.load(folder).target
        if record:
            say(["", f"exported with --target {record.get('provider')}, checked then: {target_line(record)}"])
        if provider is not None and not all(v.ready for v in verdicts):
            raise typer.Exit(1)
