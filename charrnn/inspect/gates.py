"""Gate saturation, as Karpathy, Johnson and Fei-Fei plotted it: for each sigmoid gate of each layer,
the fraction of steps each unit spends left-saturated (below 0.1) and right-saturated (above 0.9).
A gate mostly right-saturated passes (a forget gate near 1 remembers); mostly left, it blocks."""

from __future__ import annotations

import numpy as np

LEFT, RIGHT = 0.1, 0.9


class Saturation:
    """Counts, per (layer, gate), how often each unit is below LEFT and above RIGHT."""

    def __init__(self, gates: tuple[str, ...]):
        self.gates, self.n = gates, 0
        self.left: dict[tuple[int, str], np.ndarray] = {}
        self.right: dict[tuple[int, str], np.ndarray] = {}

    def add(self, values: dict[tuple[int, str], np.ndarray]):
        steps = 0
        for (layer, kind), x in values.items():
            if kind in self.gates:
                key = (layer, kind)
                self.left[key] = self.left.get(key, 0) + (x < LEFT).sum(axis=0)
                self.right[key] = self.right.get(key, 0) + (x > RIGHT).sum(axis=0)
                steps = len(x)
        self.n += steps

    def fractions(self) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]:
        """(layer, gate) -> (left fraction (H,), right fraction (H,))."""
        return {key: (self.left[key] / max(1, self.n), self.right[key] / max(1, self.n)) for key in sorted(self.left)}

    def table(self) -> list[dict]:
        """A row per (layer, gate): the mean fractions, and how many units are mostly saturated."""
        rows = []
        for (layer, gate), (left, right) in self.fractions().items():
            rows.append({"layer": layer, "gate": gate, "left": float(left.mean()), "right": float(right.mean()),
                         "units_mostly_left": int((left > 0.5).sum()), "units_mostly_right": int((right > 0.5).sum()),
                         "units": len(left)})
        return rows
