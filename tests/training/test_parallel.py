"""Thread shards give the gradients of the whole batch, and BLAS threads are restored after."""

import re

import numpy as np
import pytest

from charrnn.compute.blas import OpenBLAS
from charrnn.config import ModelConfig
from charrnn.errors import UserError
from charrnn.extras import install_command
from charrnn.nn import products as products_module
from charrnn.nn.model import RNNLM
from charrnn.nn.products import LAYOUTS, available_layouts
from charrnn.training.layout import choose_layout, faster_step_products, loop_seconds
from charrnn.training.parallel import ShardedModel, shard_slices

PACKED_STAND_IN = object()  # what `mkl_products` returns where layouts are chosen, not run


def test_shards_cover_the_batch_contiguously():
    assert shard_slices(10, 3) == [slice(0, 3), slice(3, 7), slice(7, 10)]
    assert shard_slices(2, 8) == [slice(0, 1), slice(1, 2)]


@pytest.mark.parametrize("threads", [2, 3])
def test_sharded_loss_gradients_and_state_equal_the_whole_batch(threads):
    model = RNNLM(ModelConfig(cell="lstm", hidden_size=6, num_layers=2, encoding="bow", dtype="float64"), 7)
    params = model.init_params(np.random.default_rng(0))
    tokens, targets = np.random.default_rng(1).integers(0, 7, (2, 5, 7))
    sharded = ShardedModel(model, threads, 7)
    if sharded.workers == 1:
        pytest.skip("the BLAS thread count cannot be set here, so training does not shard")
    loss, grads, final = sharded.loss_and_grads(params, tokens, targets, model.initial_state(7))
    expected_loss, expected_grads, expected_final, _ = model.loss_and_grads(params, tokens, targets,
                                                                           model.initial_state(7))
    sharded.close()
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    for name in params:
        np.testing.assert_allclose(grads[name], expected_grads[name], rtol=1e-10, atol=1e-14)
    for ours, theirs in zip(final.layers, expected_final.layers):
        np.testing.assert_array_equal(np.stack(ours), np.stack(theirs))
    np.testing.assert_array_equal(final.history, expected_final.history)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sharded_gradients_keep_the_parameters_dtype(dtype):
    model = RNNLM(ModelConfig(cell="gru", hidden_size=6, num_layers=1, dtype=dtype), 7)
    params = model.init_params(np.random.default_rng(0))
    tokens, targets = np.random.default_rng(1).integers(0, 7, (2, 5, 7))
    sharded = ShardedModel(model, 2, 7)
    _, grads, _ = sharded.loss_and_grads(params, tokens, targets, model.initial_state(7))
    sharded.close()
    assert {grads[name].dtype for name in params} == {np.dtype(dtype)}


def test_blas_threads_are_limited_inside_and_restored_after():
    blas = OpenBLAS.find()
    if blas is None:
        pytest.skip("NumPy's BLAS here is not OpenBLAS")
    before = blas.get_threads()
    with blas.limited(1):
        assert blas.get_threads() == 1
    assert blas.get_threads() == before


def test_automatic_threads_time_both_layouts_and_keep_the_clearly_faster(monkeypatch):
    from charrnn.training import layout

    model = RNNLM(ModelConfig(cell="gru", hidden_size=16, num_layers=1), 7)
    params = model.init_params(np.random.default_rng(0))
    tokens, targets = np.random.default_rng(1).integers(0, 7, (2, 8, 6))
    sharded = ShardedModel(model, 0, 6)
    if not sharded.automatic:
        pytest.skip("one core, or no settable BLAS thread count: there is nothing to choose")
    quick = choose_layout(sharded, params, tokens, targets, model.initial_state(6))
    assert list(quick) == [sharded.cores] and sharded.workers == sharded.cores  # too quick to time: unchanged
    monkeypatch.setattr(layout, "TIMED_SECONDS", 0.0)
    timings = choose_layout(sharded, params, tokens, targets, model.initial_state(6))
    assert set(timings) == {sharded.cores, 1}
    faster = timings[1] < (1 - layout.SWITCH_GAIN) * timings[sharded.cores]
    assert sharded.workers == (1 if faster else sharded.cores)
    sharded.close()
    fixed = ShardedModel(model, 1, 6)
    assert choose_layout(fixed, params, tokens, targets, model.initial_state(6)) == {} and fixed.workers == 1


@pytest.mark.parametrize("fastest", LAYOUTS)
def test_automatic_step_products_take_the_layout_whose_loops_run_faster(monkeypatch, fastest):
    from charrnn.training import layout

    model = RNNLM(ModelConfig(cell="lstm", hidden_size=8, num_layers=1), 7)
    params = model.init_params(np.random.default_rng(0))
    tokens, targets = np.random.default_rng(1).integers(0, 7, (2, 8, 6))
    timed_layouts = []

    def loop_seconds(model, products, batch, steps):
        timed_layouts.append((products, batch, steps))
        return 1.0 if products == fastest else 1.2

    monkeypatch.setattr(layout, "available_layouts", lambda: LAYOUTS)
    monkeypatch.setattr(layout, "loop_seconds", loop_seconds)
    monkeypatch.setattr(products_module, "mkl_products", lambda: PACKED_STAND_IN)
    sharded = ShardedModel(model, 1, 6)
    assert choose_layout(sharded, params, tokens, targets, model.initial_state(6)) == {}
    assert sharded.step_products == fastest and sharded.model.cell.products.layout == fastest
    assert timed_layouts == [(products, 6, 8) for products in LAYOUTS]  # the whole batch on one worker, T = 8
    assert sharded.layout()["step_products"] == fastest
    timed_layouts.clear()
    choose_layout(sharded, params, tokens, targets, model.initial_state(6), "batch_major")
    assert timed_layouts == [] and sharded.step_products == "batch_major"  # a fixed layout is not timed


def test_step_products_stay_batch_major_unless_another_layout_is_clearly_faster(monkeypatch):
    from charrnn.training import layout

    model = RNNLM(ModelConfig(cell="rnn", hidden_size=8, num_layers=1), 7)
    sharded = ShardedModel(model, 1, 6)
    monkeypatch.setattr(layout, "available_layouts", lambda: LAYOUTS)
    for seconds, chosen in [((1.0, 0.97, 0.98), "batch_major"), ((1.0, 0.9, 1.2), "gate_major"),
                            ((1.0, 0.9, 0.8), "packed"), ((0.004, 0.001, 0.001), "batch_major")]:  # too quick to tell
        monkeypatch.setattr(layout, "loop_seconds", lambda model, products, batch, steps: seconds[LAYOUTS.index(products)])
        assert faster_step_products(sharded, 8) == chosen


def test_only_the_layouts_this_machine_has_are_timed(monkeypatch):
    monkeypatch.setattr(products_module, "mkl_products", lambda: None)
    assert products_module.available_layouts() == ("batch_major", "gate_major")
    with pytest.raises(UserError, match=re.escape(install_command("mkl"))):
        RNNLM(ModelConfig(cell="gru", hidden_size=8, num_layers=1), 7, "packed")


def test_loop_timing_runs_the_real_cell_loops():

    model = RNNLM(ModelConfig(cell="gru", hidden_size=8, num_layers=1), 7)
    assert all(0 < loop_seconds(model, products, 3, 4) < 1 for products in available_layouts())
