"""Intel MKL's matrix products, packed and plain, called through ctypes: the optional `mkl` extra.

A recurrent loop multiplies every step's state by the same weight. A BLAS call re-packs that
weight into its kernel's layout each time (OpenBLAS does, for every call), which for a
(2048, 512) weight and a batch of 32 rows is a third of the product's time. MKL can pack a
matrix once (`cblas_?gemm_pack`) and reuse the packed copy for many products
(`cblas_?gemm_compute`); `charrnn.nn.products` packs W_hh once per loop. On a 2-core Xeon with
AVX-512 a (32, 512) x (512, 2048) step product took 430 microseconds packed against 650 with
NumPy's OpenBLAS (see BENCHMARKS.md); whether it wins is timed by `charrnn.training.layout`. A layout
that packs also runs the layer's large products outside the loop through MKL (`multiply`),
about 8% faster than OpenBLAS there on that machine.

MKL comes from PyPI (`pip install mkl`, which the extra names); the library is found through
that distribution's file list, then by the usual library search. It is switched to its
sequential layer before any other call: charrnn gives each worker one core itself, and MKL's
own OpenMP threads would not survive the worker processes' fork.

MKL also multiplies in bfloat16 (`BFloat16Products`): operands rounded to 8 significant bits,
sums in float32. On CPUs with AMX that runs at four to five times its float32 rate, which
`charrnn eval` uses for the pieces of a long text (never for training, whose gradients must be
exact).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import os
import re
from pathlib import Path

import numpy as np

ROW_MAJOR, NO_TRANS, TRANS, PACKED, B_MATRIX = 101, 111, 112, 151, 162
SEQUENTIAL = 1  # MKL_THREADING_SEQUENTIAL
ALIGNMENT = 64  # bytes: a packed buffer starts on a cache line
MKL_CODE_PATH_SETTINGS = ("MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")  # environment variables
# the branches of those that hold MKL below AVX512_E4, its first level with AMX
BELOW_AMX = frozenset({"COMPATIBLE", "SSE2", "SSE3", "SSSE3", "SSE4_1", "SSE4_2", "AVX", "AVX2", "AVX2_E1",
                       "AVX512", "AVX512_E1", "AVX512_E2", "AVX512_E3", "AVX512_MIC", "AVX512_MIC_E1"})


def library_paths() -> list[str]:
    """Candidate paths of MKL's single dynamic library, libmkl_rt: the `mkl` wheel's, then the bare
    names, which the dynamic loader looks up in the system's library paths. Not `ctypes.util.find_library`:
    it runs ldconfig or a compiler with a temporary file, which a stop signal could cut in two."""
    paths = []
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if Path(str(file)).name.startswith("libmkl_rt.so"):
            paths.append(str(file.locate()))
    return paths + ["libmkl_rt.so.2", "libmkl_rt.so"]


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
        self.bfloat16 = bfloat16_functions(library)

    def bfloat16_products(self) -> BFloat16Products:
        """Products in bfloat16 (see `BFloat16Products`); a ValueError where this MKL has none."""
        if self.bfloat16 is None:
            raise ValueError("this MKL has no bfloat16 products")
        return BFloat16Products(self.bfloat16)

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


def bfloat16_functions(library: ctypes.CDLL):
    """MKL's packed bfloat16 products with float32 results (`cblas_gemm_bf16bf16f32_pack_get_size`,
    `_pack`, `_compute`), or None where this MKL has none."""
    pointer, integer = ctypes.c_void_p, ctypes.c_int
    try:
        get_size = library.cblas_gemm_bf16bf16f32_pack_get_size
        pack = library.cblas_gemm_bf16bf16f32_pack
        compute = library.cblas_gemm_bf16bf16f32_compute
    except AttributeError:
        return None
    get_size.restype, get_size.argtypes = ctypes.c_size_t, [integer] * 4
    pack.restype, pack.argtypes = None, [integer] * 6 + [pointer, integer, pointer]
    compute.restype = None
    compute.argtypes = [integer] * 6 + [ctypes.c_float, pointer, integer, pointer, integer, ctypes.c_float,
                                        pointer, integer]
    return get_size, pack, compute


def to_bfloat16(x: np.ndarray, out: np.ndarray, scratch: np.ndarray):
    """x (M, K) float32 -> out (M, K) uint16, the bfloat16 nearest each (ties away from zero), with
    unit stride along rows; scratch (M, K) uint32. Adding half a bfloat16 unit to the bit pattern
    and keeping its high half rounds the magnitude, whatever the sign. (Three contiguous passes:
    at (244, 512), 27 microseconds against 43 for copying the high halves through a strided view.)"""
    np.add(x.view(np.uint32), np.uint32(0x8000), out=scratch)
    np.right_shift(scratch, np.uint32(16), out=scratch)
    np.copyto(out, scratch, casting="unsafe")


def cpu_has_amx() -> bool:
    """Whether the CPU (as Linux reports it) has AMX's bfloat16 tiles, where MKL's bfloat16 products
    run several times its float32 rate; elsewhere they are emulated or barely faster."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def mkl_runs_amx(environ=os.environ) -> bool:
    """Whether MKL's bfloat16 products run on AMX tiles here: the CPU has them, and neither
    MKL_ENABLE_INSTRUCTIONS nor MKL_CBWR (conditional reproducibility) holds MKL to an older code
    path. Held to AVX2 on a Sapphire Rapids Xeon, MKL emulates bfloat16, and a 2 x 512 GRU's pieces
    read 2.8 times slower than with AMX, 1.9 times slower than in float32."""
    for variable in MKL_CODE_PATH_SETTINGS:
        branch = environ.get(variable, "").split(",")[0].strip().upper()
        if branch in BELOW_AMX:
            return False
    return cpu_has_amx()


