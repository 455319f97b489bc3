"""Data parallelism over threads: the batch is cut into shards, one per worker thread.

NumPy releases the GIL in BLAS calls and ufuncs, but one NumPy thread can only parallelise
the BLAS part; the element-wise gate arithmetic, as heavy as the matrix products on a small
CPU, would run on one core. Each worker therefore runs the whole forward and backward for its
shard with single-threaded BLAS (set for the duration of the call, see `charrnn.blas`), and
the shard gradients are summed, weighted by their share of the tokens. Shards are fixed by the
batch size and thread count, so results are deterministic for a given `threads` setting. Where
the BLAS thread count cannot be set, one worker is used and BLAS keeps its own threads.

The layout of each time step's product with W_hh (batch-major or gate-major, see
`charrnn.nn.cells`) is chosen here too, by timing the cell's loops both ways on a worker's shard;
so is whether a training step's shards run in worker threads or in forked worker processes
(`charrnn.worker_processes`), which do not share the interpreter's lock. Both compute the same
numbers; validation and scoring always run in the threads.

Under MPI (`charrnn.distributed`) this process owns only a block of the batch's streams: the
threads share that block, each shard weighted by its share of the whole batch, and `combine`
sums the processes' parts with one collective.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from charrnn import worker_processes
from charrnn.blas import OpenBLAS
from charrnn.distributed import REQUESTS, Solo
from charrnn.evaluate import Score, score
from charrnn.model import RNNLM, State
from charrnn.nn.cells import make_cell


TIMED_SECONDS = 0.05  # steps shorter than this are too noisy to choose by: keep one worker per core
SWITCH_GAIN = 0.1  # how much faster one worker must be to be chosen
LOOP_STEPS = 128  # time steps of the loops timed to choose the step products' layout
LOOP_TIMED_SECONDS = 0.005  # loops quicker than this keep batch-major step products
PRODUCTS_GAIN = 0.05  # how much faster gate-major loops must be to be chosen (their timing varies by about 2%)
STEP_PRODUCTS = ("batch_major", "gate_major")


def timed(function, *args) -> float:
    """Seconds one call of function(*args) takes."""
    begin = time.perf_counter()
    function(*args)
    return time.perf_counter() - begin


def resolve_threads(threads: int, processes_here: int = 1) -> int:
    """0 means one worker per CPU core available, shared among the processes on this machine."""
    if threads:
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // processes_here)


def shard_slices(batch: int, workers: int) -> list[slice]:
    """Contiguous, nearly equal batch ranges, at most one per stream."""
    bounds = np.linspace(0, batch, min(workers, batch) + 1).round().astype(int)
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def loop_seconds(model: RNNLM, gate_major: bool, batch: int, steps: int) -> float:
    """Seconds the cell's forward and backward loops take over `steps` steps of `batch` streams
    (random weights of the model's sizes), with step products laid out as `gate_major` says:
    the best of three after a warm-up."""
    config, rng = model.config, np.random.default_rng(0)
    cell, H = make_cell(config.cell, config.nonlinearity, gate_major), config.hidden_size
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


def select(state: State, rows: slice) -> State:
    return State([tuple(s[rows] for s in layer) for layer in state.layers], state.history[:, rows])


def concatenate(states: list[State]) -> State:
    layers = [tuple(np.concatenate(parts) for parts in zip(*layer)) for layer in zip(*(s.layers for s in states))]
    return State(layers, np.concatenate([s.history for s in states], axis=1))


class ShardedModel:
    """`loss_and_grads` and `token_nll` of an RNNLM over this process's streams of a global batch
    of `batch`, computed in worker threads (training steps perhaps in worker processes, see
    `choose_layout`); `combine` adds the other processes' parts."""

    def __init__(self, model: RNNLM, threads: int, batch: int, comm=None, step_products: str = "auto",
                 may_fork: bool = True):
        self.model, self.batch, self.comm = model, batch, comm or Solo()
        self.processes: worker_processes.WorkerProcesses | None = None  # see `choose_layout`
        self.forked = False  # whether training steps run in worker processes (still said after `close`)
        self.may_fork = may_fork and self.comm.size == 1
        if step_products != "auto":  # else batch-major until `choose_layout`
            self.use_step_products(step_products)
        self.rows = self.comm.rows(batch)  # this process's streams
        self.blas = OpenBLAS.find()
        self.cores = resolve_threads(0, self.comm.local_size)  # this process's share of the machine
        self.automatic = threads == 0 and self.blas is not None and self.cores > 1
        self.pool: ThreadPoolExecutor | None = None
        self.blas_default = self.blas.get_threads() if self.blas is not None else None  # restored by close()
        self.use_workers(resolve_threads(threads, self.comm.local_size) if self.blas is not None else 1)
        self.flat: np.ndarray | None = None  # the buffer `combine` reduces

    @property
    def step_products(self) -> str:
        """'batch_major' or 'gate_major': the layout of the model's per-step products."""
        return STEP_PRODUCTS[self.model.cell.gate_major]

    def use_step_products(self, layout: str):
        """Lay the model's per-step products out as `layout` (one of STEP_PRODUCTS)."""
        self.stop_processes()
        self.model = RNNLM(self.model.config, self.model.vocab_size, layout == "gate_major")

    def faster_step_products(self, steps: int, alone: bool = False) -> str:
        """The step-product layout for this layout's shards: batch-major (the default) unless the
        gate-major loops run clearly faster (by PRODUCTS_GAIN). Both are timed in every worker thread
        at once, as training runs them, the slowest worker counting, or, `alone`, on one shard in
        this thread, as a worker process runs it (threads' timings also hold their waits for the
        interpreter lock). Loops too quick to time reliably (under LOOP_TIMED_SECONDS) keep the
        default, so small models lay their work out alike every run."""
        seconds, streams = {}, self.rows.stop - self.rows.start
        shard = shard_slices(streams, self.workers)[0]
        for layout in STEP_PRODUCTS:
            gate_major = layout == "gate_major"
            if alone:
                seconds[layout] = loop_seconds(self.model, gate_major, shard.stop - shard.start, steps)
            else:
                times, _ = self.map(lambda rows: loop_seconds(self.model, gate_major, rows.stop - rows.start, steps),
                                    streams)
                seconds[layout] = max(times)
            if seconds["batch_major"] < LOOP_TIMED_SECONDS:
                break
        faster = seconds.get("gate_major", np.inf) < (1 - PRODUCTS_GAIN) * seconds["batch_major"]
        return "gate_major" if faster else "batch_major"

    def use_workers(self, workers: int):
        """Shard each batch across `workers` threads, each with single-threaded BLAS; or (1) one shard,
        BLAS with this process's cores. The BLAS thread count holds until `close`, between steps too:
        a multi-threaded BLAS call (a dot product in clipping) would leave BLAS threads spinning
        through the next step, on the cores the workers need."""
        self.stop_processes()
        if self.pool is not None:
            self.pool.shutdown()
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers) if workers > 1 else None
        if self.blas is not None:
            self.blas.set_threads(1 if workers > 1 else self.cores)

    def choose_layout(self, params, tokens: np.ndarray, targets: np.ndarray, state: State,
                      step_products: str = "auto") -> dict:
        """Settle what is automatic, on this batch (tokens, targets (T, b)):

        - `step_products` "auto": the layout of the per-step products whose loops run faster on
          each worker's shard (`faster_step_products`);
        - `threads: 0`: time a training step (forward and backward) with one worker per core,
          and, if a step takes long enough to time reliably, with those workers in forked
          processes, and with one worker and multi-threaded BLAS (each the best of two after a
          warm-up, each with its own step products); keep the processes if they are faster at
          all (they compute the same numbers), switch to one worker only if it is clearly faster
          (by SWITCH_GAIN, as its sums differ). Which wins depends on the CPU (where SIMD makes
          the gate arithmetic cheap, worker threads mostly wait on the interpreter lock) and on
          the sizes.

        A fixed thread count (resumed runs have one) still times threads against processes, which
        compute the same numbers. Under MPI rank 0 chooses, and the others take its choices from
        the config it shares; MPI processes keep their threads.
        -> {workers: seconds per step}, empty when nothing was timed."""
        if step_products != "auto":
            self.use_step_products(step_products)
        timings, products, forked = {}, {}, {}
        steps, streams = min(len(tokens), LOOP_STEPS), tokens.shape[1]
        for workers in (self.cores, 1) if self.automatic else (self.workers,):
            self.use_workers(workers)
            if step_products == "auto":
                self.use_step_products(self.faster_step_products(steps))
            products[workers] = self.step_products
            if not (self.automatic or self.can_fork(streams)):
                break
            timings[workers] = self.step_seconds(params, tokens, targets, state)
            if timings[workers] < TIMED_SECONDS:
                break
            if self.can_fork(streams):
                if step_products == "auto":
                    self.use_step_products(self.faster_step_products(steps, alone=True))
                self.start_processes(params, streams)
                in_processes = self.step_seconds(params, tokens, targets, state)
                forked[workers] = in_processes < timings[workers]  # the same numbers: the faster wins by any margin
                if forked[workers]:
                    timings[workers], products[workers] = in_processes, self.step_products
                self.stop_processes()
        faster = len(timings) == 2 and timings[1] < (1 - SWITCH_GAIN) * timings[self.cores]
        workers = 1 if faster else next(iter(products))
        self.use_workers(workers)
        self.use_step_products(products[workers])
        if forked.get(workers):
            self.start_processes(params, tokens.shape[1])
        return timings

    def step_seconds(self, params, tokens: np.ndarray, targets: np.ndarray, state: State) -> float:
        """Seconds a training step takes as laid out now: the best of two after a warm-up."""
        self.loss_and_grads(params, tokens, targets, state)
        return min(timed(self.loss_and_grads, params, tokens, targets, state) for _ in range(2))

    def can_fork(self, streams: int) -> bool:
        """Whether a training step of `streams` streams can run its shards in worker processes."""
        return self.may_fork and len(shard_slices(streams, self.workers)) > 1 and worker_processes.available()

    def start_processes(self, params, streams: int) -> bool:
        """Run the shards of a training step of `streams` streams in forked worker processes, one
        per worker thread, where that is possible (see `charrnn.worker_processes`)."""
        if not self.can_fork(streams):
            return False
        self.processes = worker_processes.WorkerProcesses(self.model, params, len(shard_slices(streams, self.workers)))
        self.forked = True
        return True

    def stop_processes(self):
        self.end_processes()
        self.forked = False

    def end_processes(self):
        if self.processes is not None:
            self.processes.close()
            self.processes = None

    def close(self):
        """Stop the workers and give BLAS its own thread count back."""
        self.end_processes()
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
        if self.blas is not None:
            self.blas.set_threads(self.blas_default)

    def map(self, function, batch: int, whole: int | None = None):
        """function(rows) over the shards of `batch` rows -> (results, each shard's share of `whole`
        rows, by default `batch`)."""
        whole = whole or batch
        slices = shard_slices(batch, self.workers)
        if self.pool is None or len(slices) == 1:
            return [function(slice(0, batch))], [batch / whole]
        errors = np.geterr()  # NumPy's error state is per thread: give workers the caller's

        def in_worker(rows):
            with np.errstate(**errors):
                return function(rows)

        results = list(self.pool.map(in_worker, slices))
        return results, [(s.stop - s.start) / whole for s in slices]

    def loss_and_grads(self, params, tokens: np.ndarray, targets: np.ndarray, state: State, masks=None):
        """tokens, targets (T, b) and state of this process's b streams, dropout masks (T, batch, D*H)
        of the whole batch -> this process's part of the mean loss and its gradients (the whole of
        them in a single process), and its streams' final state."""
        if masks is not None:
            masks = [m[:, self.rows] for m in masks]
        if self.processes is not None and len(shard_slices(tokens.shape[1], self.workers)) == self.processes.count:
            return self.loss_and_grads_in_processes(params, tokens, targets, state, masks)

        def shard(rows):
            shard_masks = [m[:, rows] for m in masks] if masks is not None else None
            loss, grads, final, _ = self.model.loss_and_grads(params, tokens[:, rows], targets[:, rows],
                                                              select(state, rows), shard_masks)
            share = (rows.stop - rows.start) / self.batch
            if share != 1.0:  # weighted here, in the worker, so that the workers do it side by side
                for gradient in grads.values():
                    gradient *= share
            return loss, grads, final

        results, weights = self.map(shard, tokens.shape[1], self.batch)
        if len(results) == 1:
            return results[0][0] * weights[0], results[0][1], results[0][2]
        loss = sum(w * r[0] for w, r in zip(weights, results))
        grads = results[0][1]
        for _, others, _ in results[1:]:
            for name in params:
                grads[name] += others[name]
        return loss, grads, concatenate([r[2] for r in results])

    def loss_and_grads_in_processes(self, params, tokens: np.ndarray, targets: np.ndarray, state: State, masks):
        """`loss_and_grads` with the shards in the worker processes: the same numbers."""
        slices = shard_slices(tokens.shape[1], self.workers)
        shares = [(rows.stop - rows.start) / self.batch for rows in slices]
        shards = [(tokens[:, rows], targets[:, rows], select(state, rows),
                   [m[:, rows] for m in masks] if masks is not None else None, share)
                  for rows, share in zip(slices, shares)]
        losses, grads, finals = self.processes.loss_and_grads(params, shards)
        return sum(share * loss for share, loss in zip(shares, losses)), grads, concatenate(finals)

    def combine(self, loss: float, grads: dict[str, np.ndarray], elapsed: float, request: str | None):
        """This process's part of the loss and gradients, its clock (seconds trained) and stop
        request -> the whole loss and gradients, rank 0's clock and any process's request, the
        same on every process. All of it travels in one flat buffer through one collective."""
        if self.comm.size == 1:
            return loss, grads, elapsed, request
        names = list(grads)
        sizes = [grads[name].size for name in names]
        extra = 2 + len(REQUESTS)  # the clock as two parts (exact in float32 too), then the requests
        if self.flat is None:
            self.flat = np.empty(sum(sizes) + 1 + extra, grads[names[0]].dtype)
        flat, offset = self.flat, 0
        views = {}
        for name, size in zip(names, sizes):
            views[name] = flat[offset: offset + size].reshape(grads[name].shape)
            views[name][...] = grads[name]
            offset += size
        clock = elapsed if self.comm.writes else 0.0
        high = float(flat.dtype.type(clock))
        flat[offset:] = [loss, high, clock - high, *(float(request == r) for r in REQUESTS)]
        self.comm.sum(flat)
        agreed = [r for r, flag in zip(REQUESTS, flat[offset + 3:]) if flag > 0]
        return float(flat[offset]), views, float(flat[offset + 1]) + float(flat[offset + 2]), (agreed or [None])[0]

    def layout(self) -> dict:
        """How the work is laid out, and the seconds spent combining it across processes."""
        blas = self.cores if self.workers == 1 and self.blas is not None else 1
        return {"layout": self.comm.describe(self.workers, blas, self.forked), "processes": self.comm.size,
                "threads": self.workers, "worker_processes": self.forked,
                "step_products": self.step_products,
                "collective_seconds": round(self.comm.seconds, 3)}

    def mean_nll(self, params, tokens: np.ndarray, targets: np.ndarray, state: State) -> float:
        """The mean NLL over the whole batch of this process's tokens, targets (T, b) and state."""
        nll, _ = self.token_nll(params, tokens, targets, state)
        total = self.comm.sum(np.array([nll.sum(dtype=np.float64), nll.size], np.float64))
        return float(total[0] / total[1])

    def score(self, params, tokens: np.ndarray, streams: int, chunk: int) -> Score:
        """As `charrnn.evaluate.score`, with the streams shared among the processes."""
        local = score(self, params, tokens, streams, chunk, self.comm.rows(streams))
        if self.comm.size == 1:
            return local
        total = self.comm.sum(np.array([local.nats, local.tokens], np.float64))
        return Score(float(total[0]), int(total[1]))

    def token_nll(self, params, tokens: np.ndarray, targets: np.ndarray, state: State):
        """As RNNLM.token_nll: (NLL (T, B), final state)."""
        results, _ = self.map(lambda rows: self.model.token_nll(params, tokens[:, rows], targets[:, rows],
                                                                select(state, rows)), tokens.shape[1])
        return np.concatenate([r[0] for r in results], axis=1), concatenate([r[1] for r in results])

    def initial_state(self, batch: int) -> State:
        return self.model.initial_state(batch)

    def own_initial_state(self) -> State:
        """Zeros for this process's streams of the global batch."""
        return self.model.initial_state(self.rows.stop - self.rows.start)
