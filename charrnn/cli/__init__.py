"""The `charrnn` command line: one module per command, registered on the group in `group.py`.

Open `group.py` first (how every failure ends in one line), then the command you are after
(`train.py`, `sample.py`, ...); `console.py` is what training prints, `ranks.py` its MPI side.
"""

from charrnn.cli import evaluate, export, inspect, plot, prepare, sample, serve, train  # noqa: F401  (registers the commands)
from charrnn.cli.group import cli

__all__ = ["cli"]
