"""The `charrnn` command line: one module per command, registered on the group in `group.py`."""

from charrnn.cli import evaluate, export, plot, prepare, sample, serve, train  # noqa: F401  (registers the commands)
from charrnn.cli.group import cli

__all__ = ["cli"]
