"""Scoring a long token sequence fast: S pieces side by side, each warmed up on what precedes it.

The exact score reads the text as one stream, one token after another: a batch of one, so every
step is a thin matrix-vector product. The streams method cuts the N - 1 predictions into S
contiguous pieces and scores them as one batch of S streams. A piece that starts at position p
first reads the W tokens before p (its warm-up, not scored), so its state is close to the state
of a reader that started at the beginning: a recurrent model's memory of text further back than
a few hundred tokens is faint. The first piece starts at the beginning and needs no warm-up.
One stream with no warm-up is exactly the exact method.

Memory is flat: tokens are read from an array that may be a memory map, one chunk of T steps x S
streams at a time (about PASS_TOKENS tokens), and every chunk's losses go to the caller. The
chunks are read by a `Stepper`, which prepares the weights and allocates its buffers once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

EXACT_BELOW = 16  # predictions per warm-up token below which the streams method is not worth it
MAX_STREAMS = 512  # 10 MB text, 2-core Xeon: 512 pieces 175 s, 1,024 191 s (each worker's gate slabs outgrow L2)
DEFAULT_WARMUP = 256
PASS_TOKENS = 2048  # tokens per pass when several streams share it (bounds memory; 2 MB text, 2 x 512
# GRU, bfloat16 products: 2,048 took 13.7-14.3 s, 4,096 15.4, 8,192 18.7)


@dataclass(frozen=True)
class Method:
    """How a sequence is scored: one stream (exact), or `streams` pieces with `warmup` tokens each,
    their matrix products in `products` precision (the model's, "float32" or "float64", or
    "bfloat16": operands rounded to bfloat16, sums in float32, see `charrnn.compute.mkl.BFloat16Products`)."""

    streams: int = 1
    warmup: int = 0
    products: str = "float32"

    @property
    def exact(self) -> bool:
        return self.streams == 1

    def describe(self) -> dict:
        return {"method": "exact"} if self.exact else {"method": "streams", "streams": self.streams,
                                                       "warmup": self.warmup, "products": self.products}

    @classmethod
    def automatic(cls, predictions: int, warmup: int = DEFAULT_WARMUP, products: str = "float32") -> Method:
        """Exact for short texts; else as many pieces (up to MAX_STREAMS) as keep every piece at least
        EXACT_BELOW times longer than its warm-up, so warm-up adds at most 1/EXACT_BELOW of the work."""
        streams = min(MAX_STREAMS, predictions // (EXACT_BELOW * max(1, warmup)))
        return cls(streams, warmup, products) if streams >= 2 else cls()


def piece_bounds(predictions: int, streams: int) -> np.ndarray:
    """The first prediction of each piece, and the end: (S + 1,)."""
    return np.linspace(0, predictions, streams + 1).round().astype(np.int64)


def piece_nll(model, params, tokens: np.ndarray, method: Method, chunk: int = 256
              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """tokens (N,) -> per chunk, (the positions of the tokens predicted (K,), their NLL in nats (K,)).

    Prediction i is of tokens[i + 1] from tokens[: i + 1]; every one of the N - 1 is yielded once,
    each piece's in order (pieces interleaved).
    """
    predictions = len(tokens) - 1
    if predictions < 1:
        return
    streams = min(method.streams, predictions)
    bounds = piece_bounds(predictions, streams)
    first, end = bounds[:-1], bounds[1:]
    read_from = np.maximum(0, first - method.warmup)  # where each stream starts reading
    steps = int((end - read_from).max())
    stepper = model.stepper(params, streams)
    per_pass = chunk if streams == 1 else max(1, max(chunk, PASS_TOKENS) // streams)
    for begin in range(0, steps, per_pass):
        t = np.arange(begin, min(begin + per_pass, steps))[:, None]
        index = read_from[None, :] + t  # (T, S) the input read at each step
        live = index < end[None, :]
        index = np.where(live, index, 0)
        nll = stepper.nll(np.asarray(tokens[index], np.int64), np.asarray(tokens[index + 1], np.int64))
        scored = live & (index >= first[None, :])
        yield index[scored] + 1, nll[scored]


def score_tokens(model, params, tokens: np.ndarray, method: Method, chunk: int = 256, on_tokens=None,
                 into: np.ndarray | None = None) -> tuple[float, int]:
    """(summed NLL in nats, predictions) of a token sequence; `on_tokens(k)` after each chunk, and the
    NLL of each predicted position written into `into` (N,) when given (a memory map for a page)."""
    total, count = 0.0, 0
    for positions, nll in piece_nll(model, params, tokens, method, chunk):
        total += float(nll.sum(dtype=np.float64))
        count += len(nll)
        if into is not None:
            into[positions] = nll
        if on_tokens is not None:
            on_tokens(len(nll))
    return total, count
