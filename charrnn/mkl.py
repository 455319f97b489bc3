"""Intel MKL's matrix products, packed and plain, called through ctypes: the optional `mkl` extra.

A recurrent loop multiplies every step's state by the same weight. A BLAS call re-packs that
weight into its kernel's layout each time (OpenBLAS does, for every call), which for a
(2048, 512) weight and a batch of 32 rows is a third of the product's time. MKL can pack a
matrix once (`cblas_?gemm_pack`) and reuse the packed copy for many products
(`cblas_?gemm_compute`); `charrnn.nn.products` packs W_hh once per loop. On a 2-core Xeon with
AVX-512 a (32, 512) x (512, 2048) step product took 430 microseconds packed against 650 with
NumPy's OpenBLAS (see BENCHMARKS.md); whether it wins is timed by `charrnn.layout`. A layout
that packs also runs the layer's large products outside the loop through MKL (`multiply`),
about 8% faster than OpenBLAS there on that machine.

MKL comes from PyPI (`pip install mkl`, which the extra names); the library is found through
that distribution's file list, then by the usual library search. It is switched to its
sequential layer before any other call: charrnn gives each worker one core itself, and MKL's
own OpenMP threads would not survive the worker processes' fork.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.metadata
import re
from pathlib import Path

import numpy as np

ROW_MAJOR, NO_TRANS, TRANS, PACKED, B_MATRIX = 101, 111, 112, 151, 162
SEQUENTIAL = 1  # MKL_THREADING_SEQUENTIAL
ALIGNMENT = 64  # bytes: a packed buffer starts on a cache line
INSTALL_HINT = "install the mkl extra: pip install 'charrnn[mkl]'"


def library_paths() -> list[str]:
    """Candidate paths of MKL's single dynamic library, libmkl_rt: the `mkl` wheel's, then the system's."""
    paths = []
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if Path(str(file)).name.startswith("libmkl_rt.so"):
            paths.append(str(file.locate()))
    found = ctypes.util.find_library("mkl_rt")
    return paths + ([found] if found else [])


