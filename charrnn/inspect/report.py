"""A text -> everything `charrnn inspect` shows: the units that track features, gate saturation, the
memory curve and the gradient's decay, and (for the page and `--states`) the values themselves.

The text is read once, chunk by chunk (`values.Recorder`); every figure is accumulated as the
chunks pass, so memory stays flat however long the text, except for what the caller asks to keep:
for the page's first `page_tokens` tokens, the values of its kinds quantised to 8 bits and the five
likeliest next tokens at each position; for `--states`, every value as float16 in a file per
(layer, kind) on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charrnn.inspect import features as text_features
from charrnn.inspect.gates import Saturation
from charrnn.inspect.memory import decay_positions, gradient_decay, lags_up_to, memory_curve, spread
from charrnn.inspect.units import Correlations, Found
from charrnn.inspect.values import GATES, Recorder, kinds

TOP_NEXT = 5
LONGEST_LAG = 1024
MEMORY_POSITIONS = 4000  # scored positions for the memory curve (all of them in a shorter text)
DECAY_POSITIONS = 32


@dataclass
class Settings:
    """What to compute: user features (name, pattern), how many units per feature, how many tokens
    the page shows, which kinds it holds, and where `--states` puts every value (None: nowhere)."""

    extra: list = field(default_factory=list)
    top: int = 3
    page_tokens: int = 20_000
    page_kinds: tuple[str, ...] = ()
    states_dir: Path | None = None


@dataclass
class Kept:
    """The values kept for the page: per (layer, kind) uint8 (H, T) with each unit's lo and hi
    (value = lo + q / 255 * (hi - lo)); the five likeliest next tokens (T, 5) and their probabilities."""

    values: dict = field(default_factory=dict)
    top_ids: np.ndarray | None = None
    top_probs: np.ndarray | None = None


@dataclass
class Report:
    token_ids: np.ndarray
    layers: int
    units: int
    tokens: int
    found: dict[str, list[Found]]
    correlations: Correlations
    constant: list[str]
    saturation: list[dict]
    saturation_units: dict
    memory: list[tuple[object, float]]
    exact_nats: float
    decay: list[tuple[int, float]]
    kept: Kept
    states: dict[tuple[int, str], Path]

    def as_json(self) -> dict:
        return {"tokens": self.tokens, "exact_nats": self.exact_nats,
                "units": {name: [{"layer": f.layer + 1, "kind": f.kind, "unit": f.unit, "r": round(f.r, 4)}
                                 for f in found] for name, found in self.found.items()},
                "constant_features": self.constant,
                "saturation": self.saturation,
                "memory": [{"context": k, "nats": x} for k, x in self.memory],
                "gradient_decay": [{"lag": k, "norm": x} for k, x in self.decay]}


def inspect(model, params, vocab, ids: np.ndarray, settings: Settings, on_tokens=None) -> Report:
    """Read `ids` (N,), N >= 2, with the model and compute every figure (see the module docstring)."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < 2:
        raise ValueError("inspect needs at least two tokens: the first is read, the second scored")
    n, cell = len(ids), model.config.cell
    token_texts = [vocab.tokens[i] for i in ids]
    feats = text_features.token_features(token_texts, settings.extra)
    correlations = Correlations(list(feats))
    saturation = Saturation(GATES.get(cell, ()))
    lags = lags_up_to(min(LONGEST_LAG, max(1, n - 1)))
    targets = decay_positions(n, DECAY_POSITIONS, lags[-1])
    recorder = Recorder(model, params, ids, states_at={t - k for t in targets for k in lags if t - k >= 0})
    full_nll = np.full(n, np.nan)
    kept, keep = Kept(), min(settings.page_tokens, n) if settings.page_kinds else 0
    states = open_states(settings.states_dir, model, n) if settings.states_dir is not None else {}
    tops_ids, tops_probs, page_parts = [], [], {}
    for chunk in recorder:
        T = len(chunk.log_probs)
        span = slice(chunk.begin, chunk.begin + T)
        correlations.add(chunk.values, {name: values[span] for name, values in feats.items()})
        saturation.add(chunk.values)
        after = ids[chunk.begin + 1: chunk.begin + T + 1]  # each step predicts the next token
        full_nll[chunk.begin + 1: chunk.begin + 1 + len(after)] = -chunk.log_probs[np.arange(len(after)), after]
        for (layer, kind), values in chunk.values.items():
            if (layer, kind) in states:
                states[(layer, kind)][span] = values
        if chunk.begin < keep:
            room = min(T, keep - chunk.begin)
            best = np.argsort(-chunk.log_probs[:room], axis=1, kind="stable")[:, :TOP_NEXT]
            tops_ids.append(best)
            tops_probs.append(np.exp(np.take_along_axis(chunk.log_probs[:room], best, axis=1)))
            for (layer, kind), values in chunk.values.items():
                if kind in settings.page_kinds:
                    page_parts.setdefault((layer, kind), []).append(values[:room])
        if on_tokens is not None:
            on_tokens(T)
    for array in states.values():
        array.flush()
    if page_parts:
        kept.values = {key: quantise(np.concatenate(parts)) for key, parts in page_parts.items()}
        kept.top_ids, kept.top_probs = np.concatenate(tops_ids), np.concatenate(tops_probs)
    positions = spread(n, MEMORY_POSITIONS)
    memory = memory_curve(model, params, ids, positions, full_nll, lags)
    decay = gradient_decay(model, params, ids, recorder.states, targets, lags)
    return Report(ids, model.config.num_layers, model.config.hidden_size, n, correlations.ranked(settings.top),
                  correlations, correlations.constant(), saturation.table(), saturation.fractions(), memory,
                  memory[-1][1], decay, kept, {key: Path(array.filename) for key, array in states.items()})


def quantise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """values (T, H) -> (uint8 (H, T), lo (H,), hi (H,)): each unit scaled over its own range."""
    lo, hi = values.min(axis=0), values.max(axis=0)
    scale = np.where(hi > lo, hi - lo, 1.0)
    q = np.rint((values - lo) / scale * 255).clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(q.T), lo.astype(np.float32), hi.astype(np.float32)


def open_states(directory: Path, model, keep: int) -> dict:
    """A float16 (T, H) memory map per (layer, kind) in `directory`, for `--states`."""
    H = model.config.hidden_size
    return {(layer, kind): np.lib.format.open_memmap(Path(directory) / f"layer{layer + 1}_{kind}.npy", mode="w+",
                                                     dtype=np.float16, shape=(keep, H))
            for layer in range(model.config.num_layers) for kind in kinds(model.config.cell)}
