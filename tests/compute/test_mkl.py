"""MKL's packed products (the `mkl` extra) compute what NumPy's matmul computes, and refuse what they cannot take."""

import re

import numpy as np
import pytest

from charrnn.compute.mkl import mkl_products
from charrnn.nn.products import StepProducts

gemm = mkl_products()
pytestmark = pytest.mark.skipif(gemm is None, reason="packed step products need the mkl extra")


@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 1e-5), (np.float64, 1e-13)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_a_packed_matrix_times_many_row_blocks_equals_matmul(dtype, tolerance, order):
    rng = np.random.default_rng(0)
    matrix = np.asarray(rng.standard_normal((12, 5)), dtype, order=order)  # (N, K)
    packed = gemm.pack(matrix, 3)
    for _ in range(3):
        x = rng.standard_normal((3, 5)).astype(dtype)
        out = np.full((3, 12), np.nan, dtype)
        gemm.compute(x, packed, out)
        np.testing.assert_allclose(out, x @ matrix.T, rtol=tolerance, atol=tolerance)


def test_accumulating_adds_to_a_strided_row_block_and_nothing_else():
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((6, 4)).astype(np.float32)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    whole = rng.standard_normal((2, 10)).astype(np.float32)
    before = whole.copy()
    gemm.compute(x, gemm.pack(matrix, 2), whole[:, 3:9], accumulate=True)  # rows 10 apart, 6 columns
    np.testing.assert_allclose(whole[:, 3:9], before[:, 3:9] + x @ matrix.T, rtol=1e-5, atol=1e-6)
    assert np.array_equal(whole[:, :3], before[:, :3]) and np.array_equal(whole[:, 9:], before[:, 9:])


def test_shapes_dtypes_and_strides_that_do_not_fit_are_refused_before_mkl_sees_them():
    matrix = np.ones((6, 4), np.float32)
    packed = gemm.pack(matrix, 2)
    with pytest.raises(ValueError, match="do not fit"):
        gemm.compute(np.ones((3, 4), np.float32), packed, np.empty((3, 6), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        gemm.compute(np.ones((2, 4)), packed, np.empty((2, 6), np.float32))
    with pytest.raises(ValueError, match="unit stride"):
        gemm.compute(np.ones((4, 2), np.float32).T, packed, np.empty((2, 6), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        gemm.pack(np.ones((6, 8), np.float32)[:, ::2], 2)


@pytest.mark.parametrize("layout", ["batch_major", "gate_major", "packed"])
def test_every_layout_multiplies_and_adds_the_same(layout):
    rng = np.random.default_rng(2)
    matrix, x = rng.standard_normal((8, 3)), rng.standard_normal((4, 3))
    product = StepProducts(layout).product(matrix, 4)
    np.testing.assert_allclose(product.times(x), x @ matrix.T, rtol=1e-13)
    out = np.ones((4, 8))
    product.add_times(x, out)
    np.testing.assert_allclose(out, 1 + x @ matrix.T, rtol=1e-13)


def test_the_bench_header_names_the_mkl_that_packs():
    from charrnn.compute.machine import describe

    assert re.fullmatch(r"\d{4}(\.\d+)*", gemm.version())
    assert f"MKL {gemm.version()} for packed step products" in describe()


def test_the_bench_header_says_what_holds_mkl_to_an_older_code_path(monkeypatch):
    from charrnn.compute.machine import describe

    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    monkeypatch.delenv("MKL_CBWR", raising=False)
    assert f"MKL {gemm.version()} (MKL_ENABLE_INSTRUCTIONS=AVX2) for packed step products" in describe()


@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 1e-5), (np.float64, 1e-13)])
def test_a_layout_that_packs_multiplies_matrices_through_mkl_as_numpy_does(dtype, tolerance):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((7, 5)).astype(dtype), rng.standard_normal((5, 4)).astype(dtype)
    packed = StepProducts("packed")
    for left, right in [(a, b), (np.asfortranarray(a), b), (a, b.T.copy().T), (a.T.copy().T, np.asfortranarray(b))]:
        result = packed.matmul(left, right)
        assert result.flags.c_contiguous and result.dtype == dtype
        np.testing.assert_allclose(result, a @ b, rtol=tolerance, atol=tolerance)
    strided = rng.standard_normal((7, 10)).astype(dtype)[:, ::2]  # neither C nor F: NumPy's matmul takes it
    np.testing.assert_allclose(packed.matmul(strided, b), strided @ b, rtol=tolerance, atol=tolerance)
    with pytest.raises(ValueError, match="cannot multiply"):
        gemm.multiply(a, a)


def test_bfloat16_rounding_keeps_the_nearest_bfloat16():
    from charrnn.compute.mkl import to_bfloat16

    x = np.random.default_rng(5).standard_normal((7, 33)).astype(np.float32) * np.float32(1e3)
    x[0, :4] = [1 + 2 ** -8, -(1 + 2 ** -8), 2 ** -130, 0.0]  # two ties (away from zero), a subnormal, zero
    rounded = np.empty(x.shape, np.uint16)
    to_bfloat16(x, rounded, np.empty(x.shape, np.uint32))
    values = (rounded.astype(np.uint32) << 16).view(np.float32)
    below = (x.view(np.uint32) & 0xFFFF0000).view(np.float32)  # truncated: the bfloat16 towards zero
    above = ((x.view(np.uint32) & 0xFFFF0000) + 0x10000).view(np.float32)
    nearest = np.where(np.abs(x - below) < np.abs(above - x), below, above)
    assert np.array_equal(values, nearest)
    assert values[0, 0] == 1 + 2 ** -7 and values[0, 1] == -(1 + 2 ** -7)


def test_bfloat16_products_are_float32_products_up_to_bfloat16_rounding():
    products = gemm.bfloat16_products()
    rng = np.random.default_rng(6)
    matrix = rng.standard_normal((40, 64)).astype(np.float32)  # (N, K)
    x = rng.standard_normal((9, 64)).astype(np.float32)
    packed = products.pack(matrix, 9)
    out = rng.standard_normal((9, 50)).astype(np.float32)
    before = out.copy()
    products.compute(x, packed, out[:, 5:45], accumulate=True)
    exact = x.astype(np.float64) @ matrix.T.astype(np.float64)
    scale = np.abs(x) @ np.abs(matrix.T)  # each sum's size if nothing cancelled
    error = np.abs(out[:, 5:45] - before[:, 5:45] - exact)
    assert error.max() > 0 and (error <= 1.01 * 2 ** -7 * scale).all()  # each operand within 2^-8 of itself
    assert np.array_equal(out[:, :5], before[:, :5]) and np.array_equal(out[:, 45:], before[:, 45:])
    with pytest.raises(ValueError, match="float32"):
        products.compute(x.astype(np.float64), packed, out[:, 5:45])


def test_the_bfloat16_layout_reads_as_the_float32_one_up_to_rounding():
    from charrnn.config import ModelConfig
    from charrnn.nn.model import RNNLM

    config = ModelConfig(cell="lstm", hidden_size=32, num_layers=2, dtype="float32")
    params = RNNLM(config, 11).init_params(np.random.default_rng(7))
    tokens = np.random.default_rng(8).integers(0, 11, (6, 5))
    logits = {layout: RNNLM(config, 11, layout).stepper(params, 5).read(tokens).copy()
              for layout in ("batch_major", "bfloat16")}
    difference = np.abs(logits["bfloat16"] - logits["batch_major"])
    assert 0 < difference.max() < 0.02 * np.abs(logits["batch_major"]).max()
