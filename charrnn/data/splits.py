"""Prepared splits read through `np.memmap`, and the stateful truncated-BPTT batcher.

The char-rnn scheme: the split is cut into `batch_size` contiguous streams; step k of an epoch
takes tokens [k*T, k*T + T] of every stream, so consecutive steps continue each stream and the
recurrent state can be carried across them. Nothing is read into memory beyond one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.data.prepare import load_meta
from charrnn.data.vocab import Vocabulary
from charrnn.errors import UserError


@dataclass(frozen=True)
class Prepared:
    """A prepared corpus directory: its vocabulary and memory-mapped splits."""

    directory: Path
    vocab: Vocabulary
    splits: dict[str, np.ndarray]

    @classmethod
    def open(cls, directory: Path) -> Prepared:
        meta = load_meta(directory)
        vocab = Vocabulary.from_json((directory / "vocab.json").read_text(encoding="utf-8"))
        splits = {}
        for name, count in meta["tokens"].items():
            path = directory / f"{name}.bin"
            if path.stat().st_size != count * np.dtype(meta["dtype"]).itemsize:
                raise UserError(f"{path} does not match meta.json; run `charrnn prepare --force` again")
            splits[name] = np.memmap(path, dtype=meta["dtype"], mode="r") if count else np.zeros(0, meta["dtype"])
        return cls(directory, vocab, splits)


class StreamBatcher:
    """Batches (x, y), each (T, B), from B contiguous streams of one split.

    `batch(k)` is step k of an epoch; `steps_per_epoch` of them cover the split once. With
    `rows`, only those streams are read (a process's share of the batch under MPI).
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, rows: slice = slice(None)):
        self.tokens = tokens
        self.seq_len = seq_len
        self.stream_len = len(tokens) // batch_size
        self.steps_per_epoch = (self.stream_len - 1) // seq_len
        if self.steps_per_epoch < 1:
            raise UserError(f"the training split ({len(tokens)} tokens) is too small for batch_size {batch_size} x "
                            f"seq_len {seq_len}; lower them or use a larger corpus")
        self.starts = (np.arange(batch_size) * self.stream_len)[rows]
        self.offsets = np.arange(seq_len + 1)[:, None]

    def batch(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Step k of an epoch -> inputs (T, b) and targets (T, b) of the b streams read, both int64."""
        window = np.asarray(self.tokens[self.starts[None, :] + k * self.seq_len + self.offsets], dtype=np.int64)
        return window[:-1], window[1:]
