"""The one rule for every path a user names for charrnn to write: nothing is overwritten by surprise.

An output file (`export -o`, `eval --html`, `plot -o`, and every later flag that names a file):

- a path that exists and is not a regular file (a directory, a symbolic link, a FIFO, a device,
  a socket) is refused: writing would replace the link or the node, not write through it;
- an existing regular file is replaced only with `--force`;
- a file of a run directory (checkpoints, config, vocabulary, metrics, summary) or anything inside
  a prepared corpus is never replaced through an output flag, `--force` or not;
- the folder it goes in must exist (nothing is created on the way, so a refusal leaves nothing).

An output directory (`prepare --out`, `train --out`) must be new, empty, or already hold what the
command makes (a preparation, a run); it is never a file, a link to be replaced, or a folder of the
user's own files, which `--force` would otherwise delete.

Everything is checked before any work starts (`OutputFile.check`), and again as the file is put in
place: without `--force` the finished temporary file is hard-linked to the path, which fails if
anything appeared there meanwhile; with `--force` the path must still be a regular file. Every
message names the user's path, never the temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from charrnn.errors import UserError
from charrnn.files.atomic import TEMP_SUFFIX, atomic_writer

RUN_FILES = ("config.yaml", "vocab.json", "metrics.jsonl", "summary.json", "ensemble.json")
PREPARED_FILES = ("meta.json", "vocab.json")
NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV, errno.ENOSYS)


def kind_of(mode: int) -> str:
    """A file mode -> what the file is, in words ('a FIFO', 'a device', ...)."""
    return ("a directory" if stat.S_ISDIR(mode) else "a symbolic link" if stat.S_ISLNK(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a regular file" if stat.S_ISREG(mode)
            else "not a regular file")


def lstat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise UserError(f"{path}: a part of the path is a file, not a directory") from None


def is_run_directory(directory: Path) -> bool:
    """Whether `directory` holds a charrnn run (a checkpoint, or the config and vocabulary it starts with)."""
    directory = Path(directory)
    return (directory / "last.npz").is_file() or (directory / "best.npz").is_file() or \
        all((directory / name).is_file() for name in ("config.yaml", "vocab.json"))


def is_prepared_directory(directory: Path) -> bool:
    """Whether `directory` holds a corpus made by `charrnn prepare`."""
    return all((Path(directory) / name).is_file() for name in PREPARED_FILES)


def owner_of(path: Path) -> str | None:
    """Why `path` belongs to charrnn's own files and may not be written through an output flag, or None."""
    folder = Path(os.path.realpath(Path(path).parent))
    for ancestor in (folder, *folder.parents):
        if is_prepared_directory(ancestor):
            return f"it is inside the prepared corpus {ancestor}"
    name = Path(path).name
    if is_run_directory(folder) and (name in RUN_FILES or name.endswith(".npz")):
        return f"it is a file of the run in {folder}"
    return None


