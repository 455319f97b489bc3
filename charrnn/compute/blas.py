"""The BLAS thread count, changed at run time around work that brings its own threads.

`charrnn.training.parallel` runs one worker thread per core, each calling BLAS; a multi-threaded BLAS
inside each worker would oversubscribe the cores. NumPy's wheels bundle OpenBLAS, whose
`*_set_num_threads` can be called through ctypes: `OpenBLAS.find()` locates the library NumPy
has loaded (Linux, from /proc/self/maps) and returns None where it cannot, so callers fall
back to not sharding. Everything else (sampling, single-stream eval) keeps BLAS's own threads.
"""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path

SYMBOLS = [("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_", "scipy_openblas_get_corename64_"),
           ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads", "scipy_openblas_get_corename"),
           ("openblas_set_num_threads64_", "openblas_get_num_threads64_", "openblas_get_corename64_"),
           ("openblas_set_num_threads", "openblas_get_num_threads", "openblas_get_corename")]


class OpenBLAS:
    """Get and set the thread count of the OpenBLAS that NumPy uses."""

    def __init__(self, set_threads, get_threads, corename):
        self.set_threads, self.get_threads, self.corename = set_threads, get_threads, corename

    @classmethod
    def find(cls) -> OpenBLAS | None:
        """The OpenBLAS loaded by NumPy (import NumPy first), or None."""
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return None
        paths = sorted({line.split()[-1] for line in maps.splitlines()
                        if "openblas" in line.lower() and line.split()[-1].startswith("/")})
        for path in paths:
            library = ctypes.CDLL(path)
            for setter, getter, core in SYMBOLS:
                if hasattr(library, setter) and hasattr(library, getter):
                    corename = getattr(library, core, None)
                    if corename is not None:
                        corename.restype = ctypes.c_char_p
                    return cls(getattr(library, setter), getattr(library, getter),
                               (lambda: corename().decode()) if corename is not None else (lambda: "unknown"))
        return None

    @contextlib.contextmanager
    def limited(self, threads: int):
        """Run the block with at most `threads` BLAS threads, then restore the previous count."""
        previous = self.get_threads()
        self.set_threads(min(threads, previous))
        try:
            yield
        finally:
            self.set_threads(previous)
