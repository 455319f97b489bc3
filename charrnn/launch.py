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

        cli(prog_name="charrnn")  # a command's own failures end in its group (`charrnn.cli.group`)
    except (Stopped, KeyboardInterrupt) as stop:  # a signal while importing, or while click parses
        code = stop.exit_code if isinstance(stop, Stopped) else 130
        print(f"Error: {stop if isinstance(stop, Stopped) else 'interrupted'}", file=sys.stderr)
        sys.exit(code)
    finally:
        signals.ignore()  # the command has ended: a late signal must not raise during shutdown