@dataclass(frozen=True)
class OutputFile:
    """A file the user asked charrnn to write at `path` through `flag`; replaced only with `force`."""

    path: Path
    flag: str
    force: bool = False

    def check(self) -> OutputFile:
        """Refuse now, before any work, what the rule refuses (see the module docstring); returns self."""
        path, said = Path(self.path), f"{self.flag} {self.path}"
        if not str(path) or path.name in ("", ".", ".."):
            raise UserError(f"{self.flag} needs a file name, not {str(path)!r}")
        found = lstat_or_none(path)
        if found is not None and not stat.S_ISREG(found.st_mode):
            raise UserError(f"{said} is {kind_of(found.st_mode)}, not a regular file; charrnn writes only "
                            f"regular files: give another path")
        if (owned := owner_of(path)) is not None:
            raise UserError(f"{said}: {owned}, which an output flag never replaces; give another path")
        if found is not None and not self.force:
            raise UserError(f"{said} already exists; pass --force to replace it, or give another path")
        folder = path.parent
        if not folder.is_dir():
            what = "does not exist" if not folder.exists() else "is not a directory"
            raise UserError(f"{said}: the folder {folder} {what}; create it first or give another path")
        return self

    @contextlib.contextmanager
    def writer(self) -> Iterator[BinaryIO]:
        """A binary handle whose bytes become the file only if the block completes (see the module docstring)."""
        self.check()
        with atomic_writer(self.path, place=self.put_in_place) as handle:
            yield handle

    def write(self, content: str | bytes):
        """Write `content` (str as UTF-8) all or nothing."""
        with self.writer() as handle:
            handle.write(content.encode("utf-8") if isinstance(content, str) else content)

    def put_in_place(self, temporary: Path, path: Path):
        """Move the finished temporary file to `path`, still keeping the rule."""
        if not self.force:
            try:
                os.link(temporary, path)  # fails if anything appeared at `path` meanwhile
            except FileExistsError:
                raise UserError(f"{self.flag} {path} appeared while charrnn was writing it; nothing was "
                                f"replaced: pass --force to replace it, or give another path") from None
            except OSError as error:
                if error.errno not in NO_HARD_LINKS:
                    raise
                if lstat_or_none(path) is not None:  # a file system without hard links: check, then rename
                    raise UserError(f"{self.flag} {path} appeared while charrnn was writing it; nothing was "
                                    f"replaced") from None
                os.replace(temporary, path)
                return
            os.unlink(temporary)
            return
        found = lstat_or_none(path)
        if found is not None and not stat.S_ISREG(found.st_mode):
            raise UserError(f"{self.flag} {path} became {kind_of(found.st_mode)} while charrnn was writing it; "
                            f"nothing was replaced")
        os.replace(temporary, path)


def is_leftover(path: Path) -> bool:
    """A temporary file or staging directory that a killed charrnn command left (swept at its next start)."""
    name = path.name
    return name.startswith(".") and (name.endswith(TEMP_SUFFIX) or ".staging-" in name or ".old-" in name)


def check_output_directory(path: Path, flag: str, holds: str):
    """Refuse an output directory that is not new, empty, or already `holds` ('run' or 'preparation')."""
    path, said = Path(path), f"{flag} {path}"
    found = lstat_or_none(path)
    if found is None:
        if (owned := owner_of(path / "x")) is not None and "prepared corpus" in owned:
            raise UserError(f"{said}: {owned}; give a directory outside it")
        return
    if stat.S_ISLNK(found.st_mode) and holds == "preparation":
        raise UserError(f"{said} is a symbolic link, which a new preparation would replace; give the directory "
                        f"it points to, or another path")
    if not path.is_dir():
        raise UserError(f"{said} is {kind_of(os.stat(path).st_mode if path.exists() else found.st_mode)}, "
                        f"not a directory; give a directory for the {holds}")
    for ancestor in Path(os.path.realpath(path)).parents:
        if is_prepared_directory(ancestor):
            raise UserError(f"{said} is inside the prepared corpus {ancestor}; give a directory outside it")
    if holds == "run" and is_prepared_directory(path) and not is_run_directory(path):
        raise UserError(f"{said} holds a prepared corpus, not a run; give another --out for the run "
                        f"(train reads the corpus from there: charrnn train {path} --out runs/NAME)")
    if holds == "preparation" and is_run_directory(path):
        raise UserError(f"{said} holds a run (checkpoints), which a preparation would delete; give another --out")
    entries = [p for p in path.iterdir() if not is_leftover(p)]
    mine = is_prepared_directory(path) if holds == "preparation" else is_run_directory(path) or \
        [p.name for p in entries] == ["data"] and is_prepared_directory(path / "data")
    if entries and not mine:
        raise UserError(f"{said} holds files that are not a charrnn {holds}; choose a new or empty directory "
                        f"(charrnn never deletes files it did not make)")
