"""Beam search: the most likely continuation of `length` tokens.

K hypotheses are kept. Each step extends every one by every token, and the K with the highest
total log-probability survive (ties broken by position, so K = 1 is exactly greedy decoding). A
hypothesis whose text reaches a stop string is finished there. The answer is the finished or
surviving hypothesis with the highest *mean* log-probability per token: length normalisation
(the total divided by the number of tokens), so that one cut short by a stop string competes on
equal terms. Without stop strings every candidate has `length` tokens, and the answer is simply
the most likely one found. Beam search alone can lose the greedy path, so the greedy
continuation is carried along as one more candidate: the answer is never less likely than
greedy decoding. Log-probabilities are the model's own, untempered.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from charrnn.generate.sample import log_softmax_rows, primed_stepper
from charrnn.generate.stops import StopScanner


@dataclass
class Hypothesis:
    """A continuation: its text, total log-probability, token count, how it ended, and where its
    stream stands (its state and last token, not yet read)."""

    text: str
    logprob: float
    tokens: int
    finish_reason: str
    state: object
    pending: int

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(1, self.tokens)


def beam_search(model, params, vocab, prime: np.ndarray, length: int, width: int, stops: tuple[str, ...],
                start=None) -> Hypothesis:
    """prime (P >= 1 ids) -> the best continuation found by a beam of `width`, from `start` (one
    stream's state) or from zeros."""
    K = width
    stepper, current = primed_stepper(model, params, prime, K + 1, start)  # rows 0..K-1: the beam; K: greedy
    scores = np.full(K, -np.inf)
    scores[0] = 0.0  # every row starts alike: extend only the first
    scanners = [StopScanner(stops) for _ in range(K + 1)]
    greedy_logprob, finished = 0.0, []
    greedy: Hypothesis | None = None
    for t in range(length):
        logp = log_softmax_rows(stepper.step(current))
        candidates = (scores[:, None] + logp[:K]).ravel()
        order = np.argsort(-candidates, kind="stable")[:K]
        parents, tokens, scores = order // logp.shape[1], order % logp.shape[1], candidates[order]
        best = int(np.argmax(logp[K]))
        if greedy is None:
            greedy_logprob += logp[K, best]
        rows = np.append(parents, K)
        state = stepper.state.rows(rows)
        scanners = [copy.copy(scanners[p]) for p in parents] + [scanners[K]]
        for b, token in enumerate(tokens):
            if np.isfinite(scores[b]):
                scanners[b].feed(vocab.tokens[token])
                if scanners[b].stopped:
                    finished.append(Hypothesis(scanners[b].text, float(scores[b]), t + 1, "stop",
                                               state.rows(np.array([b])), int(token)))
                    scores[b] = -np.inf
        if greedy is None:
            scanners[K].feed(vocab.tokens[best])
            if scanners[K].stopped:
                greedy = Hypothesis(scanners[K].text, greedy_logprob, t + 1, "stop", state.rows(np.array([K])),
                                    best)
        stepper.reset(state)
        current = np.append(tokens, best)
        if not np.isfinite(scores).any() and greedy is not None:
            break
    alive = [Hypothesis(scanners[b].text, float(scores[b]), length, "length", stepper.state.rows(np.array([b])),
                        int(current[b])) for b in range(K) if np.isfinite(scores[b])]
    if greedy is None:
        greedy = Hypothesis(scanners[K].text, greedy_logprob, length, "length", stepper.state.rows(np.array([K])),
                            int(current[K]))
    return max([*finished, *alive, greedy], key=lambda h: h.mean_logprob)
