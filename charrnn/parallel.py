"""Data parallelism over threads: the batch is cut into shards, one per worker thread.

NumPy releases the GIL in BLAS calls and ufuncs, but one NumPy thread can only parallelise
the BLAS part; the element-wise gate arithmetic, as heavy as the matrix products on a small
CPU, would run on one core. Each worker therefore runs the whole forward and backward for its
shard with single-threaded BLAS (set for the duration of the call, see `charrnn.blas`), and
the shard gradients are summed, weighted by their share of the tokens. Shards are fixed by the
batch size and thread count, so results are deterministic for a given `threads` setting. Where
the BLAS thread count cannot be set, one worker is used and BLAS keeps its own threads.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from charrnn.blas import OpenBLAS
from charrnn.model import RNNLM, State


def resolve_threads(threads: int) -> int:
    """0 means one worker per CPU core available to this process."""
    if threads:
        return threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def shard_slices(batch: int, workers: int) -> list[slice]:
    """Contiguous, nearly equal batch ranges, at most one per stream."""
    bounds = np.linspace(0, batch, min(workers, batch) + 1).round().astype(int)
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def select(state: State, rows: slice) -> State:
    return State([tuple(s[rows] for s in layer) for layer in state.layers], state.history[:, rows])


def concatenate(states: list[State]) -> State:
    layers = [tuple(np.concatenate(parts) for parts in zip(*layer)) for layer in zip(*(s.layers for s in states))]
    return State(layers, np.concatenate([s.history for s in states], axis=1))


class ShardedModel:
    """`loss_and_grads` and `token_nll` of an RNNLM, computed over batch shards in worker threads."""

    def __init__(self, model: RNNLM, threads: int):
        self.model = model
        self.blas = OpenBLAS.find()
        self.workers = resolve_threads(threads) if self.blas is not None else 1
        self.pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()

    def map(self, function, batch: int):
        """function(rows) over the shards -> (results, each shard's share of the batch)."""
        slices = shard_slices(batch, self.workers)
        if self.pool is None or len(slices) == 1:
            return [function(slice(0, batch))], [1.0]
        errors = np.geterr()  # NumPy's error state is per thread: give workers the caller's

        def in_worker(rows):
            with np.errstate(**errors):
                return function(rows)

        with self.blas.limited(1):
            results = list(self.pool.map(in_worker, slices))
        return results, [(s.stop - s.start) / batch for s in slices]

    def loss_and_grads(self, params, tokens: np.ndarray, targets: np.ndarray, state: State, masks=None):
        """As RNNLM.loss_and_grads (without the initial-state gradient): (loss, grads, final state)."""
        def shard(rows):
            shard_masks = [m[:, rows] for m in masks] if masks is not None else None
            return self.model.loss_and_grads(params, tokens[:, rows], targets[:, rows], select(state, rows), shard_masks)

        results, weights = self.map(shard, tokens.shape[1])
        if len(results) == 1:
            loss, grads, final, _ = results[0]
            return loss, grads, final
        loss = sum(w * r[0] for w, r in zip(weights, results))
        grads = {}
        for name in params:
            total = results[0][1][name] * weights[0]
            for w, r in zip(weights[1:], results[1:]):
                total += r[1][name] * w
            grads[name] = total
        return loss, grads, concatenate([r[2] for r in results])

    def token_nll(self, params, tokens: np.ndarray, targets: np.ndarray, state: State):
        """As RNNLM.token_nll: (NLL (T, B), final state)."""
        results, _ = self.map(lambda rows: self.model.token_nll(params, tokens[:, rows], targets[:, rows],
                                                                select(state, rows)), tokens.shape[1])
        return np.concatenate([r[0] for r in results], axis=1), concatenate([r[1] for r in results])

    def initial_state(self, batch: int) -> State:
        return self.model.initial_state(batch)
