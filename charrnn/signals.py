"""Stop signals as exceptions, and the gentler form `charrnn train` uses.

`raised()` makes SIGINT and SIGTERM raise `Stopped` wherever the program is, so a command ends
with one line, an exit code of 130 or 143, and its `finally` blocks run (temporary files are
removed). `requested()` instead records the first signal, so the training step in progress can
finish and be saved; a second signal raises `Stopped` at once. `deferred()` holds signals back
while a few steps that must not be cut in two run.

An exception raised from a signal handler can land anywhere. Just after library code took a
lock and before it could protect it, the clean-up could wait on that lock for ever: every raise
therefore starts a safety net, and if the process has not exited `GRACE_SECONDS` later, it says
so and exits with the signal's code (cleaning up normally takes milliseconds). Inside library
code that catches what it should not (seen: numpy's lazy import of `numpy.random`), the
`Stopped` could be swallowed and the command go on as if no signal had come: every raised
`Stopped` is therefore watched, and one that is freed before anything `settle()`d it is sent
again (`resend_if_swallowed`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import weakref

from charrnn.errors import Stopped

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_SECONDS = 10
REDELIVER_SECONDS = 0.01


def block_in_this_thread():
    """Block the stop signals in the calling thread (a worker's first act, as a pool's `initializer`),
    so that the kernel hands them to the main thread, the one that handles them."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def quiet_thread(thread: threading.Thread) -> threading.Thread:
    """Start `thread` with the stop signals blocked in it from its first instruction (it inherits the
    mask of the thread that starts it, held for that moment; one that arrives meanwhile waits)."""
    if not hasattr(signal, "pthread_sigmask"):
        thread.start()
        return thread
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return thread


def stop(signum: int, message: str | None = None) -> Stopped:
    """The `Stopped` to raise, with the safety net started and a watch on it (see the module docstring)."""
    stopped = Stopped(signum, message)
    text, code = str(stopped), stopped.exit_code

    def force_exit():
        os.write(2, f"Error: {text} (clean-up did not finish within {GRACE_SECONDS} s)\n".encode())
        os._exit(code)

    stopped.safety_net = threading.Timer(GRACE_SECONDS, force_exit)
    stopped.safety_net.daemon = True
    quiet_thread(stopped.safety_net)
    watch = weakref.finalize(stopped, resend_if_swallowed, stopped.settled, signum)
    watch.atexit = False
    return stopped


def resend_if_swallowed(settled: list, signum: int):
    """Called as a `Stopped` is freed: unless something settled it (ended the command with it), code
    on its way out caught it and went on (a library's `except` around an import, say), so the
    signal is sent again."""
    if not settled[0]:
        resend(signum)


def resend(signum: int):
    """Send `signum` to this process again a moment later, from another thread, so that it lands
    after whatever swallowed it has returned."""
    again = threading.Timer(REDELIVER_SECONDS, os.kill, (os.getpid(), signum))
    again.daemon = True
    quiet_thread(again)


def raise_stopped(signum, frame):
    raise stop(signum)


def install():
    """Make stop signals raise `Stopped` for the rest of the process (the entry point calls this first)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, raise_stopped)
    sys.unraisablehook = redelivering(sys.unraisablehook)


def redelivering(hook):
    """`sys.unraisablehook` that delivers a swallowed stop signal again. A signal can land while
    Python runs a callback whose exceptions it only reports ("Exception ignored in ...", a weakref
    callback inside the import machinery, say), which would lose the `Stopped`. It is sent again
    a moment later from another thread, so that it lands after the hook has returned (raised in
    the hook, it would be swallowed there too); other unraisable exceptions go to `hook`."""
    def redeliver(unraisable):
        if isinstance(unraisable.exc_value, Stopped):
            resend(unraisable.exc_value.settle().signum)
        else:
            hook(unraisable)
    return redeliver


def ignore():
    """Ignore stop signals from now on (the command has finished; only the interpreter's exit remains)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def quiet_teardown():
    """The command has ended and said so: what Python reports while it frees the objects left (an
    exception in a `__del__`, printed as "Exception ignored in ...", with a traceback) is dropped,
    unless CHARRNN_TRACEBACK=1. A stop signal can cut an object's `__init__` short: a `ZipFile` being
    opened to save a checkpoint then reports a missing attribute from its `__del__` at exit."""
    if not os.environ.get("CHARRNN_TRACEBACK"):
        sys.unraisablehook = lambda unraisable: None


@contextlib.contextmanager
def raised():
    """Within the block, stop signals raise `Stopped`; the previous handlers come back after it."""
    previous = {signum: signal.signal(signum, raise_stopped) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def requested(second_message: str):
    """Yield a list that receives the first stop signal; a second one raises `Stopped(second_message)`."""
    received: list[int] = []

    def record(signum, frame):
        if received:
            raise stop(signum, second_message)
        received.append(signum)

    previous = {signum: signal.signal(signum, record) for signum in STOP_SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def deferred():
    """Within the block, stop signals are held back and delivered again when the block ends (so
    `Stopped` is raised then, under `raised()`; under `requested()` a first is noted and a second
    raises), so that steps that must not be cut in two finish first: taking a lock and noting that
    it is held, or handing work to a thread pool and collecting it (an exception raised inside
    `Thread.start` leaves a started thread the pool does not know, which the interpreter then
    waits for at exit for ever). Outside the main thread, where no handler can be set, the block
    runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum))
                for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for signum in received[:2]:  # delivered again, to the handler in force before the block
        signal.raise_signal(signum)


def stop_name(signum: int) -> str:
    """The stop reason a signal asks for: 'interrupted' (SIGINT) or 'terminated'."""
    return "interrupted" if signum == signal.SIGINT else "terminated"