class MKLProducts:
    """`pack` a matrix once, then `compute` products of many row blocks with it; `multiply` two
    matrices; in float32 or float64."""

    def __init__(self, library: ctypes.CDLL):
        pointer, size = ctypes.c_void_p, ctypes.c_size_t
        self.library = library
        self.functions, self.plain = {}, {}
        for prefix, scalar in (("s", ctypes.c_float), ("d", ctypes.c_double)):
            gemm = getattr(library, f"cblas_{prefix}gemm")
            gemm.restype = None
            gemm.argtypes = [ctypes.c_int] * 6 + [scalar, pointer, ctypes.c_int, pointer, ctypes.c_int, scalar,
                                                  pointer, ctypes.c_int]
            self.plain[np.dtype(np.float32 if prefix == "s" else np.float64)] = gemm
            get_size = getattr(library, f"cblas_{prefix}gemm_pack_get_size")
            get_size.restype, get_size.argtypes = size, [ctypes.c_int] * 4
            pack = getattr(library, f"cblas_{prefix}gemm_pack")
            pack.restype, pack.argtypes = None, [ctypes.c_int] * 6 + [scalar, pointer, ctypes.c_int, pointer]
            compute = getattr(library, f"cblas_{prefix}gemm_compute")
            compute.restype = None
            compute.argtypes = [ctypes.c_int] * 6 + [pointer, ctypes.c_int, pointer, ctypes.c_int, scalar, pointer,
                                                     ctypes.c_int]
            self.functions[np.dtype(np.float32 if prefix == "s" else np.float64)] = (get_size, pack, compute)

    def version(self) -> str:
        """MKL's version as its description of itself gives it, e.g. '2026.2'."""
        text = ctypes.create_string_buffer(256)
        self.library.MKL_Get_Version_String(text, len(text))
        found = re.search(r"Version ([0-9][0-9.]*)", text.value.decode(errors="replace"))
        return found.group(1) if found else "unknown"

    def multiply(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a (M, K), b (K, N), each C- or Fortran-contiguous, of one dtype -> a b (M, N), a new array."""
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or a.dtype != b.dtype:
            raise ValueError(f"cannot multiply {a.dtype} {a.shape} by {b.dtype} {b.shape}")
        (M, K), N = a.shape, b.shape[1]
        out = np.empty((M, N), a.dtype)
        transpose_a, leading_a = layout_of(a)
        transpose_b, leading_b = layout_of(b)
        self.plain[a.dtype](ROW_MAJOR, transpose_a, transpose_b, M, N, K, 1.0, a.ctypes.data, leading_a,
                            b.ctypes.data, leading_b, 0.0, out.ctypes.data, N)
        return out

    def pack(self, matrix: np.ndarray, rows: int) -> Packed:
        """matrix (N, K), C- or Fortran-contiguous -> its transpose (K, N) packed for products
        of `rows` rows: `compute(x, packed, out)` is then out = x matrix^T."""
        get_size, pack, _ = self.functions[matrix.dtype]
        N, K = matrix.shape
        transpose, leading = layout_of(matrix.T)
        raw = np.empty(get_size(B_MATRIX, rows, N, K) + ALIGNMENT, np.uint8)
        start = -raw.ctypes.data % ALIGNMENT
        buffer = raw[start:]
        pack(ROW_MAJOR, B_MATRIX, transpose, rows, N, K, 1.0, matrix.ctypes.data, leading, buffer.ctypes.data)
        return Packed(buffer, matrix.dtype, rows, N, K)

    def compute(self, x: np.ndarray, packed: Packed, out: np.ndarray, accumulate: bool = False):
        """x (rows, K), out (rows, N), each with unit stride along its rows: out = x matrix^T, or
        out += x matrix^T with `accumulate`."""
        if x.shape != (packed.rows, packed.K) or out.shape != (packed.rows, packed.N):
            raise ValueError(f"shapes {x.shape} and {out.shape} do not fit a packed ({packed.N}, {packed.K}) "
                             f"matrix for {packed.rows} rows")
        if x.dtype != packed.dtype or out.dtype != packed.dtype:
            raise ValueError("the arrays must have the packed matrix's dtype")
        if x.strides[1] != x.itemsize or out.strides[1] != out.itemsize:
            raise ValueError("the arrays must have unit stride along their rows")
        _, _, compute = self.functions[packed.dtype]
        compute(ROW_MAJOR, NO_TRANS, PACKED, packed.rows, packed.N, packed.K, x.ctypes.data,
                x.strides[0] // x.itemsize, packed.buffer.ctypes.data, packed.K, 1.0 if accumulate else 0.0,
                out.ctypes.data, out.strides[0] // out.itemsize)


def layout_of(matrix: np.ndarray) -> tuple[int, int]:
    """A 2-D array as row-major BLAS takes it: (NO_TRANS, its row length) if C-contiguous, (TRANS,
    its column length) if Fortran-contiguous (its transpose is C-contiguous)."""
    if matrix.flags.c_contiguous:
        return NO_TRANS, max(1, matrix.shape[1])
    if matrix.flags.f_contiguous:
        return TRANS, max(1, matrix.shape[0])
    raise ValueError("the matrix must be contiguous, or the transpose of a contiguous one")


class Packed:
    """A matrix packed by `MKLProducts.pack`: its buffer and the shape of the products it takes."""

    def __init__(self, buffer: np.ndarray, dtype: np.dtype, rows: int, N: int, K: int):
        self.buffer, self.dtype, self.rows, self.N, self.K = buffer, dtype, rows, N, K


@functools.cache
def mkl_products() -> MKLProducts | None:
    """MKL's packed products, switched to its sequential layer, or None where MKL is not installed.
    Loaded once per process (a library is loaded once whatever holds it)."""
    for path in library_paths():
        try:
            library = ctypes.CDLL(path)
            library.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
            library.MKL_Set_Threading_Layer(SEQUENTIAL)
            return MKLProducts(library)
        except (OSError, AttributeError):
            continue
    return None
