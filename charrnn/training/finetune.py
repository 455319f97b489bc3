"""Fine-tuning: start a model on new text from a trained model's parameters.

The vocabulary becomes the union: the old tokens keep their ids, the new corpus's other tokens
are appended (`Vocabulary.grown`). `grow` then carries every trained weight over into the larger
model: each array is copied into the leading corner of a freshly initialised one, so the new
input columns (one-hot, bag-of-words), embedding rows and head rows keep their fresh-start
values, and tokens absent from the new corpus keep their trained weights.

The new tokens' head biases start at the smallest trained head bias, not at a fresh start's
near-zero value: after training, a known token's bias sits near its log-frequency, far below
zero for most, so a new token at 0 would take a large share of the probability in the first
steps and cost a loss spike on every other token. Starting it as unlikely as the rarest known
token lets it rise as the new text shows it.
"""

from __future__ import annotations

import numpy as np


def grow(trained: dict[str, np.ndarray], fresh: dict[str, np.ndarray], old_vocab: int) -> dict[str, np.ndarray]:
    """trained params (old vocabulary) + fresh params of the grown model -> the grown model's params."""
    grown = {}
    for name, value in fresh.items():
        old = trained[name]
        value = value.copy()
        value[tuple(slice(0, n) for n in old.shape)] = old
        grown[name] = value
    grown["head.bias"][old_vocab:] = trained["head.bias"].min()
    return grown
