"""Choosing how a training step's work is laid out on this machine, by timing it on the first batch.

Three choices, each measured because the fastest differs by CPU, BLAS kernel and model size:

- the workers of a `ShardedModel` (`charrnn.training.parallel`): one per core on shards of the batch, in
  threads or in forked processes (which compute the same numbers, so the faster wins by any
  margin), or one worker with BLAS's own threads (whose sums differ, so it must be clearly
  faster, by SWITCH_GAIN);
- the layout of each time step's product with W_hh, batch-major, gate-major or, where the `mkl`
  extra is installed, packed (see `charrnn.nn.products`), by timing the cell's loops each way on
  a worker's shard (the layouts round differently, so another must beat batch-major by
  PRODUCTS_GAIN).

Steps and loops too quick to time reliably keep the defaults, so that small models lay their work
out alike every run. `charrnn train` records the choices in the config, so a resumed run lays its
work out alike and continues bit for bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from charrnn.nn.cells import make_cell
from charrnn.nn.model import RNNLM, State
from charrnn.nn.products import available_layouts
from charrnn.training.parallel import ShardedModel, shard_slices

TIMED_SECONDS = 0.05  # steps shorter than this are too noisy to choose by: keep one worker per core
SWITCH_GAIN = 0.1  # how much faster one worker must be to be chosen
LOOP_STEPS = 128  # time steps of the loops timed to choose the step products' layout
LOOP_TIMED_SECONDS = 0.005  # loops quicker than this keep batch-major step products
PRODUCTS_GAIN = 0.05  # how much faster than batch-major other loops must be to be chosen (timings vary by about 2%)


def timed(function, *args) -> float:
    """Seconds one call of function(*args) takes."""
    begin = time.perf_counter()
    function(*args)
    return time.perf_counter() - begin


def loop_seconds(model: RNNLM, layout: str, batch: int, steps: int) -> float:
    """Seconds the cell's forward and backward loops take over `steps` steps of `batch` streams
    (random weights of the model's sizes), with step products laid out as `layout` says: the best
    of three after a warm-up."""
    config, rng = model.config, np.random.default_rng(0)
    cell, H = make_cell(config.cell, config.nonlinearity, layout), config.hidden_size
    w_hh = (rng.standard_normal((cell.gates * H, H)) / np.sqrt(H)).astype(model.dtype)
    bias = np.zeros(cell.gates * H, model.dtype)
    xw = rng.standard_normal((steps, batch, cell.gates * H)).astype(model.dtype)
    d_out = rng.standard_normal((steps, batch, H)).astype(model.dtype)
    state = tuple(np.zeros((batch, H), model.dtype) for _ in range(cell.arity))

    def loops():
        _, _, weights = cell.prepare(w_hh[:, :0], w_hh, bias, bias)  # no input: only the loop's weights are used
        buf = cell.allocate(steps, batch, H, model.dtype)
        cell.forward(xw.copy(), state, weights, buf)
        cell.backward(d_out, buf, w_hh)

    loops()
    return min(timed(loops) for _ in range(3))


def faster_step_products(sharded: ShardedModel, steps: int, alone: bool = False) -> str:
    """The step-product layout for `sharded`'s shards: batch-major (the default) unless another
    available layout's loops run clearly faster (by PRODUCTS_GAIN), the fastest of them. Each is
    timed in every worker thread at once, as training runs them, the slowest worker counting,
    or, `alone`, on one shard in this thread, as a worker process runs it (threads' timings also
    hold their waits for the interpreter lock). Loops too quick to time reliably (under
    LOOP_TIMED_SECONDS) keep the default."""
    seconds, streams = {}, sharded.rows.stop - sharded.rows.start
    shard = shard_slices(streams, sharded.workers)[0]
    for layout in available_layouts():
        if alone:
            seconds[layout] = loop_seconds(sharded.model, layout, shard.stop - shard.start, steps)
        else:
            times, _ = sharded.map(lambda rows: loop_seconds(sharded.model, layout, rows.stop - rows.start, steps),
                                   streams)
            seconds[layout] = max(times)
        if seconds["batch_major"] < LOOP_TIMED_SECONDS:
            break
    fastest = min(seconds, key=seconds.get)
    return fastest if seconds[fastest] < (1 - PRODUCTS_GAIN) * seconds["batch_major"] else "batch_major"


@dataclass(frozen=True)
class LayoutChoice:
    """What `choose_layout` settles, to remember and apply again without timing: the worker count,
    whether the workers are forked processes, and the layout of each step's product."""

    workers: int
    forked: bool
    step_products: str

    @classmethod
    def of(cls, sharded: ShardedModel) -> LayoutChoice:
        return cls(sharded.workers, sharded.processes is not None, sharded.step_products)


def apply_choice(sharded: ShardedModel, choice: LayoutChoice, params, streams: int):
    """Lay `sharded` out as `choice` (from an earlier `choose_layout` of the same shapes on this machine)."""
    sharded.use_workers(choice.workers)
    sharded.use_step_products(choice.step_products)
    if choice.forked:
        sharded.start_processes(params, streams)


def times_anything(sharded: ShardedModel, streams: int, step_products: str) -> bool:
    """Whether `choose_layout` would time anything (or settle everything from the settings)."""
    return step_products == "auto" or sharded.automatic or sharded.can_fork(streams)


def step_seconds(sharded: ShardedModel, params, tokens: np.ndarray, targets: np.ndarray, state: State) -> float:
    """Seconds a training step takes as `sharded` lays it out now: the best of two after a warm-up."""
    sharded.loss_and_grads(params, tokens, targets, state)
    return min(timed(sharded.loss_and_grads, params, tokens, targets, state) for _ in range(2))


def choose_layout(sharded: ShardedModel, params, tokens: np.ndarray, targets: np.ndarray, state: State,
                  step_products: str = "auto") -> dict:
    """Settle what is automatic for `sharded`, on this batch (tokens, targets (T, b)):

    - `step_products` "auto": the layout of the per-step products whose loops run faster on
      each worker's shard (`faster_step_products`);
    - `threads: 0`: time a training step (forward and backward) with one worker per core,
      and, if a step takes long enough to time reliably, with those workers in forked
      processes, and with one worker and multi-threaded BLAS (each the best of two after a
      warm-up, each with its own step products); keep the processes if they are faster at
      all, switch to one worker only if it is clearly faster. Which wins depends on the CPU
      (where SIMD makes the gate arithmetic cheap, worker threads mostly wait on the
      interpreter lock) and on the sizes.

    A fixed thread count (resumed runs have one) still times threads against processes. Under
    MPI rank 0 chooses, and the others take its choices from the config it shares; MPI processes
    keep their threads. -> {workers: seconds per step}, empty when nothing was timed."""
    if step_products != "auto":
        sharded.use_step_products(step_products)
    timings, products, forked = {}, {}, {}
    steps, streams = min(len(tokens), LOOP_STEPS), tokens.shape[1]
    for workers in (sharded.cores, 1) if sharded.automatic else (sharded.workers,):
        sharded.use_workers(workers)
        if step_products == "auto":
            sharded.use_step_products(faster_step_products(sharded, steps))
        products[workers] = sharded.step_products
        if not (sharded.automatic or sharded.can_fork(streams)):
            break
        timings[workers] = step_seconds(sharded, params, tokens, targets, state)
        if timings[workers] < TIMED_SECONDS:
            break
        if sharded.can_fork(streams):
            if step_products == "auto":
                sharded.use_step_products(faster_step_products(sharded, steps, alone=True))
            sharded.start_processes(params, streams)
            in_processes = step_seconds(sharded, params, tokens, targets, state)
            forked[workers] = in_processes < timings[workers]  # the same numbers: the faster wins by any margin
            if forked[workers]:
                timings[workers], products[workers] = in_processes, sharded.step_products
            sharded.stop_processes()
    faster = len(timings) == 2 and timings[1] < (1 - SWITCH_GAIN) * timings[sharded.cores]
    workers = 1 if faster else next(iter(products))
    sharded.use_workers(workers)
    sharded.use_step_products(products[workers])
    if forked.get(workers):
        sharded.start_processes(params, streams)
    return timings
