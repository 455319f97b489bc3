"""The `charrnn` entry point: stop signals become `Stopped` before anything heavy is imported,
so even a Ctrl-C in the first fraction of a second ends with one line and exit code 130."""

import sys

from charrnn import allocator, signals
from charrnn.errors import stop_within


def main():
    try:
        signals.install()  # in the try: a signal may land between installing one handler and the next
        allocator.keep_freed_memory()
        from charrnn.cli import cli

        cli(prog_name="charrnn")  # a command's own failures end in its group (`charrnn.cli.group`)
    except BaseException as error:  # a signal while importing, or while click parses
        stop = stop_within(error)
        if stop is None and not isinstance(error, KeyboardInterrupt):
            raise
        print(f"Error: {stop if stop is not None else 'interrupted'}", file=sys.stderr)
        sys.exit(stop.exit_code if stop is not None else 130)
    finally:
        signals.ignore()  # the command has ended: a late signal must not raise during shutdown
