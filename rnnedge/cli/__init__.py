"""The `rnnedge` command line: parses arguments and calls the library; no logic of its own.

TensorFlow is imported only by the commands that need it (export, demo, zoo), so `rnnedge --help`,
`check`, `run` and `bench` start fast and work where TensorFlow is not installed. A user's mistake
is one line (`error: ...`, exit 1; usage mistakes exit 2), worded for the command line where the
library made it (`RnnEdgeError.cli`).

`common` holds the app and what every command shares; each other module registers its commands
(imported here in the order `rnnedge --help` lists them).
"""

# ruff: noqa: I001  (the import order is the order `rnnedge --help` lists the commands)
from rnnedge.cli import export, check, targets, bench, serve, web, zoo  # noqa: F401  (each registers its commands)
from rnnedge.cli.common import app, user_errors

__all__ = ["app", "user_errors"]
