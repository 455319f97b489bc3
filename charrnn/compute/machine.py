"""One line saying what made a benchmark figure: the CPU, NumPy's SIMD level and the BLAS in use
(and MKL, where the `mkl` extra offers packed step products).

The fastest formulation differs between CPUs (NumPy's float32 `tanh` takes six times as long with
its AVX2 code as with its AVX-512 code), so every table in BENCHMARKS.md starts with this line.
"""

from __future__ import annotations

import os
import platform

import numpy as np

from charrnn.compute.blas import OpenBLAS
from charrnn.compute.mkl import MKL_CODE_PATH_SETTINGS, mkl_products

SIMD_LEVELS = ("AVX512_SPR", "AVX512_ICL", "AVX512_SKX", "X86_V4", "AVX2", "X86_V3", "SSE42", "X86_V2")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def simd_level() -> str:
    """NumPy's best dispatched SIMD target on this CPU, e.g. 'AVX512_ICL' or 'AVX2'."""
    from numpy._core._multiarray_umath import __cpu_features__

    found = [level for level in SIMD_LEVELS if __cpu_features__.get(level)]
    return found[0] if found else "baseline"


def blas_kernel() -> str:
    """The BLAS NumPy was built with and, for OpenBLAS, its kernel on this CPU."""
    build = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    name = f"{build.get('name', 'unknown BLAS')} {build.get('version', '')}".strip()
    blas = OpenBLAS.find()
    return name if blas is None else f"{name} (kernel {blas.corename()})"


def blas_name() -> str:
    """`blas_kernel`, with the thread count BLAS uses now."""
    blas = OpenBLAS.find()
    return blas_kernel() if blas is None else f"{blas_kernel()[:-1]}, {blas.get_threads()} threads)"


def mkl_name() -> str:
    """Intel MKL's version where the `mkl` extra makes packed step products available, and the
    settings that hold it to an older code path where any is set, else 'no MKL'."""
    gemm = mkl_products()
    if gemm is None:
        return "no MKL"
    held = [f"{name}={os.environ[name]}" for name in MKL_CODE_PATH_SETTINGS if os.environ.get(name)]
    return f"MKL {gemm.version()}{' (' + ', '.join(held) + ')' if held else ''} for packed step products"


def describe() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu_name()}, {cores} cores, NumPy {np.__version__} SIMD {simd_level()}, BLAS {blas_name()}, "
            f"{mkl_name()}, Python {platform.python_version()}")
