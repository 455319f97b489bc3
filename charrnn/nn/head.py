"""The output head: logits = h W^T + b, and the softmax negative log-likelihood.

The loss and its gradient are computed together for all T*B positions at once, with the
log-sum-exp shift for stability; the backward of softmax + NLL is the fused `p - onehot`.
"""

from __future__ import annotations

import numpy as np


def logits(h: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """h (..., H), weight (V, H), bias (V,) -> logits (..., V)."""
    out = h.reshape(-1, h.shape[-1]) @ weight.T
    out += bias
    return out.reshape(*h.shape[:-1], -1)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """logits (..., V) -> log-probabilities (..., V), shifted by the max for stability."""
    shifted = z - z.max(axis=-1, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return shifted


def token_nll(z: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """logits (N, V), targets (N,) -> negative log-likelihood of each target in nats (N,)."""
    return -log_softmax(z)[np.arange(len(targets)), targets]


def softmax_nll(z: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """logits (N, V), targets (N,) -> (NLL of each target in nats (N,), d mean NLL / d logits (N, V)),
    in place on z. The NLLs are bit-identical to `token_nll`'s: the same operations in the same order."""
    rows = np.arange(len(targets))
    z -= z.max(axis=-1, keepdims=True)
    target_logits = z[rows, targets]
    np.exp(z, out=z)
    total = z.sum(axis=-1, keepdims=True)
    nll = np.log(total[:, 0]) - target_logits
    z /= total
    z[rows, targets] -= 1
    z /= len(targets)
    return nll, z
