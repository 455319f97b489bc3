"""Data parallelism over threads: the batch is cut into shards, one per worker thread.

NumPy releases the GIL in BLAS calls and ufuncs, but one NumPy thread can only parallelise
the BLAS part; the element-wise gate arithmetic, as heavy as the matrix products on a small
CPU, would run on one core. Each worker therefore runs the whole forward and backward for its
shard with single-threaded BLAS (set for the duration of the call, see `charrnn.compute.blas`), and
the shard gradients are summed, weighted by their share of the tokens. Shards are fixed by the
batch size and thread count, so results are deterministic for a given `threads` setting. Where
the BLAS thread count cannot be set, one worker is used and BLAS keeps its own threads.

A training step's shards can also run in forked worker processes (`charrnn.training.worker_processes`),
which do not share the interpreter's lock and compute the same numbers; validation and scoring
always run in the threads. Which layout a run uses, and how each time step's product with W_hh
is laid out (see `charrnn.nn.cells`), is chosen by timing them (`charrnn.training.layout`).

Under MPI (`charrnn.training.distributed`) this process owns only a block of the batch's streams: the
threads share that block, each shard weighted by its share of the whole batch, and `combine`
sums the processes' parts with one collective.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from charrnn import signals
from charrnn.compute.blas import OpenBLAS
from charrnn.nn.model import RNNLM, State, Stepper
from charrnn.nn.regularisers import Regularisation, mask_weight_grads, masked_weights
from charrnn.nn.scoring import Score, score
from charrnn.training import worker_processes
from charrnn.training.distributed import REQUESTS, Solo


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


class ShardedModel:
    """`loss_and_grads` and `token_nll` of an RNNLM over this process's streams of a global batch
    of `batch`, computed in worker threads (training steps perhaps in worker processes, see
    `charrnn.training.layout`); `combine` adds the other processes' parts."""

    def __init__(self, model: RNNLM, threads: int, batch: int, comm=None, step_products: str = "auto",
                 may_fork: bool = True):
        self.model, self.batch, self.comm = model, batch, comm or Solo()
        self.processes: worker_processes.WorkerProcesses | None = None  # see `charrnn.training.layout`
        self.forked = False  # whether training steps run in worker processes (still said after `close`)
        self.may_fork = may_fork and self.comm.size == 1
        if step_products != "auto":  # else batch-major until `charrnn.training.layout.choose_layout`
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
        """The layout of the model's per-step products, one of `charrnn.nn.products.LAYOUTS`."""
        return self.model.cell.products.layout

    def use_step_products(self, layout: str):
        """Lay the model's per-step products out as `layout` (one of `charrnn.nn.products.LAYOUTS`)."""
        self.stop_processes()
        self.model = RNNLM(self.model.config, self.model.vocab_size, layout)

    def use_workers(self, workers: int):
        """Shard each batch across `workers` threads, each with single-threaded BLAS; or (1) one shard,
        BLAS with this process's cores. The BLAS thread count holds until `close`, between steps too:
        a multi-threaded BLAS call (a dot product in clipping) would leave BLAS threads spinning
        through the next step, on the cores the workers need."""
        self.stop_processes()
        if self.pool is not None:
            with signals.deferred():
                self.pool.shutdown()
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers, initializer=signals.block_in_this_thread) if workers > 1 else None
        if self.blas is not None:
            self.blas.set_threads(1 if workers > 1 else self.cores)

    def can_fork(self, streams: int) -> bool:
        """Whether a training step of `streams` streams can run its shards in worker processes."""
        return self.may_fork and len(shard_slices(streams, self.workers)) > 1 and worker_processes.available()

    def start_processes(self, params, streams: int) -> bool:
        """Run the shards of a training step of `streams` streams in forked worker processes, one
        per worker thread, where that is possible (see `charrnn.training.worker_processes`)."""
        if not self.can_fork(streams):
            return False
        self.end_processes()
        self.processes = worker_processes.WorkerProcesses(self.model, params, len(shard_slices(streams, self.workers)))
        self.forked = True
        return True

    def stop_processes(self):
        """Go back to worker threads for training steps."""
        self.end_processes()
        self.forked = False

    def end_processes(self):
        """End the worker processes, if any, leaving `forked` to say what the steps ran in."""
        if self.processes is not None:
            self.processes.close()
            self.processes = None

    def close(self):
        """Stop the workers and give BLAS its own thread count back."""
        self.end_processes()
        if self.pool is not None:
            with signals.deferred():  # joining the workers must not be cut short either
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

        with signals.deferred():  # a stop signal lands after the shards, never inside the pool's own code
            results = list(self.pool.map(in_worker, slices))
        return results, [(s.stop - s.start) / whole for s in slices]

    def loss_and_grads(self, params, tokens: np.ndarray, targets: np.ndarray, state: State,
                       reg: Regularisation | None = None):
        """tokens, targets (T, b) and state of this process's b streams, the batch's regularisation
        (masks over the whole batch, see `charrnn.nn.regularisers`) -> this process's part of the mean
        loss and its gradients (the whole of them in a single process), and its streams' final state.
        Weight masks are applied once here, for every shard, and their gradients masked once after."""
        encoding, directions = self.model.config.encoding, self.model.directions
        weights = masked_weights(params, reg, encoding, directions)
        own = reg.rows(self.rows).without_weight_masks() if reg is not None else None
        if self.processes is not None and len(shard_slices(tokens.shape[1], self.workers)) == self.processes.count:
            loss, grads, final = self.loss_and_grads_in_processes(weights, tokens, targets, state, own)
        else:
            loss, grads, final = self.loss_and_grads_in_threads(weights, tokens, targets, state, own)
        return loss, mask_weight_grads(grads, reg, encoding, directions), final

    def loss_and_grads_in_threads(self, params, tokens: np.ndarray, targets: np.ndarray, state: State, reg):
        def shard(rows):
            loss, grads, final, _ = self.model.loss_and_grads(params, tokens[:, rows], targets[:, rows],
                                                              state.rows(rows), reg.rows(rows) if reg else None)
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
        return loss, grads, State.joined([r[2] for r in results])

    def loss_and_grads_in_processes(self, params, tokens: np.ndarray, targets: np.ndarray, state: State, reg):
        """`loss_and_grads` with the shards in the worker processes: the same numbers."""
        slices = shard_slices(tokens.shape[1], self.workers)
        shares = [(rows.stop - rows.start) / self.batch for rows in slices]
        shards = [(tokens[:, rows], targets[:, rows], state.rows(rows), reg.rows(rows) if reg else None, share)
                  for rows, share in zip(slices, shares)]
        losses, grads, finals = self.processes.loss_and_grads(params, shards)
        return sum(share * loss for share, loss in zip(shares, losses)), grads, State.joined(finals)

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
        """As `charrnn.nn.scoring.score`, with the streams shared among the processes."""
        local = score(self, params, tokens, streams, chunk, self.comm.rows(streams))
        if self.comm.size == 1:
            return local
        total = self.comm.sum(np.array([local.nats, local.tokens], np.float64))
        return Score(float(total[0]), int(total[1]))

    def token_nll(self, params, tokens: np.ndarray, targets: np.ndarray, state: State):
        """As RNNLM.token_nll: (NLL (T, B), final state)."""
        results, _ = self.map(lambda rows: self.model.token_nll(params, tokens[:, rows], targets[:, rows],
                                                                state.rows(rows)), tokens.shape[1])
        return np.concatenate([r[0] for r in results], axis=1), State.joined([r[1] for r in results])

    def stepper(self, params, batch: int) -> ShardedStepper:
        """For scoring `batch` streams read on chunk after chunk: see `ShardedStepper`."""
        return ShardedStepper(self, params, batch)

    def initial_state(self, batch: int) -> State:
        return self.model.initial_state(batch)

    def own_initial_state(self) -> State:
        """Zeros for this process's streams of the global batch."""
        return self.model.initial_state(self.rows.stop - self.rows.start)


class ShardedStepper:
    """`nll(tokens, targets)` of a `charrnn.nn.model.Stepper`, with the streams shared among the worker
    threads: each reads its shard of them on a Stepper of its own, made on its first read, so
    weights are prepared and buffers allocated once per shard, not per chunk."""

    def __init__(self, sharded: ShardedModel, params, batch: int):
        self.sharded, self.params, self.batch = sharded, params, batch
        self.steppers: dict[tuple[int, int], Stepper] = {}

    def nll(self, tokens: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """tokens, targets (T, B) -> the NLL in nats of every target (T, B)."""
        def shard(rows):
            key = (rows.start, rows.stop)
            if key not in self.steppers:
                self.steppers[key] = self.sharded.model.stepper(self.params, rows.stop - rows.start)
            return self.steppers[key].nll(tokens[:, rows], targets[:, rows])

        results, _ = self.sharded.map(shard, self.batch)
        return np.concatenate(results, axis=1)
