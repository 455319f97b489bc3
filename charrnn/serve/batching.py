"""Continuous batching: the requests in flight advance together, one batched step of the model per token.

As vLLM's scheduler and text-generation-inference's router do it: a waiting queue and a running
batch, and one loop (a thread of its own) that admits and retires requests between steps. A
request that arrives has its prime read on its own (its streams start from the state that
leaves them in) and joins the batch at the next step; every step then feeds all running streams
through the model as one batch, and each request's `SamplingJob` draws its own rows with its own
random generator, settings and stop strings (`charrnn.generate.jobs`), so that what is in the
batch changes nothing about one request's text. A request leaves when its job is finished (its
length, or every sample stopped) or when it is cancelled (its client went away).

The batch grows up to `max_streams` rows; further requests wait their turn. Each change of
membership gathers the rows that stay and appends those that join; the model's weights are
prepared once (`Stepper.resized`). What a request receives is handed to `deliver` in the
engine's thread: the server passes it on to the event loop, once per step for all requests.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from charrnn import signals
from charrnn.generate.jobs import Sample, SamplingJob, settings_of, step_jobs
from charrnn.generate.sample import log_softmax_rows
from charrnn.nn.model import State


@dataclass
class Ticket:
    """One request in the engine: its job, its prime's ids (P >= 1: the last one is fed at its first
    step), whether to keep the prime's log-probabilities (the API's echo with logprobs), and where
    its output goes: `deliver(ticket, pieces)` for each step's new text [(index, text)], then
    `deliver(ticket, None)` once `samples` (and `prime_logprobs`) are set."""

    job: SamplingJob
    prime_ids: np.ndarray
    deliver: Callable[[Ticket, list | None], None]
    keep_prime_logprobs: bool = False
    streaming: bool = True
    cancelled: bool = False
    samples: list[Sample] | None = None
    prime_logprobs: np.ndarray | None = None  # (P - 1, V) log-probabilities after each prime token but the last
    error: BaseException | None = None
    current: np.ndarray = field(default=None, repr=False)  # the tokens its streams read next (S,)


class ContinuousBatcher:
    """The loop that steps every request in flight as one batch (see the module docstring).
    `flush()` is called after each step, once the step's `deliver` calls are made."""

    def __init__(self, model, params, max_streams: int = 256, flush: Callable[[], None] = lambda: None):
        self.model, self.params, self.max_streams, self.flush = model, params, max_streams, flush
        self.base = model.stepper(params, 1)  # weights prepared once; every batch is a resize of it
        self.waiting: collections.deque[Ticket] = collections.deque()
        self.running: list[Ticket] = []
        self.wake = threading.Condition()
        self.closed = False
        self.steps = 0  # batched steps taken, for the curious (/healthz)
        self.thread = threading.Thread(target=self.loop, name="charrnn-batch", daemon=True)

    def start(self):
        """Start the loop's thread (with stop signals blocked in it: the main thread handles them)."""
        signals.quiet_thread(self.thread)

    def submit(self, ticket: Ticket):
        """Queue a request; it joins the batch between two steps (any thread)."""
        with self.wake:
            self.waiting.append(ticket)
            self.wake.notify()

    def close(self):
        """End the loop (the requests in flight are dropped: the server is shutting down)."""
        with self.wake:
            self.closed = True
            self.wake.notify()
        self.thread.join(timeout=5)

    @property
    def active(self) -> int:
        """Requests in flight: running or waiting."""
        return len(self.running) + len(self.waiting)

    def loop(self):
        stepper = None
        while True:
            with self.wake:
                while not self.closed and not self.running and not self.waiting:
                    self.wake.wait()
                if self.closed:
                    return
                joining = self.admissible()
            leaving = [t for t in self.running if t.cancelled or t.job.finished]
            try:
                if joining or leaving:
                    stepper = self.regroup(stepper, leaving, joining)
                if self.running:
                    self.step(stepper)
            except Exception as error:  # (out of memory, say) every request in the batch is told, the loop goes on
                for ticket in self.running:
                    ticket.error = error
                    ticket.deliver(ticket, None)
                self.running, stepper = [], None
            self.flush()

    def admissible(self) -> list[Ticket]:
        """The waiting requests that fit in the batch now, in order of arrival (the lock held); one
        alone may be wider than the batch, but never joins others then."""
        joining, rows = [], sum(t.job.streams for t in self.running)
        while self.waiting and (rows + self.waiting[0].job.streams <= self.max_streams or not (rows or joining)):
            ticket = self.waiting.popleft()
            joining.append(ticket)
            rows += ticket.job.streams
        return joining

    def regroup(self, stepper, leaving: list[Ticket], joining: list[Ticket]):
        """End `leaving` (their end is delivered), read the primes of `joining` and append their
        rows -> the stepper of the new batch (None when nothing runs)."""
        kept, rows, begin = [], [], 0
        for ticket in self.running:
            if ticket not in leaving:
                kept.append(ticket)
                rows.extend(range(begin, begin + ticket.job.streams))
            begin += ticket.job.streams
        for ticket in leaving:
            ticket.deliver(ticket, None)
        states = [stepper.state.rows(np.array(rows, dtype=np.int64))] if kept else []
        for ticket in joining:
            if ticket.cancelled:
                ticket.deliver(ticket, None)
                continue
            try:
                states.append(self.read_prime(ticket))
            except Exception as error:  # a bad request found late: said to its client, the others go on
                ticket.error = error
                ticket.deliver(ticket, None)
                continue
            kept.append(ticket)
        self.running = kept
        if not kept:
            return None
        stepper = self.base.resized(sum(t.job.streams for t in kept))
        stepper.reset(type(states[0]).joined(states))  # a model's State, or an ensemble's
        self.settings, self.plain = settings_of([t.job for t in kept])
        self.current = np.concatenate([t.current for t in kept])
        return stepper

    def read_prime(self, ticket: Ticket) -> State:
        """Read all of a request's prime but its last token, for each of its streams -> their state."""
        streams, prime = ticket.job.streams, ticket.prime_ids
        stepper = self.base.resized(streams)
        if len(prime) > 1:
            logits = stepper.read(np.repeat(prime[:-1, None], streams, axis=1))
            if ticket.keep_prime_logprobs:
                ticket.prime_logprobs = log_softmax_rows(logits[:, 0])
        ticket.current = np.full(streams, prime[-1], dtype=np.int64)
        return stepper.state

    def step(self, stepper):
        """One token for every running stream; a request whose job is finished gets its results."""
        jobs = [t.job for t in self.running]
        self.current, pieces = step_jobs(stepper.step(self.current), jobs, self.settings, self.plain)
        self.steps += 1
        begin = 0
        for ticket, new in zip(self.running, pieces):
            ticket.current = self.current[begin: begin + ticket.job.streams]
            begin += ticket.job.streams
            if ticket.job.finished:
                rest, ticket.samples = ticket.job.finish()
                new = new + rest
            if new and ticket.streaming and not ticket.cancelled:
                ticket.deliver(ticket, new)
