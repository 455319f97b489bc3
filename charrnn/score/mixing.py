"""Mixing the network's predictions with an adaptive n-gram model's while scoring (`charrnn eval
--ngram ORDER`), as compressors mix their models (PAQ, cmix; for RNNs, the cache models of Grave
et al. 2017).

The experts are the network and the n-gram model interpolated up to each order 1..ORDER
(`charrnn.score.ngram`); the n-gram model first reads the run's training split, then learns the
text as it scores it. The probability of each token is a linear mixture

    p = sum_i w_i p_i,    w = softmax(s_b)

where b is the longest n-gram context seen before (0..ORDER): a long context seen before is where
the counts deserve trust. After each token, s_b takes a step of `lr` up the gradient of log p,
s_b += lr * w * (p_i - p) / p, so the weights follow the text, and no token is scored with weights
that have learned from it. Only each expert's probability of the token that comes is needed, so
the network's scores (static or dynamic, from any method) are mixed after they are made, block by
block. What is left out: mixing in the logit domain, 0.008 nats better on the 2-hour model measured
offline, but it needs every expert's whole distribution at every position, which no scoring method
keeps (BENCHMARKS.md). Measured no better, so left out too (BENCHMARKS.md): finer buckets
(whether one token or several followed the context, the network's recent surprise), a second
mixer layer (0.0006 nats) and a word-context expert.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.errors import UserError
from charrnn.nn.scoring import Score
from charrnn.score.ngram import AdaptiveNGram

DEFAULT_LR = 0.2  # tuned on the first 20,000 characters of Tiny Shakespeare's val split: BENCHMARKS.md
NETWORK_PRIOR = 2.0  # the network's starting logit: it is trusted more than counts seen once
MAX_ORDER = 16
PRIME_LIMIT = 1 << 22  # training tokens the n-gram model reads (the split's last ones): memory
TEXT_LIMIT = 1 << 22  # tokens it may score: its counts stay in memory
BLOCK = 1 << 16


@dataclass(frozen=True)
class NgramSettings:
    order: int
    lr: float = DEFAULT_LR

    def validate(self):
        if not 1 <= self.order <= MAX_ORDER:
            raise UserError(f"--ngram must be an order from 1 to {MAX_ORDER}, not {self.order}")


def check_length(tokens: int):
    """Refuse, before any scoring, a text too long for the n-gram model's counts in memory."""
    if tokens > TEXT_LIMIT:
        raise UserError(f"--ngram keeps its counts in memory and scores at most {TEXT_LIMIT:,} tokens; this text "
                        f"has {tokens:,}: score a part of it, or leave out --ngram")


class OnlineMixture:
    """Weights over E experts for each of B buckets, learned token by token (see the module docstring)."""

    def __init__(self, experts: int, buckets: int, lr: float):
        self.logits = np.zeros((buckets, experts))
        self.logits[:, 0] = NETWORK_PRIOR
        self.lr = lr

    def mix(self, probabilities: np.ndarray, buckets: np.ndarray) -> np.ndarray:
        """probabilities (E, M) of each token by each expert, buckets (M,) -> the mixture's (M,)."""
        mixed = np.empty(probabilities.shape[1])
        columns = probabilities.T
        for t, (p, b) in enumerate(zip(columns, buckets)):
            logits = self.logits[b]
            w = np.exp(logits - logits.max())
            w /= w.sum()
            mixed[t] = p_mix = float(w @ p)
            logits += (self.lr / p_mix) * w * (p - p_mix)
        return mixed


def mix_scores(ids: np.ndarray, nll: np.ndarray, settings: NgramSettings, vocab_size: int,
               training: np.ndarray | None, on_tokens=None) -> tuple[Score, dict]:
    """The network's NLL of each token of the stream ids (N,) in nll (N,) (position 0 predicted by
    nothing) -> (the mixture's score, the settings and the training tokens the n-gram model read);
    nll is overwritten with the mixture's. `training` is the run's training split, or None if gone."""
    check_length(len(ids))
    ngram = AdaptiveNGram(settings.order, vocab_size)
    primer = training[-PRIME_LIMIT:] if training is not None else np.zeros(0, np.int64)
    ngram.prime(primer)
    mixture = OnlineMixture(settings.order + 1, settings.order + 1, settings.lr)
    nats = 0.0
    for begin in range(0, len(ids), BLOCK):
        block = np.asarray(ids[begin: begin + BLOCK])
        probabilities, longest = ngram.read(block)
        first = 1 if begin == 0 else 0
        network = np.asarray(nll[begin + first: begin + len(block)], np.float64)
        experts = np.vstack([np.exp(-network), probabilities[1:, first:]])
        mixed = -np.log(mixture.mix(experts, longest[first:]))
        nll[begin + first: begin + len(block)] = mixed
        nats += float(mixed.sum())
        if on_tokens is not None:
            on_tokens(len(mixed))
    return Score(nats, len(ids) - 1), {"order": settings.order, "lr": settings.lr, "primed_tokens": len(primer)}
