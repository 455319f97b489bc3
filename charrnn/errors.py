"""The exceptions that end a command with one line on stderr, never a traceback.

`UserError` is a mistake the user can fix, said in one line with what to do. `Stopped` is a
SIGINT or SIGTERM turned into an exception, so that `finally` blocks and atomic writes clean up
on the way out. `describe_os_error` turns what the operating system refused (a missing
permission, a full disk) into the same kind of line.
"""

from __future__ import annotations

import errno
import signal

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
HINTS = {errno.ENOSPC: "the disk is full; free some space and try again",
         errno.EDQUOT: "the disk quota is used up; free some space and try again",
         errno.EFBIG: "the file is larger than this system allows",
         errno.EACCES: "check the permissions",
         errno.EPERM: "check the permissions",
         errno.EROFS: "the file system is read-only; choose another location",
         errno.ENOTDIR: "a part of the path is a file, not a directory",
         errno.EISDIR: "give a file, not a directory"}


class UserError(Exception):
    """A problem with the user's input, files or settings, explained in one line."""


class Stopped(BaseException):
    """A stop signal (SIGINT, SIGTERM) received while a command ran. Whoever ends the command with
    it calls `settle()`, whoever consumes it on purpose (the prompt's Ctrl-C) `consume()`; one that
    is freed unsettled was swallowed on its way out, and `charrnn.signals` sends the signal again."""

    def __init__(self, signum: int, message: str | None = None):
        self.signum = signum
        self.settled = [False]  # shared with the watch on this exception (`charrnn.signals.stop`)
        self.safety_net = None  # the timer that ends a clean-up that hangs, if `charrnn.signals.stop` started one
        self.consumed = False
        name = "interrupted" if signum == signal.SIGINT else "terminated"
        super().__init__(message or name)

    def settle(self) -> Stopped:
        """The command ends with this stop (its safety net still guards the way out)."""
        self.settled[0] = True
        return self

    def consume(self) -> Stopped:
        """The command goes on after this stop (the prompt's Ctrl-C clears a line): nothing is sent
        again, and no safety net ends the process later."""
        if self.safety_net is not None:
            self.safety_net.cancel()
        self.consumed = True
        return self.settle()

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 128 + int(self.signum))


def stop_within(error: BaseException) -> Stopped | None:
    """The `Stopped` that `error` is, that Python wrapped in it (a signal landing while a class is
    made, inside `__set_name__` say, reaches the caller as a RuntimeError caused by the Stopped), or
    that was on its way out when `error` was raised (clean-up code that the signal cut short and
    that failed in turn: importlib's module lock raises a KeyError from its `finally`), settled: the
    caller ends the command with it. A stop consumed on purpose (the prompt's Ctrl-C) is none."""
    seen = set()
    while error is not None and id(error) not in seen and not isinstance(error, Stopped):
        seen.add(id(error))
        error = error.__cause__ if error.__cause__ is not None else error.__context__
    return error.settle() if isinstance(error, Stopped) and not error.consumed else None


def describe_os_error(error: OSError) -> str:
    """OSError -> 'path: reason; what to do' in one line."""
    where = error.filename if error.filename is not None else ""
    if error.filename2 is not None:
        where = f"{where} -> {error.filename2}"
    reason = error.strerror or type(error).__name__
    hint = HINTS.get(error.errno)
    text = f"{where}: {reason}" if where else reason
    return f"{text} ({hint})" if hint else text
