"""Which units track which features: the Pearson correlation between every unit's value and every
feature over the text, accumulated chunk by chunk (sums of x, x^2, f, f^2 and x f), so a long text
costs no more memory than a short one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Found:
    """One unit and how well it tracks a feature."""

    feature: str
    layer: int
    kind: str
    unit: int
    r: float


class Correlations:
    """Accumulates, per (layer, kind), what Pearson's r between each unit and each feature needs."""

    def __init__(self, features: list[str]):
        self.features, self.n = list(features), 0
        self.sums: dict[tuple[int, str], list[np.ndarray]] = {}
        self.f_sum, self.f_square = np.zeros(len(features)), np.zeros(len(features))

    def add(self, values: dict[tuple[int, str], np.ndarray], features: dict[str, np.ndarray]):
        """values[(layer, kind)] (T, H) and features[name] (T,) of the same T positions."""
        f = np.stack([features[name] for name in self.features], axis=1).astype(np.float64)  # (T, F)
        self.n += len(f)
        self.f_sum += f.sum(axis=0)
        self.f_square += np.square(f).sum(axis=0)
        for key, x in values.items():
            x = x.astype(np.float64)
            sums = self.sums.setdefault(key, [0.0, 0.0, 0.0])
            sums[0] = sums[0] + x.sum(axis=0)  # (H,)
            sums[1] = sums[1] + np.square(x).sum(axis=0)  # (H,)
            sums[2] = sums[2] + x.T @ f  # (H, F)

    def r(self) -> dict[tuple[int, str], np.ndarray]:
        """(layer, kind) -> r (H, F); NaN where a unit or a feature did not vary."""
        n, out = self.n, {}
        f_var = n * self.f_square - np.square(self.f_sum)
        for key, (x_sum, x_square, xf) in self.sums.items():
            x_var = n * x_square - np.square(x_sum)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[key] = (n * xf - np.outer(x_sum, self.f_sum)) / np.sqrt(np.outer(x_var, f_var))
            out[key][~np.isfinite(out[key])] = np.nan
        return out

    def ranked(self, top: int, kinds=None) -> dict[str, list[Found]]:
        """feature -> its `top` units by |r|, best first (none for a feature constant over the text),
        among the values of `kinds` (all of them when None)."""
        found = {name: [] for name in self.features}
        for (layer, kind), r in self.r().items():
            if kinds is not None and kind not in kinds:
                continue
            for j, name in enumerate(self.features):
                found[name].extend(Found(name, layer, kind, int(u), float(r[u, j])) for u in range(len(r))
                                   if np.isfinite(r[u, j]))
        return {name: sorted(units, key=lambda f: -abs(f.r))[:top] for name, units in found.items()}

    def constant(self) -> list[str]:
        """The features that did not vary over the text (no correlation is defined for them)."""
        return [name for j, name in enumerate(self.features)
                if self.n * self.f_square[j] - self.f_sum[j] ** 2 <= 1e-12 * max(1.0, self.n)]
