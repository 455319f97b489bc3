"""Sampling: logits -> temperature -> top-k / top-p truncation -> softmax -> draw.

All streams are generated as one batch through the model's single-step API. Temperature 0 (or
top-k 1) is the argmax. Probabilities are computed in float64 from logits shifted by their
maximum before the temperature divides them, so any finite temperature, however small or large,
gives a proper distribution (a tiny one is greedy up to ties), never NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from charrnn.data.vocab import Vocabulary
from charrnn.errors import UserError


class SettingError(UserError):
    """A generation setting out of range. `field` is its name in the API (`top_k`); the message
    names it as the command-line flag (`--top-k`)."""

    def __init__(self, name: str, rule: str):
        self.field, self.rule = name, rule
        super().__init__(f"--{name.replace('_', '-')} {rule}")


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def validate(self):
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise SettingError("temperature", f"must be 0 (greedy) or a finite positive number, not {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise SettingError("top_k", f"must be at least 1, not {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise SettingError("top_p", f"must be in (0, 1], not {self.top_p}")


def next_token_probabilities(logits: np.ndarray, settings: SamplingSettings) -> np.ndarray:
    """logits (B, V) -> the tempered, truncated distribution (B, V) in float64."""
    z = logits.astype(np.float64)
    if settings.temperature == 0 or settings.top_k == 1:
        probs = np.zeros_like(z)
        probs[np.arange(len(z)), z.argmax(axis=1)] = 1.0
        return probs
    z -= z.max(axis=1, keepdims=True)
    if settings.temperature != 1:
        with np.errstate(over="ignore"):  # (z - max) / tiny T -> -inf for all but the maximum: fine
            z /= settings.temperature
    if settings.top_k is not None and settings.top_k < z.shape[1]:
        kth = np.partition(z, -settings.top_k, axis=1)[:, -settings.top_k][:, None]
        z = np.where(z >= kth, z, -np.inf)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    if settings.top_p is not None and settings.top_p < 1:
        order = np.argsort(-probs, axis=1, kind="stable")
        ranked = np.take_along_axis(probs, order, axis=1)
        before = np.cumsum(ranked, axis=1) - ranked  # mass of the tokens ranked above each one
        keep = np.zeros_like(probs, dtype=bool)
        np.put_along_axis(keep, order, before < settings.top_p, axis=1)  # the smallest set reaching p
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=1, keepdims=True)
    return probs


def draw(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """probs (B, V) -> one token per row (B,), by inverse CDF with one uniform per row."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((len(probs), 1)) * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=1), probs.shape[1] - 1)


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def encode_prime(prime: str, vocab: Vocabulary) -> tuple[np.ndarray, str, list[str]]:
    """-> (the prime's ids (P,), the text shown before the continuation, unknown tokens mapped to <unk>).

    Without a prime, generation starts after a newline (not shown) when the vocabulary has one,
    else after its most frequent token. Unknown tokens map to `<unk>` where the vocabulary has it
    (word level) and are an error naming them otherwise.
    """
    if not prime:
        start = vocab.index.get("\n", int(np.argmax(vocab.counts)))
        return np.array([start]), "" if vocab.tokens[start] == "\n" else vocab.tokens[start], []
    ids, pieces = vocab.lookup(prime)
    unknown = sorted(set(vocab.unknown_in(prime, ids, pieces)))
    if unknown and vocab.unk_id is None:
        listed = " ".join(repr(c) for c in unknown[:20]) + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
        kind = "characters" if vocab.level == "char" else "words"
        raise UserError(f"the prime has {kind} the model never saw: {listed}; "
                        f"remove them or train on text that has them")
    if unknown:
        ids[ids < 0] = vocab.unk_id
    return ids, prime, unknown


def primed_stepper(model, params, prime: np.ndarray, streams: int, state=None):
    """A stepper for `streams` streams that has read all of `prime` (P >= 1 ids) but its last id,
    starting from `state` (one stream's, repeated) or from zeros -> (stepper, last ids (streams,))."""
    stepper = model.stepper(params, streams)
    if state is not None:
        stepper.reset(repeat_state(state, streams))
    if len(prime) > 1:
        context = np.repeat(np.asarray(prime[:-1], np.int64)[:, None], streams, axis=1)
        stepper.read(context)
    return stepper, np.full(streams, prime[-1], dtype=np.int64)


def repeat_state(state, streams: int):
    """One stream's state (each array (1, H); history (K-1, 1)) -> the same for `streams` streams."""
    return rows_of(state, np.zeros(streams, dtype=np.int64))


def rows_of(state, rows: np.ndarray):
    """The state of streams `rows` (R,) of a batch, copied: each array (R, H), history (K-1, R)."""
    from charrnn.nn.model import State

    return State([tuple(a[rows] for a in layer) for layer in state.layers], state.history[:, rows])


def token_stream(stepper, current: np.ndarray, settings: SamplingSettings,
                 rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Feed `current` (B,), then for ever: yield (the tokens drawn (B,), the logits (B, V) and the
    distribution (B, V) they were drawn from), feeding each draw back in. One uniform per stream per step."""
    while True:
        logits = stepper.step(current)
        probs = next_token_probabilities(logits, settings)
        current = draw(probs, rng)
        yield current, logits, probs


def generate(model, params, prime: np.ndarray, length: int, num_samples: int, settings: SamplingSettings,
             rng: np.random.Generator) -> np.ndarray:
    """Feed `prime` (P >= 1 ids) to every stream, then draw `length` tokens per stream -> (M, length)."""
    stepper, current = primed_stepper(model, params, prime, num_samples)
    out = np.empty((num_samples, length), dtype=np.int64)
    for t, (tokens, _, _) in zip(range(length), token_stream(stepper, current, settings, rng)):
        out[:, t] = tokens
    return out