def layout_of(matrix: np.ndarray) -> tuple[int, int]:
    """A 2-D array as row-major BLAS takes it: (NO_TRANS, its row length) if C-contiguous, (TRANS,
    its column length) if Fortran-contiguous (its transpose is C-contiguous)."""
    if matrix.flags.c_contiguous:
        return NO_TRANS, max(1, matrix.shape[1])
    if matrix.flags.f_contiguous:
        return TRANS, max(1, matrix.shape[0])
    raise ValueError("the matrix must be contiguous, or the transpose of a contiguous one")


class BFloat16Products:
    """Products whose operands MKL rounds to bfloat16, accumulating in float32: on CPUs with AMX
    (Intel Sapphire Rapids and later) several times the float32 rate, at about 3e-3 relative error
    per product. `pack` a float32 matrix once; `compute` rounds each x to bfloat16 itself."""

    def __init__(self, functions):
        self.get_size, self.pack_function, self.compute_function = functions

    def pack(self, matrix: np.ndarray, rows: int) -> BFloat16Packed:
        """matrix (N, K) float32 -> its transpose (K, N) in bfloat16, packed for products of `rows` rows."""
        N, K = matrix.shape
        rounded = np.empty((N, K), np.uint16)
        to_bfloat16(np.ascontiguousarray(matrix, np.float32), rounded, np.empty((N, K), np.uint32))
        raw = np.empty(self.get_size(B_MATRIX, rows, N, K) // 2 + ALIGNMENT, np.uint16)
        buffer = raw[(-raw.ctypes.data % ALIGNMENT) // 2:]
        self.pack_function(ROW_MAJOR, B_MATRIX, TRANS, rows, N, K, rounded.ctypes.data, K, buffer.ctypes.data)
        return BFloat16Packed(buffer, rows, N, K)

    def compute(self, x: np.ndarray, packed: BFloat16Packed, out: np.ndarray, accumulate: bool = False):
        """x (rows, K) float32, out (rows, N) float32, each with unit stride along its rows: out = x
        matrix^T, or out += x matrix^T with `accumulate`, the operands rounded to bfloat16."""
        if x.shape != (packed.rows, packed.K) or out.shape != (packed.rows, packed.N):
            raise ValueError(f"shapes {x.shape} and {out.shape} do not fit a packed ({packed.N}, {packed.K}) "
                             f"matrix for {packed.rows} rows")
        if x.dtype != np.float32 or out.dtype != np.float32 or x.strides[1] != 4 or out.strides[1] != 4:
            raise ValueError("the arrays must be float32, with unit stride along their rows")
        to_bfloat16(x, packed.x, packed.scratch)
        self.compute_function(ROW_MAJOR, NO_TRANS, PACKED, packed.rows, packed.N, packed.K, 1.0,
                              packed.x.ctypes.data, packed.K, packed.buffer.ctypes.data, packed.K,
                              1.0 if accumulate else 0.0, out.ctypes.data, out.strides[0] // 4)


class BFloat16Packed:
    """A matrix packed by `BFloat16Products.pack`, with buffers for rounding its products' x."""

    def __init__(self, buffer: np.ndarray, rows: int, N: int, K: int):
        self.buffer, self.rows, self.N, self.K = buffer, rows, N, K
        self.dtype = np.dtype(np.float32)  # of the products' x and results
        self.x, self.scratch = np.empty((rows, K), np.uint16), np.empty((rows, K), np.uint32)


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
