"""Worker processes compute a training step's shards to the bit as worker threads do, hand their
errors back, are chosen only when faster, and leave no process behind."""

import multiprocessing
import os
import signal

import numpy as np
import pytest

from charrnn.compute.mkl import mkl_products
from charrnn.config import ModelConfig
from charrnn.errors import UserError
from charrnn.nn.model import RNNLM
from charrnn.training import layout, worker_processes
from charrnn.training.parallel import ShardedModel

pytestmark = pytest.mark.skipif(not worker_processes.available(), reason="no fork on this platform")

BATCH = 6


def sharded_step(dropout: float = 0.0, dtype: str = "float32", products: str = "batch_major"):
    """A two-worker ShardedModel of a small stacked LSTM (step products laid out as `products`),
    its parameters, a batch and dropout masks."""
    config = ModelConfig(cell="lstm", hidden_size=8, num_layers=2, dropout=dropout, dtype=dtype,
                         locked_dropout=dropout, output_dropout=dropout, weight_drop=dropout, embedding_dropout=dropout)
    model = RNNLM(config, 7)
    params = model.init_params(np.random.default_rng(0))
    tokens, targets = np.random.default_rng(1).integers(0, 7, (2, 5, BATCH))
    masks = model.regularisation(np.random.default_rng(2), 5, BATCH, 1.0, 1.0) if dropout else None
    sharded = ShardedModel(model, 2, BATCH, step_products=products)
    if sharded.workers == 1:
        pytest.skip("the BLAS thread count cannot be set here, so training does not shard")
    return sharded, params, tokens, targets, masks


def step(sharded, params, tokens, targets, masks):
    return sharded.loss_and_grads(params, tokens, targets, sharded.model.initial_state(BATCH), masks)


@pytest.mark.parametrize("products", ["batch_major", pytest.param("packed", marks=pytest.mark.skipif(
    mkl_products() is None, reason="packed step products need the mkl extra"))])
@pytest.mark.parametrize("dropout", [0.0, 0.5])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_processes_give_the_threads_loss_gradients_and_state_to_the_bit(dropout, dtype, products):
    sharded, params, tokens, targets, masks = sharded_step(dropout, dtype, products)
    loss, grads, final = step(sharded, params, tokens, targets, masks)
    assert sharded.start_processes(params, BATCH)
    assert sharded.layout()["layout"] == "2 worker processes x 1 BLAS thread"
    halved = {name: p * 0.5 for name, p in params.items()}  # each call's parameters, not the fork's
    assert step(sharded, halved, tokens, targets, masks)[0] != loss
    forked_loss, forked_grads, forked_final = step(sharded, params, tokens, targets, masks)
    sharded.close()
    assert forked_loss == loss
    for name in params:
        assert forked_grads[name].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(forked_grads[name], grads[name])
    for ours, theirs in zip(forked_final.layers, final.layers):
        np.testing.assert_array_equal(np.stack(ours), np.stack(theirs))
    np.testing.assert_array_equal(forked_final.history, final.history)


def test_a_workers_exception_is_raised_in_the_caller_and_the_workers_go_on():
    sharded, params, tokens, targets, _ = sharded_step()
    sharded.start_processes(params, BATCH)
    with pytest.raises(IndexError):
        step(sharded, params, tokens + 100, targets, None)  # token ids beyond the vocabulary
    with np.errstate(invalid="raise"), pytest.raises(FloatingPointError):  # the caller's error state holds there
        step(sharded, {name: np.full_like(p, np.inf) for name, p in params.items()}, tokens, targets, None)
    loss, _, _ = step(sharded, params, tokens, targets, None)
    sharded.close()
    assert np.isfinite(loss)


def test_a_worker_that_dies_ends_the_step_with_a_clear_error():
    sharded, params, tokens, targets, _ = sharded_step()
    sharded.start_processes(params, BATCH)
    os.kill(sharded.processes.processes[1].pid, signal.SIGKILL)
    sharded.processes.processes[1].join()
    with pytest.raises(UserError, match="worker process 1 was killed by signal 9 in the middle of a training step"):
        step(sharded, params, tokens, targets, None)
    sharded.close()
    assert multiprocessing.active_children() == []


