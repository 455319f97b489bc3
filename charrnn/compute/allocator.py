"""Keep NumPy's large temporaries in the process instead of handing them back to the OS each step.

glibc serves a request above its mmap threshold (128 KB at first) with a fresh `mmap`, and gives
it back with `munmap` when freed; every training step allocates and frees arrays of megabytes
(gates, caches, gradients), so every step page-faults all of that memory in again. glibc raises
the threshold by itself only after a while, and not for every thread's arena. Setting it once,
at the start of a command, made a two-worker GRU-256 step 25% faster (73 to 54 ms, see
BENCHMARKS.md). The threshold cannot go above 32 MB, and an LSTM-512 shard's gate buffers are
just over that (128 steps x 32 streams x 2048 gates x 4 bytes), so mmap is switched off for
requests altogether: the heap serves them all (two-worker LSTM-512 step, median of six: 727 to
698 ms). The cost is memory the process keeps for reuse: up to TRIM_BYTES above what it uses.
Elsewhere than glibc (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
MMAP_BYTES = 32 << 20  # glibc's largest allowed threshold on 64-bit systems
TRIM_BYTES = 256 << 20


def keep_freed_memory() -> bool:
    """Serve large requests from the heap rather than fresh mmaps, and raise glibc's trim threshold;
    True if it took effect."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    return all([mallopt(M_MMAP_THRESHOLD, MMAP_BYTES), mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, TRIM_BYTES)])
