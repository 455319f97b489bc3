"""Every unit's value at every step, as the model reads a text: its hidden state h, and for an
LSTM its cell c, tanh(c) and gates i, f, g, o, for a GRU its gates r, z and candidate n.

The values are those the training forward computes and keeps for its backward (the cells'
buffers), read in chunks of one stream with the state carried across, so a value does not
depend on the chunking. Each chunk is handed on as it is made (nothing of the whole text is
kept here), with the log-probabilities of the next token after each step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from charrnn.nn.head import log_softmax
from charrnn.nn.model import State

KINDS = {"rnn": ("h",), "lstm": ("h", "c", "tanh_c", "i", "f", "g", "o"), "gru": ("h", "r", "z", "n")}
GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z")}  # the sigmoid gates, whose saturation is measured
DEFAULT_CHUNK = 256


@dataclass
class Chunk:
    """`values[(layer, kind)]` (T, H) float32 and the next token's log-probabilities `log_probs`
    (T, V) for positions `begin` to `begin + T` of the text (a position is the step that reads its
    token), and the state before each position asked for in `Recorder.states`."""

    begin: int
    values: dict[tuple[int, str], np.ndarray]
    log_probs: np.ndarray


def kinds(cell: str) -> tuple[str, ...]:
    return KINDS[cell]


def chunk_values(cell: str, buf: dict, H: int) -> dict[str, np.ndarray]:
    """A cell's forward buffers for one stream -> its values by kind, (T, H) each."""
    found = {"h": buf["h"][1:, 0]}
    if cell == "lstm":
        gates = buf["gates"][:, 0]
        found.update({"c": buf["c"][1:, 0], "tanh_c": buf["tanh_c"][:, 0],
                      **{k: gates[:, j * H:(j + 1) * H] for j, k in enumerate("ifgo")}})
    elif cell == "gru":
        gates = buf["gates"][:, 0]
        found.update({k: gates[:, j * H:(j + 1) * H] for j, k in enumerate("rzn")})
    return found


class Recorder:
    """Reads `ids` (N,) with `model` (an RNNLM over `params`) chunk by chunk; `states` maps a
    position to the model's state before it reads that position's token, for the positions asked."""

    def __init__(self, model, params, ids: np.ndarray, chunk: int = DEFAULT_CHUNK, states_at=()):
        self.model, self.params, self.ids, self.chunk = model, params, np.asarray(ids, dtype=np.int64), chunk
        self.wanted = sorted(set(int(p) for p in states_at))
        self.states: dict[int, object] = {}

    def __iter__(self) -> Iterator[Chunk]:
        model, H = self.model, self.model.config.hidden_size
        state = model.initial_state(1)
        wanted = list(self.wanted)
        for begin in range(0, len(self.ids), self.chunk):
            tokens = self.ids[begin: begin + self.chunk, None]
            before = state
            z, state, (_, _, _, caches, _, _) = model.forward(self.params, tokens, state)
            while wanted and wanted[0] < begin + len(tokens):
                position = wanted.pop(0)
                self.states[position] = self.state_before(position - begin, caches, before, tokens)
            values = {}
            for layer, (_, buf, _) in enumerate(caches):
                for kind, array in chunk_values(model.config.cell, buf, H).items():
                    values[(layer, kind)] = np.array(array, dtype=np.float32)
            yield Chunk(begin, values, log_softmax(z[:, 0].astype(np.float64)))

    def state_before(self, k: int, caches, before, tokens: np.ndarray):
        """The state after the chunk's first k tokens, from its forward buffers (one stream)."""
        layers = [tuple(buf[name][k].copy() for name in (("h", "c") if "c" in buf else ("h",)))
                  for _, buf, _ in caches]
        kept = len(before.history)  # a bag-of-words encoder's last tokens
        window = np.concatenate([before.history, tokens[:k]])
        return State(layers, window[len(window) - kept:] if kept else window[:0])
