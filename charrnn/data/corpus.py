"""Corpus sources and their decoded text, read in bounded chunks.

A source is a text file, every text file inside a directory (sorted by path), standard input
(`-`, read once and kept in memory, since it cannot be read twice), or a built-in corpus
generated in memory. A FIFO, device or socket is refused by name: streaming prepare reads its
sources twice. Reading decodes incrementally, so a multi-byte character split across
chunks is handled, and turns the usual problems into one-line `UserError`s: a missing path, a
binary file, bytes that are invalid in the encoding (with the file and byte offset).
"""

from __future__ import annotations

import codecs
import encodings
import hashlib
import io
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from charrnn.data import builtin
from charrnn.errors import UserError

CHUNK_BYTES = 1 << 22
SNIFF_BYTES = 8192


@dataclass(frozen=True)
class Source:
    """One input of a corpus: its name, size in bytes and a way to open its bytes."""

    name: str
    size: int
    open: Callable[[], BinaryIO]


def file_source(path: Path) -> Source:
    return Source(str(path), path.stat().st_size, lambda: open(path, "rb"))


def looks_binary(path: Path) -> bool:
    """True when the first few KB of the file hold a NUL byte."""
    with open(path, "rb") as handle:
        return b"\0" in handle.read(SNIFF_BYTES)


def text_files(directory: Path) -> list[Path]:
    """Every non-hidden text file below `directory`, sorted; an unreadable folder is an error."""
    def fail(error: OSError):
        raise error

    found = []
    for root, folders, files in os.walk(directory, onerror=fail):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        found.extend(Path(root) / name for name in files if not name.startswith("."))
    return sorted(p for p in found if p.is_file() and not looks_binary(p))


def memory_source(name: str, data: bytes) -> Source:
    return Source(name, len(data), lambda: io.BytesIO(data))


def resolve_sources(names: list[str]) -> list[Source]:
    """Turn command-line corpus names (files, directories, `-`, built-in names) into sources."""
    sources: list[Source] = []
    for name in names:
        path = Path(name)
        if name == "-":
            sources.append(memory_source("<stdin>", sys.stdin.buffer.read()))
        elif path.is_dir():
            files = text_files(path)
            if not files:
                raise UserError(f"{name}: directory holds no text files; point at a text file or a folder of them")
            sources.extend(file_source(p) for p in files)
        elif path.is_file():
            sources.append(file_source(path))
        elif path.exists() or path.is_symlink():
            kind = "a broken link" if not path.exists() else describe_special(path)
            raise UserError(f"{name} is {kind}, not a regular file; give a text file or a folder of them")
        elif name in builtin.CORPORA:
            sources.append(memory_source(f"builtin:{name}", builtin.load(name).encode("utf-8")))
        else:
            known = ", ".join(builtin.CORPORA)
            raise UserError(f"{name}: no such file or directory (built-in corpora: {known})")
    return sources


def describe_special(path: Path) -> str:
    mode = path.stat().st_mode
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def standard_codec(encoding: str) -> codecs.CodecInfo:
    """The codec of a standard encoding name. Python's own registry is asked directly: a package may
    register a search function that claims every name (one does), which would hide a typo."""
    info = encodings.search_function(encoding.lower())
    if info is None:
        raise UserError(f"unknown text encoding {encoding!r}; try --encoding utf-8")
    return info


def read_text(source: Source, encoding: str, errors: str, on_bytes: Callable[[int], None] | None = None,
              digest: hashlib._Hash | None = None, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """Yield the decoded text of a source in chunks of about `chunk_bytes` bytes.

    `on_bytes(n)` is told of every chunk read; `digest` is updated with the raw bytes.
    """
    decoder = standard_codec(encoding).incrementaldecoder(errors)
    offset = 0
    with source.open() as handle:
        while True:
            chunk = handle.read(chunk_bytes)
            final = not chunk
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(chunk, final=final)
            except UnicodeDecodeError as error:
                at = offset - pending + error.start
                raise UserError(f"{source.name}: byte {at} is not valid {encoding}; "
                                f"pass --encoding with the right codec or --errors replace") from None
            if "\0" in text:
                raise UserError(f"{source.name}: holds NUL bytes, so it looks binary; give a text file")
            if digest is not None:
                digest.update(chunk)
            if on_bytes is not None and chunk:
                on_bytes(len(chunk))
            offset += len(chunk)
            if text:
                yield text
            if final:
                return


def corpus_name(corpus: str) -> str:
    """`books/plays.txt` -> `plays`; a folder or built-in corpus keeps its own name; `-` is `stdin`."""
    if corpus == "-":
        return "stdin"
    path = Path(corpus.rstrip("/"))
    return path.stem if path.suffix else path.name
