"""The `charrnn` entry point: stop signals become `Stopped` before anything heavy is imported,
so even a Ctrl-C in the first fraction of a second ends with one line and exit code 130."""

import sys

from charrnn import allocator, signals
from charrnn.errors import Stopped


def main():
    signals.install()
    try:
        allocator.keep_freed_memory()
        from charrnn.cli import cli
    except (Stopped, KeyboardInterrupt) as stop:
        code = stop.exit_code if isinstance(stop, Stopped) else 130
        print(f"Error: {stop if isinstance(stop, Stopped) else 'interrupted'}", file=sys.stderr)
        sys.exit(code)
    try:
        cli(prog_name="charrnn")
    finally:
        signals.ignore()  # the command has ended: a late signal must not raise during shutdown
