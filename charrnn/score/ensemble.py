"""Scoring a text with an ensemble (`charrnn.nn.ensemble`): each member reads the whole text alone,
by the same method (and, under dynamic evaluation, adapting its own weights), and the probability
of each token is the mean of the members' probabilities. Each member's NLL per position goes to a
memory map of its own, so a long text costs K x 4 bytes per token on disk, not in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from charrnn.nn.ensemble import mean_nll
from charrnn.nn.scoring import Score
from charrnn.score.eval_text import nll_file, score_ids
from charrnn.score.pieces import Method

BLOCK = 1 << 20  # positions combined at a time


def score_ensemble(models, params: list[dict], ids: np.ndarray, method: Method, chunk: int, adapters: list,
                   scratch: Path, into: np.ndarray | None = None, on_tokens=None) -> tuple[Score, list[Score]]:
    """Score the ids (N,) with each member, models[k] with params[k] (adapting with adapters[k], or
    None) -> (the ensemble's score, each member's); the ensemble's NLL per position into `into`."""
    member_nll, member_scores = [], []
    for k, (model, member_params, adapter) in enumerate(zip(models, params, adapters)):
        folder = Path(scratch) / f"member-{k + 1}"
        folder.mkdir()
        nll = nll_file(folder, len(ids))
        member_scores.append(score_ids(model, member_params, ids, method, chunk, adapter, nll, on_tokens))
        member_nll.append(nll)
    nats = 0.0
    for begin in range(1, len(ids), BLOCK):
        mixed = mean_nll(np.stack([nll[begin: begin + BLOCK] for nll in member_nll]))
        nats += float(mixed.sum())
        if into is not None:
            into[begin: begin + BLOCK] = mixed
    return Score(nats, len(ids) - 1), member_scores
