"""Writing files so that a crash, a full disk or a signal never leaves a truncated one.

`atomic_writer(path)` yields a handle on a temporary file beside `path`, created with the
process umask like any other file (mode 0666 & ~umask, not tempfile's 0600); on success it is
flushed, fsynced and renamed over `path`, on any failure removed. Leftover temporaries from a
process killed mid-write (`.<name>.<random>.tmp`) are what `sweep_temporaries` clears, under
the directory's lock, at the next start.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

TEMP_SUFFIX = ".tmp"


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_writer(path: Path, place: Callable[[Path, Path], None] = os.replace) -> Iterator[BinaryIO]:
    """Yield a binary handle; its bytes replace `path` only if the block completes. `place(temporary,
    path)` puts the finished file in place (a rename over `path` unless the caller decides otherwise).
    What the operating system refuses is said of `path`, never of the temporary file."""
    path = Path(path)
    temporary = temporary_name(path)
    try:
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        place(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.filename is None or Path(error.filename) == temporary:
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_atomic(path: Path, content: str | bytes):
    """Replace `path` with `content` (str is written as UTF-8), all or nothing."""
    with atomic_writer(path) as handle:
        handle.write(content.encode("utf-8") if isinstance(content, str) else content)


def fsync_directory(directory: Path):
    """Make a rename in `directory` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems cannot fsync a directory; the rename itself is still atomic
        pass
    finally:
        os.close(descriptor)


def sweep_temporaries(directory: Path) -> list[Path]:
    """Remove `.<name>.<random>.tmp` files left by killed writers; call only under the directory's lock."""
    swept = []
    for leftover in Path(directory).glob(f".*{TEMP_SUFFIX}"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            swept.append(leftover)
    return swept
