"""Thread shards give the gradients of the whole batch, and BLAS threads are restored after."""

import numpy as np
import pytest

from charrnn.blas import OpenBLAS
from charrnn.config import ModelConfig
from charrnn.model import RNNLM
from charrnn.parallel import ShardedModel, shard_slices


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


def test_blas_threads_are_limited_inside_and_restored_after():
    blas = OpenBLAS.find()
    if blas is None:
        pytest.skip("NumPy's BLAS here is not OpenBLAS")
    before = blas.get_threads()
    with blas.limited(1):
        assert blas.get_threads() == 1
    assert blas.get_threads() == before


def test_automatic_threads_time_both_layouts_and_keep_the_clearly_faster(monkeypatch):
    from charrnn import parallel

    model = RNNLM(ModelConfig(cell="gru", hidden_size=16, num_layers=1), 7)
    params = model.init_params(np.random.default_rng(0))
    tokens, targets = np.random.default_rng(1).integers(0, 7, (2, 8, 6))
    sharded = ShardedModel(model, 0, 6)
    if not sharded.automatic:
        pytest.skip("one core, or no settable BLAS thread count: there is nothing to choose")
    quick = sharded.choose_workers(params, tokens, targets, model.initial_state(6))
    assert list(quick) == [sharded.cores] and sharded.workers == sharded.cores  # too quick to time: unchanged
    monkeypatch.setattr(parallel, "TIMED_SECONDS", 0.0)
    timings = sharded.choose_workers(params, tokens, targets, model.initial_state(6))
    assert set(timings) == {sharded.cores, 1}
    faster = timings[1] < (1 - parallel.SWITCH_GAIN) * timings[sharded.cores]
    assert sharded.workers == (1 if faster else sharded.cores)
    sharded.close()
    fixed = ShardedModel(model, 1, 6)
    assert fixed.choose_workers(params, tokens, targets, model.initial_state(6)) == {} and fixed.workers == 1
