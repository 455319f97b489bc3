"""Scoring a token stream: the negative log-likelihood of every token given all before it.

The stream is cut into `streams` contiguous pieces scored side by side (one piece for the exact
figure of `charrnn eval`; several for a quick validation loss during training), each fed in
chunks with the recurrent state carried across, so the result does not depend on the chunk size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

LN2 = math.log(2)


@dataclass(frozen=True)
class Score:
    """Summed NLL in nats over `tokens` predictions."""

    nats: float
    tokens: int

    @property
    def nats_per_token(self) -> float:
        return self.nats / self.tokens if self.tokens else float("nan")

    @property
    def bits_per_token(self) -> float:
        return self.nats_per_token / LN2

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token) if self.tokens else float("nan")


def chunk_nll(model, params, tokens: np.ndarray, streams: int = 1, chunk: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """tokens (N,) -> per chunk, (targets (T, S), their NLL in nats (T, S)) in stream order.

    Each of the S streams predicts (N - 1) // S consecutive tokens; a leftover tail is not scored.
    """
    per_stream = (len(tokens) - 1) // streams
    starts = np.arange(streams) * per_stream
    state = model.initial_state(streams)
    for begin in range(0, per_stream, chunk):
        T = min(chunk, per_stream - begin)
        window = np.asarray(tokens[starts[None, :] + begin + np.arange(T + 1)[:, None]], dtype=np.int64)
        nll, state = model.token_nll(params, window[:-1], window[1:], state)
        yield window[1:], nll


def score(model, params, tokens: np.ndarray, streams: int = 1, chunk: int = 256) -> Score:
    """The summed NLL of a token stream; see `chunk_nll`."""
    total, count = 0.0, 0
    for targets, nll in chunk_nll(model, params, tokens, streams, chunk):
        total += float(nll.sum(dtype=np.float64))
        count += nll.size
    return Score(total, count)
