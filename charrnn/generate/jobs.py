"""Sampling jobs: one request's samples, advanced a token at a time by whoever steps the model.

`charrnn sample` steps one job alone; the server steps the jobs of many requests as one batch,
their rows side by side (continuous batching, `charrnn.serve.batching`). Either way a job keeps
its own settings, random generator and stop strings, and `step_jobs` computes each row's
distribution and draw with row-by-row arithmetic (`charrnn.generate.sample.row_probabilities`),
so a request's text does not depend on what else is in the batch, nor on where in it its rows are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.generate.sample import RowSettings, SamplingSettings, draw_rows, log_softmax_rows, row_probabilities
from charrnn.generate.stops import StopScanner


@dataclass
class Sample:
    """One result: `text` is the prime as shown plus `completion`."""

    text: str
    completion: str
    mean_logprob: float  # nats per generated token under the untempered model
    tokens: int
    finish_reason: str  # "length" or "stop"


@dataclass
class TokenLogprobs:
    """What the OpenAI API's `logprobs` reports of one stream: each generated token's id, its
    log-probability, and the `k` likeliest ids with theirs (untempered)."""

    ids: list[int]
    logprobs: list[float]
    top_ids: list[list[int]]
    top_logprobs: list[list[float]]


class SamplingJob:
    """The `streams` samples of one request while they are drawn (`request` as in
    `charrnn.generate.generation.GenerationRequest`): `advance` takes this job's rows of a step's
    draws and returns each sample's new text; `finish` ends it."""

    def __init__(self, request, tokens: np.ndarray, logprobs: int | None = None):
        self.request, self.tokens = request, tokens  # tokens: the vocabulary's texts, an object array (V,)
        self.streams = request.streams
        self.rng = np.random.default_rng(request.seed)
        self.plain = request.sampling == SamplingSettings()  # its distribution is the model's own
        self.scanners = [StopScanner(request.stop) for _ in range(self.streams)] if request.stop else None
        self.drawn = np.empty((request.length, self.streams), dtype=np.int64)
        self.logprob, self.counts = np.zeros(self.streams), np.zeros(self.streams, dtype=np.int64)
        self.running = np.ones(self.streams, dtype=bool)
        self.steps, self.finished = 0, False
        self.quiet = False  # True: `advance` returns no text (its caller wants only the results at the end)
        self.top_k = logprobs or 0  # alternatives to keep per token; with logprobs None, nothing is kept
        self.token_logprobs = [TokenLogprobs([], [], [], []) for _ in range(self.streams)] \
            if logprobs is not None else None

    def advance(self, current: np.ndarray, chosen: np.ndarray, log_probs: np.ndarray | None) -> list[tuple[int, str]]:
        """This step's tokens (S,), their untempered log-probabilities (S,) and, when alternatives are
        asked for (`logprobs` above 0), every token's (S, V) -> the new text of each sample: [(index, text)]."""
        self.drawn[self.steps] = current
        if self.scanners is None:  # every stream runs to the end
            self.logprob += chosen
            self.counts += 1
        else:
            self.logprob += np.where(self.running, chosen, 0.0)
            self.counts += self.running
        if self.token_logprobs is not None:
            top = np.argsort(-log_probs, axis=1, kind="stable")[:, :self.top_k] if self.top_k else \
                np.zeros((len(current), 0), dtype=np.int64)
            for i in np.flatnonzero(self.running):
                record = self.token_logprobs[i]
                record.ids.append(int(current[i]))
                record.logprobs.append(float(chosen[i]))
                record.top_ids.append(top[i].tolist())
                record.top_logprobs.append(log_probs[i, top[i]].tolist() if self.top_k else [])
        if self.scanners is None and self.quiet:
            shown = []
        elif self.scanners is None:
            shown = list(enumerate(self.tokens[current].tolist()))
        else:
            shown = [(i, self.scanners[i].feed(self.tokens[current[i]])) for i in np.flatnonzero(self.running)]
            self.running = np.array([not scanner.stopped for scanner in self.scanners])
        self.steps += 1
        self.finished = self.steps == self.request.length or not self.running.any()
        return [(i, text) for i, text in shown if text]

    def finish(self) -> tuple[list[tuple[int, str]], list[Sample]]:
        """(the text still held back by stop strings, the results: with best-of, the best of each
        group of draws by mean log-probability), once `finished`."""
        if self.scanners is None:
            texts = ["".join(self.tokens[self.drawn[:n, i]].tolist()) for i, n in enumerate(self.counts)]
            stopped, rest = np.zeros(self.streams, dtype=bool), []
        else:
            rest = [(i, text) for i, s in enumerate(self.scanners) if (text := s.release())]
            texts, stopped = [s.text for s in self.scanners], ~self.running
        results = [Sample(text, text, float(lp / max(1, n)), int(n), "stop" if stop else "length")
                   for text, lp, n, stop in zip(texts, self.logprob, self.counts, stopped)]
        return rest, results

    def best_of(self, results: list[Sample]) -> list[int]:
        """The index of the result kept from each group of `best_of` draws (all of them without)."""
        group = self.request.best_of or 1
        return [max(range(start, start + group), key=lambda i: results[i].mean_logprob)
                for start in range(0, len(results), group)]


def step_jobs(logits: np.ndarray, jobs: list[SamplingJob], settings: tuple[np.ndarray, np.ndarray, np.ndarray],
              plain: np.ndarray) -> tuple[np.ndarray, list[list[tuple[int, str]]]]:
    """One step of every job, their rows side by side in `logits` (B, V) in job order, with each
    row's `settings` (`RowSettings.of`) and whether its distribution is the model's own (`plain`
    (B,)) -> (the tokens drawn (B,), each job's new text). Each job draws its rows' uniforms from
    its own generator."""
    probs = row_probabilities(logits, *settings)
    uniforms = np.concatenate([job.rng.random((job.streams, 1)) for job in jobs])
    current = draw_rows(probs, uniforms)
    rows = np.arange(len(current))
    # the untempered log-probability: where the distribution is the model's own it is already at hand
    log_probs = log_softmax_rows(logits) if not plain.all() or any(job.top_k for job in jobs) else None
    chosen = np.log(probs[rows, current]) if log_probs is None else \
        np.where(plain, np.log(probs[rows, current]), log_probs[rows, current])
    pieces, begin = [], 0
    for job in jobs:
        part = slice(begin, begin + job.streams)
        pieces.append(job.advance(current[part], chosen[part], log_probs[part] if job.top_k else None))
        begin += job.streams
    return current, pieces


def settings_of(jobs: list[SamplingJob]) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """(each row's settings, each row's `plain`) for a batch of these jobs in order."""
    sizes = [job.streams for job in jobs]
    return RowSettings.of([job.request.sampling for job in jobs], sizes), np.repeat([job.plain for job in jobs], sizes)
