"""Pretrained word vectors for word-level models (`model.pretrained_embeddings`).

Reads the common text format (word2vec's text output, GloVe, fastText `.vec`): an optional header
line `COUNT DIM`, then one word per line followed by its DIM numbers, separated by spaces. The
file is streamed and only the rows of words in the vocabulary are kept, so a large file costs
vocabulary x DIM memory. Rows for words not found keep their random start. A malformed file
(not UTF-8, ragged rows, a row of the wrong size, a value that is not a number) is refused with
one line naming the line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.errors import UserError
from charrnn.vocab import Vocabulary


@dataclass
class Vectors:
    """The rows found: `ids` (N,) into the vocabulary, `rows` (N, dim), out of `vocab_size` words."""

    dim: int
    ids: np.ndarray
    rows: np.ndarray
    vocab_size: int

    def describe(self, path) -> str:
        share = len(self.ids) / self.vocab_size
        return f"pretrained embeddings: {len(self.ids):,} of {self.vocab_size:,} tokens found in {path} ({share:.1%}), dim {self.dim}"


def numbers(fields: list[str], path, line: int) -> list[float]:
    try:
        values = [float(f) for f in fields]
    except ValueError:
        bad = next(f for f in fields if not is_number(f))
        raise UserError(f"{path}: line {line}: {bad[:20]!r} is not a number; give word vectors in text format") from None
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"{path}: line {line} holds a value that is not finite")
    return values


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_vectors(path: Path, vocab: Vocabulary) -> Vectors:
    """Stream the file; keep the vectors of words in `vocab` (the first one of a word repeated)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model.pretrained_embeddings: {path} is not a file")
    dim, found = None, {}
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                fields = raw.decode("utf-8").rstrip("\r\n").rstrip(" ").split(" ")
            except UnicodeDecodeError:
                raise UserError(f"{path}: line {number} is not UTF-8 text; give word vectors in text format") from None
            if number == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):
                dim = int(fields[1])  # the header: count, dimension
                continue
            if fields == [""]:
                continue
            if dim is None:
                dim = len(fields) - 1
            if len(fields) - 1 != dim or dim < 1:
                raise UserError(f"{path}: line {number} has {len(fields) - 1} numbers where {dim} were expected")
            values = numbers(fields[1:], path, number)
            token = vocab.index.get(fields[0])
            if token is not None and token not in found:
                found[token] = values
    if dim is None:
        raise UserError(f"{path} holds no word vectors")
    ids = np.array(sorted(found), dtype=np.int64)
    rows = np.array([found[i] for i in ids], dtype=np.float64).reshape(len(ids), dim)
    return Vectors(dim, ids, rows, vocab.size)
