"""Scoring a text with an ensemble (`charrnn.nn.ensemble`): each member reads the whole text alone,
by the same method (and, under dynamic evaluation, adapting its own weights), and the probability
of each token is the mean of the members' probabilities. Each member's NLL per position goes to a
memory map of its own, so a long text costs K x 4 bytes per token on disk, not in memory.

Members that adapt read side by side, one worker thread per core, each with single-threaded
BLAS (where NumPy's BLAS is OpenBLAS, whose thread count can be set; elsewhere one after
another): one adapting stream is matrix-vector products and elementwise work that a second BLAS
thread hardly speeds up. Each member's figures are those it gives alone, bit for bit. (Pieces
side by side already share the cores among their own worker threads, and are read one member
after another.)
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from charrnn import signals
from charrnn.compute.blas import OpenBLAS
from charrnn.nn.ensemble import mean_nll
from charrnn.nn.scoring import Score
from charrnn.score.eval_text import nll_file, score_ids
from charrnn.score.pieces import Method
from charrnn.training.parallel import resolve_threads

BLOCK = 1 << 20  # positions combined at a time


def score_ensemble(models, params: list[dict], ids: np.ndarray, method: Method, chunk: int, adapters: list,
                   scratch: Path, into: np.ndarray | None = None, on_tokens=None) -> tuple[Score, list[Score]]:
    """Score the ids (N,) with each member, models[k] with params[k] (adapting with adapters[k], or
    None) -> (the ensemble's score, each member's); the ensemble's NLL per position into `into`."""
    member_nll = []
    for k in range(len(models)):
        folder = Path(scratch) / f"member-{k + 1}"
        folder.mkdir()
        member_nll.append(nll_file(folder, len(ids)))

    blas = OpenBLAS.find()
    side_by_side = min(len(models), resolve_threads(0)) if blas is not None and adapters[0] is not None else 1
    counted = on_tokens if on_tokens is None or side_by_side == 1 else one_at_a_time(on_tokens)

    def score_member(k: int, cancelled: threading.Event | None = None) -> Score:
        return score_ids(models[k], params[k], ids, method, chunk, adapters[k], member_nll[k], counted, cancelled)

    if side_by_side > 1:
        member_scores = adapt_side_by_side(score_member, len(models), side_by_side, blas)
    else:
        member_scores = [score_member(k) for k in range(len(models))]
    nats = 0.0
    for begin in range(1, len(ids), BLOCK):
        mixed = mean_nll(np.stack([nll[begin: begin + BLOCK] for nll in member_nll]))
        nats += float(mixed.sum())
        if into is not None:
            into[begin: begin + BLOCK] = mixed
    return Score(nats, len(ids) - 1), member_scores


def adapt_side_by_side(score_member, members: int, threads: int, blas: OpenBLAS) -> list[Score]:
    """score_member(k, cancelled) for each k < members, `threads` at a time in worker threads, BLAS
    single-threaded meanwhile -> their scores in order. A stop signal (in the main thread, which
    waits) or a member's error sets `cancelled`: the others stop within one block, and it goes on."""
    cancelled = threading.Event()
    with blas.limited(1):
        pool = ThreadPoolExecutor(threads, thread_name_prefix="charrnn-member",
                                  initializer=signals.block_in_this_thread)
        try:
            with signals.deferred():  # a stop signal lands after the hand-over, never inside the pool's own code
                futures = [pool.submit(score_member, k, cancelled) for k in range(members)]
            return [future.result() for future in futures]
        except BaseException:
            cancelled.set()
            raise
        finally:
            pool.shutdown(cancel_futures=True)


def one_at_a_time(callback):
    """callback, called under a lock (a progress bar's count is not safe from two threads at once)."""
    lock = threading.Lock()

    def locked(*args):
        with lock:
            callback(*args)
    return locked
