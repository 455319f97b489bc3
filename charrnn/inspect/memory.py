"""How far back the model remembers, measured two ways.

- The memory curve: the loss on each scored token when the model may read only the k tokens
  before it (its state reset k tokens back), for k = 1, 2, 4, ..., and with the whole text
  before it (the "full" point, which is `charrnn eval --exact`'s figure). The windows of one k
  are read side by side as one batch (a `Stepper` over all of them), so k up to 1,024 over
  thousands of positions takes seconds, not the hours of one stream per position. A position
  with fewer than k tokens before it reads them all. A lag reads at most `STEPS_PER_LAG` window
  steps: beyond k = 64 (with 4,000 positions) it scores every 2nd, 4th, ... position, where the
  extra loss is small and steady, so the curve's cost stops growing with k (8.2 million window
  steps up to k = 1,024 become 1.5 million).
- The gradient's decay: the norm of d loss_t / d h_(t-k), the gradient of one token's loss with
  respect to the hidden states (every layer's h) k steps before it, averaged over positions: the
  vanishing-gradient picture. Each window starts from the true state of the text at t - k
  (recorded as the text is read) and back-propagates the loss at its last position alone.
"""

from __future__ import annotations

import numpy as np

from charrnn.nn.head import token_nll
from charrnn.nn.model import State

BATCH = 256  # windows read side by side
PIECE = 32  # steps read at a time: the buffers of a 2 x 512 LSTM's read stay near 70 MB
STEPS_PER_LAG = 262_144  # window steps read for one lag of the memory curve: 4,000 positions x 64
DECAY_STEPS = 4096  # lag x windows back-propagated at a time: bounds the training forward's buffers


def lags_up_to(longest: int) -> list[int]:
    """1, 2, 4, ... up to `longest`."""
    lags, k = [], 1
    while k <= longest:
        lags.append(k)
        k *= 2
    return lags


def spread(n: int, count: int, first: int = 1) -> np.ndarray:
    """Up to `count` positions from `first` to n - 1, evenly spaced (all of them when there are few)."""
    if n - first <= count:
        return np.arange(first, n)
    return np.unique(np.linspace(first, n - 1, count).round().astype(np.int64))


def memory_curve(model, params, ids: np.ndarray, positions: np.ndarray, full_nll: np.ndarray,
                 lags: list[int]) -> list[tuple[object, float]]:
    """ids (N,), the positions scored (P,), the NLL of every position read with the whole text
    before it (N,; NaN at 0) -> [(k, nats per token reading only k tokens), ..., ("full", nats)].

    The "full" point is the whole text's loss (`charrnn eval --exact`'s); each k point adds to it
    the mean extra loss of the scored positions when they read only k tokens, so every point is
    measured on the same text and a long text needs only a sample of its positions. A long lag
    scores every 2nd, 4th, ... of the positions (`thinned`)."""
    ids = np.asarray(ids, dtype=np.int64)
    whole = float(np.nanmean(full_nll[1:]))
    stepper = model.stepper(params, 1)
    curve: list[tuple[object, float]] = []
    for k in lags:
        scored = thinned(positions, k)
        nll = full_nll[scored].astype(np.float64)  # those with k or fewer tokens before them read them all
        far = np.flatnonzero(scored > k)
        piece, readers = min(k, PIECE), {}
        for begin in range(0, len(far), BATCH):
            chosen = far[begin: begin + BATCH]
            starts = scored[chosen] - k
            window = ids[starts[None, :] + np.arange(k)[:, None]]  # (k, B): the k tokens before each
            reader = readers.setdefault(len(chosen), stepper.resized(len(chosen)))
            reader.reset(model.initial_state(len(chosen)))
            rest = k % piece  # none for k a power of two
            if rest:
                reader.read(window[:rest], logits=False)
            for at in range(rest, k - piece, piece):
                reader.read(window[at: at + piece], logits=False)
            logits = reader.read(window[k - piece:])[-1]  # pieces of one length: buffers made once per k
            nll[chosen] = token_nll(logits.astype(np.float64), ids[scored[chosen]])
        curve.append((k, whole + float(np.mean(nll - full_nll[scored]))))
    return curve + [("full", whole)]


def thinned(positions: np.ndarray, k: int) -> np.ndarray:
    """positions (P,) -> every s-th of them (s a power of two, so each lag's are among the shorter
    lag's), the fewest thinned to keep P / s * k within `STEPS_PER_LAG`."""
    stride = 1
    while len(positions[::stride]) * k > STEPS_PER_LAG and len(positions[::2 * stride]) > 1:
        stride *= 2
    return positions[::stride]


def gradient_decay(model, params, ids: np.ndarray, states: dict, positions: np.ndarray,
                   lags: list[int]) -> list[tuple[int, float]]:
    """ids (N,), the state before each position `states[p]` (one stream), positions t (P,) ->
    [(k, mean over t of |d loss_t / d h_(t-k)|)] over the lags k that the positions allow."""
    ids = np.asarray(ids, dtype=np.int64)
    decay = []
    for k in lags:
        chosen = [t for t in positions if t - k >= 0 and (t - k) in states]
        if not chosen:
            continue
        norms = []
        batch = max(1, DECAY_STEPS // k)
        for begin in range(0, len(chosen), batch):
            part = np.array(chosen[begin: begin + batch])
            state = State.joined([states[t - k] for t in part])
            window = ids[(part - k)[None, :] + np.arange(k)[:, None]]  # reads t-k .. t-1
            targets = ids[(part - k + 1)[None, :] + np.arange(k)[:, None]]  # predicts t-k+1 .. t
            last = np.zeros(window.shape)
            last[-1] = 1.0  # the loss at t alone
            _, _, _, d_states = model.nll_and_grads(params, window, targets, state, weights_of=last)
            h = np.concatenate([d[0] for d in d_states], axis=1).astype(np.float64)  # every layer's h, (B, L*H)
            norms.extend(np.linalg.norm(h, axis=1))
        decay.append((k, float(np.mean(norms))))
    return decay


def decay_positions(n: int, count: int, longest: int) -> np.ndarray:
    """Positions t for the gradient's decay: up to `count`, evenly spread, with room for the longest lag."""
    return spread(n, count, first=min(longest, max(1, n - 1)))
