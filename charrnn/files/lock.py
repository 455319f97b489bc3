"""One writer per run or data directory: an OS advisory lock held for the whole command.

`DirectoryLock(directory)` takes `flock` on `.<name>.lock` beside the directory (so the lock
survives the directory being replaced by a rename), writes the holder's PID into it, and
refuses a second holder with one line naming that PID. The kernel drops the lock when the
process dies, even by `kill -9`, so a stale lock file never blocks anyone: only a live holder
does. The lock file is removed on release; a waiter that locked a file already unlinked notices
(its inode no longer matches the path) and tries again.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from charrnn import signals
from charrnn.errors import UserError


def lock_path(directory: Path) -> Path:
    directory = Path(directory).absolute()
    return directory.with_name(f".{directory.name}.lock")


class DirectoryLock:
    """Context manager: exclusive, non-blocking, released by the kernel if the process dies."""

    def __init__(self, directory: Path, what: str = "directory"):
        self.directory, self.what = Path(directory), what
        self.path = lock_path(directory)
        self.descriptor: int | None = None
        self.created: list[Path] = []  # parents this lock had to create, removed again if left empty

    def __enter__(self) -> DirectoryLock:
        try:
            with signals.deferred():  # a stop signal while the lock is taken: raised once it is held
                self._acquire()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _acquire(self):
        """Take the lock (see the module docstring), or raise UserError naming its holder."""
        missing = [p for p in [self.path.parent, *self.path.parent.parents] if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.created = missing
        while True:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(descriptor)
                raise UserError(f"{self.directory} is in use by another charrnn process (PID {holder}); "
                                 f"wait for it to finish or choose another {self.what}") from None
            if self._still_at_path(descriptor):
                break
            os.close(descriptor)  # the previous holder removed this file as we locked it: take the new one
        self.descriptor = descriptor
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)

    def _still_at_path(self, descriptor: int) -> bool:
        try:
            return os.fstat(descriptor).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def __exit__(self, *exc):
        with signals.deferred():  # a stop signal now: raised once the lock file is gone
            if self.descriptor is not None:
                self.path.unlink(missing_ok=True)
                os.close(self.descriptor)
                self.descriptor = None
            for parent in self.created:
                try:
                    parent.rmdir()
                except OSError:  # not empty: the command wrote something there
                    break
            self.created = []
