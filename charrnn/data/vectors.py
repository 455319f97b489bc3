"""Pretrained word vectors for word-level models (`model.pretrained_embeddings`).

Reads the common text format (word2vec's text output, GloVe, fastText `.vec`): an optional header
line `COUNT DIM`, then one word per line followed by its DIM numbers, separated by spaces or tabs.
The file is streamed a line at a time (no line may pass MAX_LINE_BYTES, so a file without line
breaks is refused early) and only the rows of words in the vocabulary are kept, so a large file
costs vocabulary x DIM memory. Rows for words not found keep their random start. A malformed file
(not UTF-8, ragged rows, a row of the wrong size, a value that is not a number) is refused with
one line naming the line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from charrnn.data.vocab import Vocabulary
from charrnn.errors import UserError

MAX_LINE_BYTES = 1 << 20  # a 300-dimensional fastText line is about 3 KB
SEPARATORS = re.compile(r"[ \t]+")


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


def bounded_lines(handle: BinaryIO, path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of each line, none longer than MAX_LINE_BYTES: a file without line
    breaks is refused at its first MiB, not read whole into memory."""
    number = 0
    while raw := handle.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise UserError(f"{path}: line {number} is longer than {MAX_LINE_BYTES >> 20} MiB; a word-vector file "
                            f"holds one word and its numbers per line")
        yield number, raw


def word_and_numbers(fields: list[str], dim: int | None) -> tuple[str, list[str]]:
    """A line's fields -> (word, its number fields). With a known `dim`, a word that itself holds
    spaces (as a few of GloVe's do) keeps them, as long as none of its parts reads as a number."""
    if dim is not None and len(fields) - 1 > dim and not any(is_number(f) for f in fields[1:-dim]):
        return " ".join(fields[:-dim]), fields[-dim:]
    return fields[0], fields[1:]


def read_vectors(path: Path, vocab: Vocabulary) -> Vectors:
    """Stream the file; keep the vectors of words in `vocab` (the first one of a word repeated)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model.pretrained_embeddings: {path} is not a file")
    dim, found = None, {}
    with open(path, "rb") as handle:
        for number, raw in bounded_lines(handle, path):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"{path}: line {number} is not UTF-8 text; give word vectors in text format") from None
            fields = SEPARATORS.split(text.strip(" \t\r\n"))
            if fields == [""]:
                continue
            if number == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):
                dim = int(fields[1])  # the header: count, dimension
                continue
            word, values = word_and_numbers(fields, dim)
            if not values:
                raise UserError(f"{path}: line {number} holds a word but no numbers; give word vectors in text format "
                                f"(a word, then its numbers, separated by spaces or tabs)")
            dim = len(values) if dim is None else dim
            if len(values) != dim:
                raise UserError(f"{path}: line {number} has {len(values)} numbers where {dim} were expected")
            values = numbers(values, path, number)
            token = vocab.index.get(word)
            if token is not None and token not in found:
                found[token] = values
    if dim is None:
        raise UserError(f"{path} holds no word vectors")
    ids = np.array(sorted(found), dtype=np.int64)
    rows = np.array([found[i] for i in ids], dtype=np.float64).reshape(len(ids), dim)
    return Vectors(dim, ids, rows, vocab.size)
