"""Scoring text: a stream fed in pieces of any size, adapting or not, and a text's tokens with
what the vocabulary lacks counted, skipped or mapped to <unk>.

The figure itself, the summed NLL of a token stream read in chunks (`Score`, `score`), is
`charrnn.nn.scoring`'s, which training validates with too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.data.prepare import chunked_tokens
from charrnn.data.splits import Prepared
from charrnn.data.vocab import UnknownTokensError, Vocabulary
from charrnn.errors import UserError
from charrnn.nn.scoring import Score


class StreamScorer:
    """Scores one continuous stream fed in pieces of any size: each token is predicted from all
    tokens fed before it, with the state carried, so the result does not depend on the pieces.

    With an `adapter` (dynamic evaluation, see `charrnn.score.dynamic`), each chunk is scored first and
    then handed with its gradient to `adapter.update(params, grads)`, which changes `params` in
    place: no token is ever scored by parameters that were trained on it."""

    def __init__(self, model, params, chunk: int = 512, adapter=None):
        self.model, self.params, self.chunk, self.adapter = model, params, chunk, adapter
        self.state = model.initial_state(1)
        self.previous: int | None = None
        self.nats, self.tokens = 0.0, 0

    def feed(self, ids: np.ndarray) -> np.ndarray:
        """ids (N,) -> the NLL in nats of each predicted token (N,), or (N-1,) for the very first piece."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.previous is not None:
            ids = np.concatenate([[self.previous], ids])
        if len(ids) == 0:
            return np.zeros(0)
        self.previous = int(ids[-1])
        pieces = []
        for begin in range(0, len(ids) - 1, self.chunk):
            window = ids[begin: begin + self.chunk + 1]
            inputs, targets = window[:-1, None], window[1:, None]
            if self.adapter is None:
                nll, self.state = self.model.token_nll(self.params, inputs, targets, self.state)
            else:
                nll, grads, self.state, _ = self.model.nll_and_grads(self.params, inputs, targets, self.state)
                self.adapter.update(self.params, grads)
            pieces.append(nll[:, 0])
        nll = np.concatenate(pieces) if pieces else np.zeros(0)
        self.nats += float(nll.sum(dtype=np.float64))
        self.tokens += len(nll)
        return nll

    @property
    def score(self) -> Score:
        return Score(self.nats, self.tokens)


@dataclass
class TextScore:
    """What `charrnn eval` reports. For a page (`keep`), every token of the text as shown, with
    the NLL of its prediction (NaN where there is none: the first token, unknown tokens skipped)
    and whether the vocabulary lacks it."""

    score: Score
    unknown: int
    unknown_handling: str
    shown: list[str]
    nll: np.ndarray
    unknown_mask: np.ndarray


def unknown_handling(vocab: Vocabulary, strict: bool) -> str:
    """What happens to tokens the vocabulary lacks, as `charrnn eval` reports it."""
    return "error" if strict else ("mapped to <unk>" if vocab.unk_id is not None else "skipped")


def known_ids(text: str, vocab: Vocabulary, strict: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """text -> (ids fed to the model, the unknown mask over all of the text's tokens (N,), its
    tokens at word level); unknowns map to <unk> if the vocabulary has it, else are dropped (the
    state is not advanced); with `strict` they are an error."""
    ids, pieces = vocab.lookup(text)
    missing = ids < 0
    if missing.any() and strict:
        raise UnknownTokensError(vocab.unknown_in(text, ids, pieces))
    if missing.any() and vocab.unk_id is not None:
        ids = np.where(missing, vocab.unk_id, ids)
    elif missing.any():
        ids = ids[~missing]
    return ids, missing, pieces


class TextScorer:
    """Scores texts held in memory, fed one after another as one stream (the server's /v1/score):
    unknown tokens are skipped or mapped to <unk>, as `charrnn eval` does. With `keep`, it also
    keeps every token as shown with its NLL, for per-token surprisal."""

    def __init__(self, model, params, vocab: Vocabulary, keep: bool = False):
        self.scorer = StreamScorer(model, params)
        self.vocab, self.keep = vocab, keep
        self.unknown, self.shown, self.nll_parts, self.masks = 0, [], [], []

    def feed(self, text: str):
        first = self.scorer.previous is None
        ids, missing, pieces = known_ids(text, self.vocab, strict=False)
        self.unknown += int(missing.sum())
        nll = self.scorer.feed(ids)
        if self.keep:
            self.shown.extend(pieces or list(text))
            self.masks.append(missing)
            self.nll_parts.append(spread(nll, missing, self.vocab.unk_id is not None, first))

    def result(self) -> TextScore:
        handling = unknown_handling(self.vocab, strict=False)
        return TextScore(self.scorer.score, self.unknown, handling, self.shown, concat(self.nll_parts, np.float64),
                         concat(self.masks, bool))


def spread(nll: np.ndarray, missing: np.ndarray, mapped: bool, first: bool) -> np.ndarray:
    """The NLLs of the tokens fed, placed over all the text's tokens (N,): NaN where a skipped
    unknown was not fed, and for the very first token, which nothing predicts."""
    fed = np.ones_like(missing) if mapped else ~missing
    out = np.full(len(missing), np.nan)
    positions = np.flatnonzero(fed)
    out[positions[1:] if first else positions] = nll
    return out


def training_tokens(meta: dict) -> np.ndarray | None:
    """The train split of the corpus a checkpoint was trained on, or None if it is gone."""
    try:
        return Prepared.open(Path(meta["data"])).splits["train"]
    except (UserError, OSError):
        return None


def word_aware(texts, level: str):
    """Text chunks re-cut so that no word-level token is split between two chunks."""
    if level == "char":
        yield from texts
        return
    for tokens in chunked_tokens(texts, level):
        yield "".join(tokens)


def concat(parts, dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)
