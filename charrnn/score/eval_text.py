"""What `charrnn eval` does with texts or a split, in memory that stays flat whatever their size.

1. The token ids the model reads: a prepared split as it is (a memory map), or text files
   encoded chunk by chunk into a temporary file of int32 ids, with unknown tokens skipped or
   mapped to <unk> as `charrnn eval` promises (an error with `strict`).
2. Scoring them: by a `charrnn.score.pieces.Method` (exact, or pieces side by side with warm-up, the
   pieces shared among worker threads as a training batch is), or adapting as it reads (dynamic
   evaluation, exact by nature). For a page, the NLL of every
   predicted position goes to a temporary float32 file.
3. The page's tokens, read back in order from the split, or by reading the texts again, each
   with its NLL (NaN where nothing predicted it) and whether the vocabulary lacks it.

Temporary files live in a directory the caller owns and removes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from charrnn.compute.mkl import mkl_products, mkl_runs_amx
from charrnn.data.corpus import read_text
from charrnn.data.vocab import Vocabulary
from charrnn.nn.products import available_layouts
from charrnn.nn.scoring import Score
from charrnn.score.evaluate import StreamScorer, known_ids, unknown_handling, word_aware
from charrnn.score.pieces import Method, score_tokens
from charrnn.training.parallel import ShardedModel

BLOCK = 1 << 20  # tokens per block when reading ids back
ADAPT_BLOCK = 64  # segments adapted between looks at `cancelled` (about 2 s for a 2 x 512 GRU on one core)


@dataclass
class Tokens:
    """The ids fed to the model (N,), and how the text's unknown tokens were handled."""

    ids: np.ndarray
    unknown: int = 0
    handling: str = "none"


def encode_sources(sources, vocab: Vocabulary, encoding: str, strict: bool, directory: Path, on_bytes=None) -> Tokens:
    """Text sources -> their ids in directory/tokens.bin (int32), read back as a memory map."""
    path = Path(directory) / "tokens.bin"
    unknown = 0
    with open(path, "wb") as handle:
        for source in sources:
            for text in word_aware(read_text(source, encoding, "strict", on_bytes), vocab.level):
                ids, missing, _ = known_ids(text, vocab, strict)
                unknown += int(missing.sum())
                handle.write(np.asarray(ids, dtype=np.int32).tobytes())
    handling = unknown_handling(vocab, strict)
    size = path.stat().st_size // 4
    ids = np.memmap(path, dtype=np.int32, mode="r") if size else np.zeros(0, np.int32)
    return Tokens(ids, unknown, handling)


def nll_file(directory: Path, count: int) -> np.ndarray:
    """A (count,) float32 memory map for per-position NLL, NaN where nothing is predicted."""
    nll = np.memmap(Path(directory) / "nll.bin", dtype=np.float32, mode="w+", shape=(max(1, count),))
    nll[:1] = np.nan
    return nll


def reading_layout() -> str:
    """The float32 step-product layout for pieces side by side: MKL's packed products where the `mkl`
    extra is installed (on a 2-core Xeon, 1.2x batch-major for a 2 x 512 GRU at 244 pieces per
    worker, 2.2x at 14), else batch-major. The exact method's single stream stays batch-major: its
    products are matrix-vector products, faster on NumPy's BLAS with both cores than on one core of MKL's."""
    return "packed" if "packed" in available_layouts() else "batch_major"


def streams_products(model) -> str:
    """The precision of the pieces' products when the user does not choose: "bfloat16" for a float32
    model where MKL's bfloat16 products run on AMX (a 2 x 512 GRU's pieces read 2.2x as fast on a
    2-core Sapphire Rapids Xeon, 1.5e-5 nats per token from the exact score on Tiny Shakespeare's
    val split), else the model's own ("float32" or "float64"). Decided by the CPU and MKL's
    settings (`mkl_runs_amx`), never by a timing, so a machine always gives the same score."""
    gemm = mkl_products()
    fast = gemm is not None and gemm.bfloat16 is not None and mkl_runs_amx()
    return "bfloat16" if fast and model.dtype == np.float32 else model.dtype.name


def score_ids(model, params, ids: np.ndarray, method: Method, chunk: int, adapter=None, into=None,
              on_tokens=None, cancelled=None) -> Score:
    """Score the ids (N,) by `method`, or adapting (`adapter`, exact); NLL per position into `into`.
    Pieces side by side run on one worker thread per core, each with a shard of them (one stream
    has nothing to share), with bfloat16 products where `method` says so, else those of `reading_layout`.
    Adapting reads `ADAPT_BLOCK` segments at a time and, once the event `cancelled` is set, stops
    at the end of one (its score is then partial, for a caller that is giving up)."""
    if adapter is None and method.exact:
        return Score(*score_tokens(model, params, ids, method, chunk, on_tokens, into))
    if adapter is None:
        layout = "bfloat16" if method.products == "bfloat16" else reading_layout()
        sharded = ShardedModel(model, 0, method.streams, step_products=layout)
        try:
            return Score(*score_tokens(sharded, params, ids, method, chunk, on_tokens, into))
        finally:
            sharded.close()
    scorer = StreamScorer(model, params, chunk, adapter)
    block = ADAPT_BLOCK * chunk  # predictions per block: whole segments, cut where one read of the text cuts them
    edges = [0, *range(1 + block, len(ids), block), len(ids)]
    for begin, end in zip(edges[:-1], edges[1:]):
        if cancelled is not None and cancelled.is_set():
            break
        nll = scorer.feed(ids[begin: end])
        if into is not None:
            into[max(1, begin): end] = nll
        if on_tokens is not None:
            on_tokens(len(nll))
    return scorer.score


def split_page_tokens(ids: np.ndarray, nll: np.ndarray, vocab: Vocabulary
                      ) -> Iterator[tuple[list, np.ndarray, np.ndarray]]:
    """A split's tokens in blocks: (tokens as text, NLL (K,), unknown (K,) all False)."""
    for begin in range(0, len(ids), BLOCK):
        block = np.asarray(ids[begin: begin + BLOCK])
        yield [vocab.tokens[i] for i in block], np.asarray(nll[begin: begin + len(block)], np.float64), \
            np.zeros(len(block), bool)


def text_page_tokens(sources, vocab: Vocabulary, encoding: str, nll: np.ndarray
                     ) -> Iterator[tuple[list, np.ndarray, np.ndarray]]:
    """The texts' tokens in chunks, read again: (tokens as shown, NLL (K,), unknown (K,)). A skipped
    unknown token has no NLL (NaN) and is not fed; one mapped to <unk> is fed and scored."""
    fed = 0
    for source in sources:
        for text in word_aware(read_text(source, encoding, "strict"), vocab.level):
            _, missing, pieces = known_ids(text, vocab, strict=False)
            shown = pieces or list(text)
            fed_here = np.ones(len(missing), bool) if vocab.unk_id is not None else ~missing
            nats = np.full(len(missing), np.nan)
            nats[fed_here] = nll[fed: fed + int(fed_here.sum())]
            fed += int(fed_here.sum())
            yield shown, nats, missing