def test_workers_ignore_stop_signals_and_end_when_closed():
    sharded, params, tokens, targets, _ = sharded_step()
    sharded.start_processes(params, BATCH)
    workers = list(sharded.processes.processes)
    for worker in workers:
        os.kill(worker.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group: the parent decides
        os.kill(worker.pid, signal.SIGTERM)
    loss, _, _ = step(sharded, params, tokens, targets, None)
    assert np.isfinite(loss) and all(worker.is_alive() for worker in workers)
    sharded.close()
    assert sharded.processes is None and not any(worker.is_alive() for worker in workers)
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("processes_faster", [True, False])
def test_training_keeps_processes_only_when_they_are_faster(monkeypatch, processes_faster):
    sharded, params, tokens, targets, _ = sharded_step()
    monkeypatch.setattr(layout, "TIMED_SECONDS", 0.0)
    speed_up = 0.99 if processes_faster else 1.01

    def step_seconds(sharded, *args):
        return 1.0 * (speed_up if sharded.processes is not None else 1.0)

    monkeypatch.setattr(layout, "step_seconds", step_seconds)
    timings = layout.choose_layout(sharded, params, tokens, targets, sharded.model.initial_state(BATCH))
    assert timings == {2: min(speed_up, 1.0)}  # a fixed thread count: no one-worker timing
    assert (sharded.processes is not None) == processes_faster
    sharded.close()
    assert sharded.layout()["worker_processes"] == processes_faster  # what the training steps ran in
    assert multiprocessing.active_children() == []


def test_mpi_processes_and_quick_steps_never_fork():
    sharded, params, tokens, targets, _ = sharded_step()
    timings = layout.choose_layout(sharded, params, tokens, targets, sharded.model.initial_state(BATCH))
    assert list(timings) == [2] and timings[2] < layout.TIMED_SECONDS  # too quick to time against processes
    assert sharded.processes is None and not sharded.layout()["worker_processes"]
    sharded.may_fork = False  # as under MPI
    assert not sharded.start_processes(params, BATCH) and sharded.processes is None
    sharded.close()


EXITS_WITHOUT_CLOSING = """
import os, sys, tempfile
scratch = tempfile.TemporaryDirectory()  # a weakref.finalize made before multiprocessing is imported
import numpy as np
from charrnn.config import ModelConfig
from charrnn.nn.model import RNNLM
from charrnn.training.parallel import ShardedModel
model = RNNLM(ModelConfig(cell="gru", hidden_size=8), 7)
params = model.init_params(np.random.default_rng(0))
sharded = ShardedModel(model, 2, 4)
assert sharded.workers == 2 and sharded.start_processes(params, 4)
tokens = np.zeros((3, 4), np.int64)
sharded.loss_and_grads(params, tokens, tokens, model.initial_state(4))
print(*(process.pid for process in sharded.processes.processes))
{ending}
"""


@pytest.mark.parametrize("ending", ["", "sys.exit(3)", "raise RuntimeError('boom')", "del sharded"])
def test_workers_end_with_the_program_even_unclosed(ending):
    import subprocess
    import sys
    import time

    run = subprocess.run([sys.executable, "-c", EXITS_WITHOUT_CLOSING.format(ending=ending)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode in (0, 1, 3), run.stderr
    for pid in map(int, run.stdout.split()):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]


def test_a_batch_of_another_size_runs_in_the_threads():
    sharded, params, tokens, targets, _ = sharded_step()
    sharded.start_processes(params, BATCH)
    one_stream = sharded.loss_and_grads(params, tokens[:, :1], targets[:, :1], sharded.model.initial_state(1))
    sharded.close()
    alone = sharded.model.loss_and_grads(params, tokens[:, :1], targets[:, :1], sharded.model.initial_state(1))
    assert one_stream[0] == pytest.approx(alone[0] / BATCH)  # the shard's share of the whole batch
