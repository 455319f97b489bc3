"""The negative log-likelihood of a token stream under the model: every token given all before it.

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
        """exp(nats per token): inf past the largest float (a loss over 709 nats per token)."""
        if not self.tokens:
            return float("nan")
        try:
            return math.exp(self.nats_per_token)
        except OverflowError:
            return math.inf


def chunk_nll(model, params, tokens: np.ndarray, streams: int = 1, chunk: int = 256,
              rows: slice = slice(None)) -> Iterator[np.ndarray]:
    """tokens (N,) -> per chunk, the NLL in nats of its targets (T, S), S streams side by side,
    read on by one `Stepper` (see `charrnn.nn.model`).

    Each of the S streams predicts (N - 1) // S consecutive tokens; a leftover tail is not scored.
    With `rows`, only those of the S streams are scored (a process's share of them).
    """
    per_stream = (len(tokens) - 1) // streams
    starts = (np.arange(streams) * per_stream)[rows]
    if len(starts) == 0:
        return
    stepper = model.stepper(params, len(starts))
    for begin in range(0, per_stream, chunk):
        T = min(chunk, per_stream - begin)
        window = np.asarray(tokens[starts[None, :] + begin + np.arange(T + 1)[:, None]], dtype=np.int64)
        yield stepper.nll(window[:-1], window[1:])


def score(model, params, tokens: np.ndarray, streams: int = 1, chunk: int = 256, rows: slice = slice(None)) -> Score:
    """The summed NLL of a token stream; see `chunk_nll`."""
    total, count = 0.0, 0
    for nll in chunk_nll(model, params, tokens, streams, chunk, rows):
        total += float(nll.sum(dtype=np.float64))
        count += nll.size
    return Score(total, count)
