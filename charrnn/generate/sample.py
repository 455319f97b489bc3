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
    return row_probabilities(logits, *RowSettings.of([settings], [len(logits)]))


@dataclass(frozen=True)
class RowSettings:
    """The sampling settings of each row of a batch, as arrays: temperature (B,), top_k (B,) with
    0 for none, top_p (B,) with 1 for none; so rows of many requests are drawn in one pass."""

    temperature: np.ndarray
    top_k: np.ndarray
    top_p: np.ndarray

    @classmethod
    def of(cls, settings: list[SamplingSettings], rows: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(temperature, top_k, top_p) for `rows[i]` rows of each `settings[i]`, in order."""
        return (np.repeat([s.temperature for s in settings], rows).astype(np.float64),
                np.repeat([s.top_k or 0 for s in settings], rows).astype(np.int64),
                np.repeat([1.0 if s.top_p is None else s.top_p for s in settings], rows).astype(np.float64))


def row_probabilities(logits: np.ndarray, temperature: np.ndarray, top_k: np.ndarray, top_p: np.ndarray) -> np.ndarray:
    """logits (B, V) and each row's settings (B,) -> each row's tempered, truncated distribution
    (B, V) in float64. Every operation is row by row, so a row's distribution is the same
    whatever else is in the batch: greedy rows (temperature 0 or top-k 1) are one-hot at their
    argmax; others are shifted by their maximum, divided by their temperature (unless 1), cut
    to their k largest, normalised, and cut to the smallest set whose mass reaches p."""
    z = logits.astype(np.float64)
    B, V = z.shape
    probs = np.zeros_like(z)
    greedy = (temperature == 0) | (top_k == 1)
    if greedy.any():
        probs[np.flatnonzero(greedy), z[greedy].argmax(axis=1)] = 1.0
    rest = np.flatnonzero(~greedy)
    if len(rest) == 0:
        return probs
    z = z[rest]
    z -= z.max(axis=1, keepdims=True)
    tempered = temperature[rest] != 1
    if tempered.any():
        with np.errstate(over="ignore"):  # (z - max) / tiny T -> -inf for all but the maximum: fine
            z[tempered] /= temperature[rest][tempered][:, None]
    cut = (top_k[rest] > 0) & (top_k[rest] < V)
    if cut.any():
        kth = np.sort(z[cut], axis=1)[np.arange(cut.sum()), V - top_k[rest][cut]][:, None]  # the k-th largest
        z[cut] = np.where(z[cut] >= kth, z[cut], -np.inf)
    part = np.exp(z)
    part /= part.sum(axis=1, keepdims=True)
    nucleus = top_p[rest] < 1
    if nucleus.any():
        chosen = part[nucleus]
        order = np.argsort(-chosen, axis=1, kind="stable")
        ranked = np.take_along_axis(chosen, order, axis=1)
        before = np.cumsum(ranked, axis=1) - ranked  # mass of the tokens ranked above each one
        keep = np.zeros_like(chosen, dtype=bool)
        np.put_along_axis(keep, order, before < top_p[rest][nucleus][:, None], axis=1)  # the smallest set reaching p
        chosen = np.where(keep, chosen, 0.0)
        chosen /= chosen.sum(axis=1, keepdims=True)
        part[nucleus] = chosen
    probs[rest] = part
    return probs


def draw(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """probs (B, V) -> one token per row (B,), by inverse CDF with one uniform per row."""
    return draw_rows(probs, rng.random((len(probs), 1)))


def draw_rows(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """probs (B, V), uniforms (B, 1) in [0, 1) -> the token whose CDF interval holds each (B,)."""
    cdf = np.cumsum(probs, axis=1)
    u = uniforms * cdf[:, -1:]
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
    return state.rows(np.zeros(streams, dtype=np.int64))


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
