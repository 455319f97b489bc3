"""Vocabulary: the strict, deterministic map between text and token ids.

Two levels. At char level every token is one character, ids follow code-point order (so the
ids of Tiny Shakespeare match nanoGPT's `sorted(set(text))`), and `decode(encode(text)) == text`.
At word level the tokens are runs of word characters, of whitespace and of punctuation, so
decoding gives back the text exactly; rare words map to `<unk>`. An unknown token is an error
that names it, never a silent map to id 0.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from charrnn.errors import UserError

UNK = "<unk>"
LEVELS = ("char", "word")
WORD_PATTERN = re.compile(r"\w+|\s+|[^\w\s]+")


def tokenize(text: str, level: str) -> list[str]:
    """Split text into tokens of the given level; `"".join(tokens) == text`."""
    return list(text) if level == "char" else WORD_PATTERN.findall(text)


def codepoints(text: str) -> np.ndarray:
    """text -> (len(text),) uint32 code points, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def dtype_for(size: int) -> np.dtype:
    """The smallest little-endian unsigned dtype that holds ids below `size`."""
    for candidate in ("<u1", "<u2", "<u4"):
        if size <= np.iinfo(candidate).max + 1:
            return np.dtype(candidate)
    raise ValueError(f"vocabulary of {size} tokens is too large")


class UnknownTokensError(UserError):
    """Raised when text holds tokens the vocabulary does not know."""

    def __init__(self, unknown: Iterable[str]):
        self.unknown = sorted(set(unknown))
        shown = " ".join(repr(token) for token in self.unknown[:20])
        more = f" and {len(self.unknown) - 20} more" if len(self.unknown) > 20 else ""
        super().__init__(f"not in the vocabulary: {shown}{more}")


@dataclass(frozen=True)
class Vocabulary:
    """An ordered token list with counts; the id of a token is its position."""

    level: str
    tokens: tuple[str, ...]
    counts: tuple[int, ...]
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    char_table: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.level not in LEVELS:
            raise UserError(f"unknown vocabulary level {self.level!r}; use one of {', '.join(LEVELS)}")
        object.__setattr__(self, "index", {token: i for i, token in enumerate(self.tokens)})
        object.__setattr__(self, "char_table", self._build_char_table())

    def _build_char_table(self) -> np.ndarray:
        """Code point -> id lookup for char level, -1 where unknown; the last entry is always -1,
        so clipping a larger code point onto it marks it unknown."""
        chars = [t for t in self.tokens if len(t) == 1] if self.level == "char" else []
        table = np.full(max((ord(c) for c in chars), default=-1) + 2, -1, dtype=np.int64)
        for char in chars:
            table[ord(char)] = self.index[char]
        return table

    @classmethod
    def from_counts(cls, counts: Counter, level: str, max_vocab: int | None = None,
                    min_count: int = 1) -> Vocabulary:
        """Keep tokens seen at least `min_count` times, the `max_vocab` most frequent at most.

        Char level orders tokens by code point, word level by falling count then text; `<unk>`
        comes first, with the count of what it replaced, whenever anything was dropped.
        """
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept = [(t, c) for t, c in ranked if c >= min_count]
        if max_vocab is not None and len(kept) > max_vocab:
            kept = kept[: max_vocab - 1]  # one place is left for <unk>
        if level == "char":
            kept.sort(key=lambda item: item[0])
        dropped = sum(counts.values()) - sum(c for _, c in kept)
        if len(kept) < len(counts):
            kept.insert(0, (UNK, dropped))
        return cls(level, tuple(t for t, _ in kept), tuple(c for _, c in kept))

    def grown(self, counts: Counter) -> Vocabulary:
        """This vocabulary with the tokens of `counts` it lacks appended, so every old token keeps its
        id (fine-tuning keeps its weights): in code-point order at char level, by falling count then
        text at word level. Counts become those of `counts` (0 for old tokens it lacks)."""
        new = [t for t in counts if t not in self.index]
        new.sort(key=(lambda t: t) if self.level == "char" else (lambda t: (-counts[t], t)))
        tokens = (*self.tokens, *new)
        return Vocabulary(self.level, tokens, tuple(int(counts.get(t, 0)) for t in tokens))

    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def unk_id(self) -> int | None:
        return self.index.get(UNK)

    @property
    def dtype(self) -> np.dtype:
        return dtype_for(self.size)

    def lookup(self, text: str) -> tuple[np.ndarray, list[str]]:
        """text -> (ids (N,) int64 with -1 for unknown tokens, the list of N tokens or [] at char level).

        The token list is only built at word level, where it is needed to report unknowns.
        """
        if self.level == "char":
            return np.take(self.char_table, codepoints(text), mode="clip"), []
        tokens = tokenize(text, self.level)
        return np.array([self.index.get(t, -1) for t in tokens], dtype=np.int64), tokens

    def unknown_in(self, text: str, ids: np.ndarray, tokens: list[str]) -> list[str]:
        """The tokens of `text` that `lookup` marked -1."""
        missing = np.flatnonzero(ids < 0)
        if self.level == "char":
            return [text[i] for i in missing]
        return [tokens[i] for i in missing]

    def encode(self, text: str) -> np.ndarray:
        """text -> (N,) int64 ids. Unknown tokens become `<unk>` if there is one, else an error."""
        ids, tokens = self.lookup(text)
        if (ids < 0).any():
            if self.unk_id is None:
                raise UnknownTokensError(self.unknown_in(text, ids, tokens))
            ids[ids < 0] = self.unk_id
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """(N,) ids -> text."""
        tokens = self.tokens
        return "".join(tokens[int(i)] for i in ids)

    def to_json(self) -> str:
        return json.dumps({"level": self.level, "unk_id": self.unk_id, "tokens": list(self.tokens),
                           "counts": list(self.counts)}, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        try:
            data = json.loads(text)
            return cls(data["level"], tuple(data["tokens"]), tuple(data["counts"]))
        except (ValueError, KeyError, TypeError) as error:
            raise UserError(f"vocabulary file is damaged ({error}); run `charrnn prepare` again") from None
