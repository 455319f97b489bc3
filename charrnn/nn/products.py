"""How a time loop's product with its recurrent weight is computed, step after step.

Each step multiplies the state by the same matrix: `x m^T` for x (B, K) and m (N, K), h_{t-1}
W_hh^T forward and `d W_hh` backward. A loop asks its layout for a `StepProduct` once, then calls
it every step. Three layouts, which round differently, and whose speed depends on the BLAS, its
kernel and the shapes (so `charrnn.training.layout` times them and training records its choice):

- "batch_major": NumPy's matmul writes the (B, N) product;
- "gate_major": NumPy's matmul writes its transpose `m x^T` (N, B), read through a transposed
  view. With OpenBLAS's AVX-512 kernel this takes about 60% of the time for a (32, 512) state
  against a (2048, 512) weight, as OpenBLAS packs the large operand for every call, and the
  transposed form packs it into the cheaper side;
- "packed": Intel MKL packs m once per loop and every step's product reuses it, adding into the
  caller's buffer where asked (`charrnn.compute.mkl`, the optional `mkl` extra).

One more layout only reads (scoring a long text's pieces, never training, whose gradients must be
exact): "bfloat16", packed like "packed" but with MKL's bfloat16 products, the operands rounded
to bfloat16 and summed in float32. With AMX it runs several times the float32 rate.

A layout also multiplies the layer's large matrices outside the loop (`matmul`: the input
projection, the weight and input gradients): NumPy's matmul, or MKL's where it packs.
"""

from __future__ import annotations

import numpy as np

from charrnn.compute.mkl import mkl_products
from charrnn.errors import UserError
from charrnn.extras import install_command

LAYOUTS = ("batch_major", "gate_major", "packed")
READING_LAYOUTS = LAYOUTS + ("bfloat16",)
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def contiguous(matrix: np.ndarray) -> bool:
    return matrix.flags.c_contiguous or matrix.flags.f_contiguous


class StepProduct:
    """`times(x)` -> x m^T (B, N) for one matrix m (N, K) and B rows, over a buffer made on first use."""

    def __init__(self, matrix: np.ndarray, rows: int, gate_major: bool):
        self.gate_major, self.rows = gate_major, rows
        self.matrix = np.ascontiguousarray(matrix) if gate_major else matrix
        self.out: np.ndarray | None = None
        self.transposed: np.ndarray | None = None

    def times(self, x: np.ndarray) -> np.ndarray:
        """x (B, K) -> x m^T (B, N), a view of this product's buffer, overwritten by the next call."""
        if self.out is None:
            N = self.matrix.shape[0]
            self.out = np.empty((N, self.rows) if self.gate_major else (self.rows, N), self.matrix.dtype)
        if self.gate_major:
            np.matmul(self.matrix, x.T, out=self.out)
            return self.out.T
        np.matmul(x, self.matrix.T, out=self.out)
        return self.out

    def add_times(self, x: np.ndarray, out: np.ndarray):
        """out (B, N) += x (B, K) m^T."""
        out += self.times(x)

    def affine(self, x: np.ndarray, bias: np.ndarray, out: np.ndarray):
        """out (B, N) = x (B, K) m^T + bias (N,), written batch-major, through a contiguous copy of
        m^T made on first use (a `Stepper` calls this with the same matrix for every read; OpenBLAS
        is up to 10% faster for a thin x with the copy than through the transposed view)."""
        if self.transposed is None:
            self.transposed = np.ascontiguousarray(self.matrix.T)
        np.matmul(x, self.transposed, out=out)
        out += bias


class PackedStepProduct:
    """A `StepProduct` whose matrix MKL packed once (`gemm`: `MKLProducts`, or `BFloat16Products` for
    the "bfloat16" layout): `add_times` adds into `out` in the same call."""

    def __init__(self, gemm, matrix: np.ndarray, rows: int):
        self.gemm, self.packed = gemm, gemm.pack(matrix, rows)
        self.out: np.ndarray | None = None

    def times(self, x: np.ndarray) -> np.ndarray:
        """x (B, K) -> x m^T (B, N), this product's buffer, overwritten by the next call."""
        if self.out is None:
            self.out = np.empty((self.packed.rows, self.packed.N), self.packed.dtype)
        self.gemm.compute(x, self.packed, self.out)
        return self.out

    def add_times(self, x: np.ndarray, out: np.ndarray):
        """out (B, N) += x (B, K) m^T; out needs unit stride along its rows."""
        self.gemm.compute(x, self.packed, out, accumulate=True)

    def affine(self, x: np.ndarray, bias: np.ndarray, out: np.ndarray):
        """out (B, N) = x (B, K) m^T + bias (N,): the bias written first, the product added to it."""
        out[...] = bias
        self.gemm.compute(x, self.packed, out, accumulate=True)


class LeadingProjection:
    """`affine` into rows wider than the matrix (see `StepProducts.projection`)."""

    def __init__(self, product, columns: int):
        self.product, self.columns = product, columns

    def affine(self, x: np.ndarray, bias: np.ndarray, out: np.ndarray):
        """out (B, N) = [x (B, K) m^T, 0] + bias (N,) for m (M, K), M < N: the bias written, the
        product added to its first M columns."""
        out[...] = bias
        self.product.add_times(x, out[:, :self.columns])


class StepProducts:
    """A layout from READING_LAYOUTS: `product(m, B)` makes the StepProduct a loop calls every step."""

    def __init__(self, layout: str = "batch_major"):
        if layout not in READING_LAYOUTS:
            raise ValueError(f"unknown step-product layout {layout!r}")
        self.layout = layout
        self.gemm = self.bfloat16 = None
        if layout in ("packed", "bfloat16"):
            self.gemm = mkl_products()
            if self.gemm is None:
                raise UserError(f"step products {layout!r} need Intel MKL, which is not installed: install the mkl extra: {install_command('mkl')}, "
                                "or set train.step_products to batch_major or gate_major")
        if layout == "bfloat16":
            self.bfloat16 = self.gemm.bfloat16_products()

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a (M, K) @ b (K, N) -> (M, N): through MKL for a layout that packs, where both are
        (transposes of) contiguous arrays of one float dtype, else NumPy's matmul."""
        if self.gemm is not None and a.dtype == b.dtype and a.dtype in FLOATS and a.ndim == b.ndim == 2 \
                and a.size and b.size and contiguous(a) and contiguous(b):
            return self.gemm.multiply(a, b)
        return a @ b

    def projection(self, matrix: np.ndarray, rows: int, width: int):
        """matrix (M, K), rows B, width N >= M -> an object whose `affine(x, bias, out)` is
        out (B, N) = x m^T + bias in the first M columns, bias alone in the rest."""
        product = self.product(matrix, rows)
        return product if width == len(matrix) else LeadingProjection(product, len(matrix))

    def product(self, matrix: np.ndarray, rows: int):
        """matrix (N, K), rows B -> the StepProduct computing x m^T for x (B, K)."""
        if self.gemm is not None:  # MKLProducts, or BFloat16Products: the same pack and compute
            return PackedStepProduct(self.bfloat16 or self.gemm, matrix, rows)
        return StepProduct(matrix, rows, self.layout == "gate_major")


def available_layouts() -> tuple[str, ...]:
    """The layouts this process can use: "packed" only where MKL is installed."""
    return LAYOUTS if mkl_products() is not None else LAYOUTS[:2]
