"""What keeps `charrnn serve` up under clients that misbehave: slow or stalled ones, crowds of
them, and ones that vanish.

- A request head must arrive whole within `head_seconds` of the connection (or of the first
  byte of the next request on a kept-alive one), else the connection is closed: uvicorn times
  out only idle kept-alive connections, so a client sending a head a byte at a time would hold
  its connection, and a file descriptor, for ever. (A body must arrive within the app's
  `body_seconds`: a 408.)
- At most `max_connections` connections are open: one more is closed as it is accepted, before
  it can take the last file descriptors (accept() failing with EMFILE made asyncio log a
  traceback a second, and every client waited).
- A client's behaviour is never a traceback in the server's log: an exception a client causes
  (it went away mid-body or mid-stream, a task cancelled at shutdown) is dropped from uvicorn's
  and asyncio's logs, and any message that repeats is written at most once per `LOG_INTERVAL`
  seconds, with a count of those held back.
"""

from __future__ import annotations

import asyncio
import logging
import time

import h11
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

LOG_INTERVAL = 10.0
CLIENT_CAUSED = (ClientDisconnect, asyncio.CancelledError, ConnectionError, h11.RemoteProtocolError)


def guarded_protocol(head_seconds: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with a deadline for request heads and a cap on connections."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self.head_deadline = None
            if len(self.connections) > max_connections:
                transport.abort()  # the cap: refused at once, its descriptor given back
                return
            self.await_head()

        def data_received(self, data: bytes):
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:  # part of a head: the clock runs
                self.await_head()
            elif self.head_deadline is not None:  # a whole head: the request is being served
                self.head_deadline.cancel()
                self.head_deadline = None

        def await_head(self):
            if self.head_deadline is None:
                self.head_deadline = self.loop.call_later(head_seconds, self.head_too_slow)

        def head_too_slow(self):
            self.head_deadline = None
            if self.conn.their_state is h11.IDLE:  # still no whole head
                self.transport.abort()

        def connection_lost(self, exc):
            if self.head_deadline is not None:
                self.head_deadline.cancel()
                self.head_deadline = None
            super().connection_lost(exc)

    return GuardedH11Protocol


class QuietLogs(logging.Filter):
    """Drops records of exceptions that clients cause; lets a repeated message through once per
    `interval` seconds, saying how many were held back."""

    def __init__(self, interval: float = LOG_INTERVAL):
        super().__init__()
        self.interval, self.last, self.held = interval, {}, {}

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        while error is not None:
            if isinstance(error, CLIENT_CAUSED):
                return False
            error = error.__cause__ or error.__context__
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self.last.get(key, -self.interval) < self.interval:
            self.held[key] = self.held.get(key, 0) + 1
            return False
        self.last[key] = now
        if held := self.held.pop(key, 0):
            record.msg = f"{record.getMessage()} ({held} more like it in the last {self.interval:g} s)"
            record.args = ()
        if record.exc_info and record.exc_info[1] is not None:  # one line, not a traceback
            record.msg = f"{record.getMessage()}: {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def quiet_logs(interval: float = LOG_INTERVAL) -> QuietLogs:
    """Install `QuietLogs` on uvicorn's and asyncio's loggers (and their handlers) -> the filter."""
    quiet = QuietLogs(interval)
    for name in ("uvicorn.error", "uvicorn", "asyncio"):
        logging.getLogger(name).addFilter(quiet)
    return quiet


def loop_exception_handler():
    """An event-loop exception handler that says asyncio's complaints (accept() out of file
    descriptors, say) on asyncio's logger, where `QuietLogs` makes them one line, once per interval."""
    logger = logging.getLogger("asyncio")

    def handle(loop, context):
        error = context.get("exception")
        logger.error(context.get("message", "event loop error"), exc_info=(type(error), error, None) if error else None)
    return handle
