"""Dynamic evaluation (Krause et al., "Dynamic Evaluation of Neural Sequence Models", ICML 2018):
the model adapts to the text while it reads it.

The text is scored in segments of `seq` tokens (`StreamScorer` with an adapter). After a segment
has been scored, its gradient g (of the mean NLL over the segment) updates the weights, so every
token is scored before the model has trained on it. Two updates, both with decay towards the
original weights theta_0, which keeps the model from drifting away from what it learned:

- `sgd`:  theta <- theta - lr * g + decay * (theta_0 - theta)
- `rms`:  the paper's RMS-normalised update. MS is the mean squared gradient of each weight over
          `CALIBRATION_SEGMENTS` segments of the run's training split (measured once, before
          reading the text); RMS = sqrt(MS), floored at `RMS_FLOOR` times its tensor's mean, and
          RMS_norm = RMS / mean(RMS) per weight tensor:
          theta <- theta - lr * g / RMS + min(1, decay * RMS_norm) * (theta_0 - theta)
          Weights that move a lot in training may adapt more, and are pulled back harder.
          The floor plays the part of the paper's epsilon: a weight the calibration never saw
          move (the input weights of a character absent from its segments) would otherwise take
          a step of lr / eps and never be pulled back; without it a War and Peace model fell
          from 1.12 nats/char to 6.23 (BENCHMARKS.md, "Dynamic evaluation").

The parameters are changed in memory only; the checkpoint on disk never changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from charrnn.errors import UserError

METHODS = ("rms", "sgd")
DEFAULTS = {"rms": {"lr": 2e-4, "decay": 1e-3, "seq": 20},  # tuned on two texts: see BENCHMARKS.md
            "sgd": {"lr": 0.03, "decay": 0.0, "seq": 50}}
CALIBRATION_SEGMENTS = 100
RMS_FLOOR = 0.1  # chosen on the first 20,000 val characters of two runs: BENCHMARKS.md


@dataclass(frozen=True)
class DynamicSettings:
    method: str = "rms"
    lr: float | None = None  # None: the method's default
    decay: float | None = None
    seq: int | None = None

    @property
    def learning_rate(self) -> float:
        return DEFAULTS[self.method]["lr"] if self.lr is None else self.lr

    @property
    def decay_rate(self) -> float:
        return DEFAULTS[self.method]["decay"] if self.decay is None else self.decay

    @property
    def segment(self) -> int:
        return DEFAULTS[self.method]["seq"] if self.seq is None else self.seq

    def validate(self):
        if self.method not in METHODS:
            raise UserError(f"--dynamic-method must be one of {', '.join(METHODS)}, not {self.method!r}")
        for name, value in (("--dynamic-lr", self.learning_rate), ("--dynamic-decay", self.decay_rate)):
            if not math.isfinite(value) or value < 0:
                raise UserError(f"{name} must be a finite number of at least 0, not {value}")
        if self.segment < 1:
            raise UserError(f"--dynamic-seq must be at least 1, not {self.segment}")

    def describe(self) -> dict:
        return {"method": self.method, "lr": self.learning_rate, "decay": self.decay_rate, "seq": self.segment}


class Diverged(UserError):
    """The adapted weights left the finite numbers: the learning rate is far too large."""


def check_finite(params: dict[str, np.ndarray], lr: float):
    """Raise `Diverged` if an update made any weight NaN or infinite (one pass over the weights,
    against the segment's backward pass of `seq` steps)."""
    if not all(np.isfinite(p).all() for p in params.values()):
        raise Diverged(f"dynamic evaluation diverged: the adapted weights are no longer finite numbers; "
                       f"lower --dynamic-lr (now {lr:g})")


class SGDAdapter:
    """theta <- theta - lr * g + decay * (theta_0 - theta), in place."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, decay: float):
        self.original = {k: v.copy() for k, v in params.items()} if decay else None  # only decay needs it
        self.lr, self.decay = lr, decay

    def update(self, params, grads):
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging update is caught below
            for name, p in params.items():
                p -= self.lr * grads[name]
                if self.decay:
                    p += self.decay * (self.original[name] - p)
        check_finite(params, self.lr)


class RMSAdapter:
    """The RMS-normalised update with decay scaled by RMS_norm (see the module docstring)."""

    def __init__(self, params: dict[str, np.ndarray], mean_square: dict[str, np.ndarray], lr: float, decay: float):
        self.original, self.lr = {k: v.copy() for k, v in params.items()}, lr
        root = {k: floored_root(v) for k, v in mean_square.items()}
        self.scale = {k: (lr / r).astype(params[k].dtype) for k, r in root.items()}
        self.pull = {k: np.minimum(1.0, decay * r / float(r.mean())).astype(params[k].dtype) for k, r in root.items()}

    def update(self, params, grads):
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging update is caught below
            for name, p in params.items():
                p -= self.scale[name] * grads[name]
                p += self.pull[name] * (self.original[name] - p)
        check_finite(params, self.lr)


def floored_root(mean_square: np.ndarray) -> np.ndarray:
    """One tensor's mean squared gradients (any shape) -> their roots, none below `RMS_FLOOR` times
    the tensor's mean root (same shape); a tensor whose gradients were all zero gets 1s, so its
    steps are lr * g, not infinite."""
    root = np.sqrt(mean_square)
    mean = float(root.mean())
    return np.maximum(root, RMS_FLOOR * mean) if mean > 0 else np.ones_like(root)


def mean_square_gradients(model, params, tokens: np.ndarray, seq: int,
                          segments: int = CALIBRATION_SEGMENTS) -> dict[str, np.ndarray]:
    """The mean squared gradient of each weight over `segments` random segments of `seq` tokens
    of a training split tokens (N,), each read from a zero state, as dynamic evaluation reads them."""
    if len(tokens) < seq + 2:
        raise UserError("the training split is too short to calibrate --dynamic-method rms; use sgd")
    rng = np.random.default_rng(0)  # fixed: the same text always gets the same score
    starts = rng.integers(0, len(tokens) - seq - 1, segments)
    total = {k: np.zeros_like(v, dtype=np.float64) for k, v in params.items()}
    for start in starts:
        window = np.asarray(tokens[start: start + seq + 1], dtype=np.int64)
        _, grads, _, _ = model.nll_and_grads(params, window[:-1, None], window[1:, None], model.initial_state(1))
        for name, g in grads.items():
            total[name] += np.square(g, dtype=np.float64)
    return {k: v / segments for k, v in total.items()}


def make_adapter(settings: DynamicSettings, model, params, train_tokens: np.ndarray | None):
    """The adapter for `StreamScorer`; `rms` calibrates on the training split first."""
    if settings.method == "sgd":
        return SGDAdapter(params, settings.learning_rate, settings.decay_rate)
    if train_tokens is None:
        raise UserError("--dynamic-method rms measures gradient scales on the run's training split, which is "
                        "not available; use --dynamic-method sgd")
    mean_square = mean_square_gradients(model, params, train_tokens, settings.segment)
    return RMSAdapter(params, mean_square, settings.learning_rate, settings.decay_rate)
