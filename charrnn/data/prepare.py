"""Streaming preparation: corpus -> vocab.json, train/val/test.bin, meta.json.

Two passes over the sources in bounded chunks: the first counts tokens and hashes the bytes, the
second encodes and appends ids to the split files. Splits are contiguous (train, then val, then
test), so the last fraction of the corpus is held out as in nanoGPT. Everything is written into a
temporary directory beside the output and renamed into place at the end, so a failure never leaves
a half-written preparation. One process at a time prepares into a directory (`charrnn.files.lock`):
the check for a different preparation already there, and the sweep of staging directories that
killed runs left (`.<name>.staging-*`, `.<name>.old-*`), are made under that lock.

Char-level counting and encoding work on code-point arrays (`np.bincount`, a lookup table), never
a Python loop over characters; word level tokenizes each chunk with one regex, carrying the last
token of a chunk over to the next in case the chunk boundary split it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from charrnn.data.corpus import CHUNK_BYTES, Source, read_text
from charrnn.data.vocab import UnknownTokensError, Vocabulary, codepoints, tokenize
from charrnn.errors import UserError
from charrnn.files.atomic import write_atomic
from charrnn.files.lock import DirectoryLock
from charrnn.files.outputs import check_output_directory

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
UNICODE_SIZE = 0x110000


@dataclass(frozen=True)
class PrepareOptions:
    """What decides the contents of a preparation (saved in meta.json to detect changes)."""

    level: str = "char"
    val_frac: float = 0.05
    test_frac: float = 0.05
    max_vocab: int | None = None
    min_count: int = 1
    encoding: str = "utf-8"
    errors: str = "strict"
    extends: str | None = None  # sha256 of the vocabulary this one grows (fine-tuning), if any

    def validate(self):
        if self.level not in ("char", "word"):
            raise UserError(f"--level must be char or word, not {self.level!r}")
        if not (0 <= self.val_frac < 1 and 0 <= self.test_frac < 1 and self.val_frac + self.test_frac < 1):
            raise UserError("--val-frac and --test-frac must be in [0, 1) and sum to less than 1")
        if self.max_vocab is not None and self.max_vocab < 2:
            raise UserError("--max-vocab must be at least 2")
        if self.min_count < 1:
            raise UserError("--min-count must be at least 1")


def split_sizes(total: int, val_frac: float, test_frac: float) -> dict[str, int]:
    """Token counts per split; train is `int(total * train_frac)` as in nanoGPT."""
    train = int(total * round(1 - val_frac - test_frac, 12))
    val = int(total * val_frac) if test_frac else total - train
    return {"train": train, "val": val, "test": total - train - val}


def chunked_tokens(texts: Iterator[str], level: str) -> Iterator[list[str]]:
    """Word-level tokens of a stream of text chunks, never splitting a token across chunks."""
    carry = ""
    for text in texts:
        tokens = tokenize(carry + text, level)
        carry = tokens.pop() if tokens else ""
        yield tokens
    if carry:
        yield [carry]


def count_tokens(sources: list[Source], options: PrepareOptions, on_bytes) -> tuple[Counter, list[dict]]:
    """Pass 1: token counts over all sources, and each source's size and sha256."""
    counts: Counter = Counter()
    points = np.zeros(UNICODE_SIZE, dtype=np.int64)
    described = []
    for source in sources:
        digest = hashlib.sha256()
        texts = read_text(source, options.encoding, options.errors, on_bytes, digest)
        if options.level == "char":
            for text in texts:
                chunk_counts = np.bincount(codepoints(text))
                points[: len(chunk_counts)] += chunk_counts
        else:
            for tokens in chunked_tokens(texts, options.level):
                counts.update(tokens)
        described.append({"path": source.name, "bytes": source.size, "sha256": digest.hexdigest()})
    for point in np.flatnonzero(points):
        counts[chr(point)] = int(points[point])
    return counts, described


def encode_stream(sources: list[Source], vocab: Vocabulary, options: PrepareOptions, on_bytes) -> Iterator[np.ndarray]:
    """Pass 2: the ids of all sources, chunk by chunk."""
    for source in sources:
        texts = read_text(source, options.encoding, options.errors, on_bytes)
        if vocab.level == "char":
            for text in texts:
                yield vocab.encode(text)
        else:
            for tokens in chunked_tokens(texts, vocab.level):
                ids = np.array([vocab.index.get(t, vocab.unk_id) for t in tokens], dtype=np.int64)
                yield ids


def write_splits(chunks: Iterator[np.ndarray], sizes: dict[str, int], dtype: np.dtype, directory: Path):
    """Append the id stream to `<split>.bin` files, switching file at each split boundary."""
    files = {name: open(directory / f"{name}.bin", "wb") for name in SPLITS}
    try:
        split_index, left = 0, sizes[SPLITS[0]]
        for ids in chunks:
            ids = ids.astype(dtype)
            while len(ids):
                while left == 0:
                    split_index += 1
                    left = sizes[SPLITS[split_index]]
                take = ids[:left]
                files[SPLITS[split_index]].write(take.tobytes())
                ids, left = ids[left:], left - len(take)
    finally:
        for handle in files.values():
            handle.close()


