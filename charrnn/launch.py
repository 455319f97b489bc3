"""The `charrnn` entry point: stop signals are held from its first line and become `Stopped` as
soon as the handlers are in place, so a Ctrl-C or SIGTERM at any moment of a command ends it with
one line and exit code 130 or 143.

What is left is the interpreter's own start-up, before the first line of `main` runs (about 20
to 40 ms, while Python starts and reads its site packages): a signal there meets Python's
defaults (SIGINT: a KeyboardInterrupt traceback; SIGTERM: the process ends at once, killed by
the signal), as it would for any Python program. From `main`'s first line the stop signals are
blocked, so one that arrives while the handlers are being installed waits, and is delivered the
moment they are ready; none is lost. This module imports nothing at import time beyond the
standard library's `signal` and `sys`, so the window before `main` is as short as Python allows.

NumPy is imported while the signals are blocked, so that its BLAS starts its own threads with
them blocked too (a thread inherits its creator's mask). Otherwise the kernel may hand a Ctrl-C
to a BLAS thread: Python notes it there, but a main thread asleep in a system call (the
prompt's wait for a key) is not woken, and the Ctrl-C seems lost until the next key. charrnn's
own threads block them as they start (`charrnn.signals.quiet_thread`).
"""

import signal
import sys

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def hold_stop_signals() -> bool:
    """Block SIGINT and SIGTERM (they wait, pending, until unblocked); False where POSIX masks are missing."""
    if not hasattr(signal, "pthread_sigmask"):
        return False
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    return True


def main():
    held = hold_stop_signals()
    import numpy  # noqa: F401  (its BLAS starts its threads now, while the stop signals are blocked)

    from charrnn import signals
    from charrnn.compute import allocator
    from charrnn.errors import stop_within

    try:
        signals.install()  # in the try: a held signal is raised here, as `Stopped`, once unblocked
        if held:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        allocator.keep_freed_memory()
        from charrnn.cli import cli

        cli(prog_name="charrnn")  # a command's own failures end in its group (`charrnn.cli.group`)
    except SystemExit:  # the command's own end (after a stop it handled, say: `serve` says "server stopped")
        raise
    except BaseException as error:  # a signal while importing, or while click parses
        hold_stop_signals()  # a second signal must not cut this line short
        stop = stop_within(error)
        if stop is None and not isinstance(error, KeyboardInterrupt):
            raise
        print(f"Error: {stop if stop is not None else 'interrupted'}", file=sys.stderr)
        sys.exit(stop.exit_code if stop is not None else 130)
    finally:
        signals.ignore()  # the command has ended: a late signal must not raise during shutdown
        signals.quiet_teardown()  # nor what Python reports while freeing what a signal cut short
        if held:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # one held meanwhile is now ignored