def same_preparation(directory: Path, sources: list[dict], options: PrepareOptions) -> bool:
    """True when `directory` already holds this exact preparation."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return (meta.get("format_version") == FORMAT_VERSION and meta.get("options") == asdict(options)
            and meta.get("sources") == sources)


def prepared_from(directory: Path, sources: list[Source], options: PrepareOptions) -> bool:
    """Whether `directory` holds a preparation of exactly these sources' bytes (wherever they were
    read from) with `options`: one more pass over the sources, to hash them."""
    try:
        meta = load_meta(Path(directory))
    except UserError:
        return False
    if meta.get("options") != asdict(options) or len(meta.get("sources", [])) != len(sources):
        return False
    for source, recorded in zip(sources, meta["sources"]):
        digest = hashlib.sha256()
        with source.open() as handle:
            while chunk := handle.read(CHUNK_BYTES):
                digest.update(chunk)
        if (source.size, digest.hexdigest()) != (recorded.get("bytes"), recorded.get("sha256")):
            return False
    return True


def prepare(sources: list[Source], out: Path, options: PrepareOptions, force: bool = False,
            on_bytes: Callable[[int], None] | None = None, base: Vocabulary | None = None,
            fixed: Vocabulary | None = None) -> dict:
    """Prepare `sources` into `out`; returns the meta dict (with `"unchanged": True` if it was already there).
    With a `base` vocabulary (fine-tuning) the vocabulary is `base` grown by the corpus's new tokens;
    with a `fixed` one (a resumed run's) it is exactly that, and a token it lacks raises
    `UnknownTokensError` (or becomes `<unk>`, where it has one) before anything is written.

    Raises `UserError` for an empty corpus, a split that would be empty, an `out` that the rule of
    `charrnn.files.outputs` refuses (a file, a link, a run, a folder of other files), or one that holds a
    different preparation (unless `force`).
    """
    options.validate()
    out = Path(out)
    check_output_directory(out, "--out", "preparation")
    with DirectoryLock(out, "--out"):
        sweep_staging(out)
        try:
            return prepare_locked(sources, out, options, force, on_bytes, base, fixed)
        finally:
            sweep_staging(out)  # whatever this run left, however it ended, while the lock is held


def prepare_locked(sources, out: Path, options: PrepareOptions, force: bool, on_bytes, base, fixed) -> dict:
    counts, described = count_tokens(sources, options, on_bytes)
    total = sum(counts.values())
    if total == 0:
        raise UserError(f"the corpus is empty ({', '.join(s.name for s in sources)}); give a file with some text")
    if fixed is not None and fixed.unk_id is None and (lacking := [t for t in counts if t not in fixed.index]):
        raise UnknownTokensError(lacking)
    if out.exists() and same_preparation(out, described, options) and \
            (fixed is None or Vocabulary.from_json((out / "vocab.json").read_text()).tokens == fixed.tokens):
        return {**json.loads((out / "meta.json").read_text()), "unchanged": True}
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"{out} already holds a different preparation; pass --force to replace it or choose --out")
    sizes = split_sizes(total, options.val_frac, options.test_frac)
    wanted = {"train": 1, "val": options.val_frac > 0, "test": options.test_frac > 0}
    for name, size in sizes.items():
        if wanted[name] and size == 0:
            raise UserError(f"the {name} split would be empty ({total} tokens in all); "
                            f"use a larger corpus or change --val-frac/--test-frac")
    vocab = fixed if fixed is not None else base.grown(counts) if base is not None else Vocabulary.from_counts(
        counts, options.level, options.max_vocab, options.min_count)
    meta = {"format_version": FORMAT_VERSION, "options": asdict(options), "sources": described,
            "tokens": sizes, "vocab_size": vocab.size, "dtype": vocab.dtype.str}
    staging = out.with_name(f".{out.name}.staging-{secrets.token_hex(4)}")
    try:
        staging.mkdir()
        write_splits(encode_stream(sources, vocab, options, on_bytes), sizes, vocab.dtype, staging)
        write_atomic(staging / "vocab.json", vocab.to_json())
        write_atomic(staging / "meta.json", json.dumps(meta, indent=1))
        replace_directory(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return meta


def sweep_staging(out: Path):
    """Remove staging and replaced directories that a killed `prepare` left beside `out`."""
    for pattern in (f".{out.name}.staging-*", f".{out.name}.old-*"):
        for leftover in out.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def replace_directory(new: Path, target: Path):
    """Move `new` to `target`, replacing what was there with as short a gap as renames allow."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old)
    else:
        new.rename(target)


def load_meta(directory: Path) -> dict:
    """meta.json of a preparation, or a UserError that says to prepare first."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except FileNotFoundError:
        raise UserError(f"{directory} is not a prepared corpus (no meta.json); run `charrnn prepare` first") from None
    except ValueError:
        raise UserError(f"{directory}/meta.json is damaged; run `charrnn prepare --force` again") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{directory} was prepared by another charrnn version; run `charrnn prepare --force` again")
    return meta
