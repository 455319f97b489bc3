"""Shard workers in forked processes: a training step's forward and backward without sharing
the interpreter lock.

Worker threads share one interpreter, and between NumPy calls each waits for the others to
release its lock: with a few hundred small NumPy calls per time step, that cost two cores a
twentieth to a fifth of an LSTM step (H = 512 to 128). Forked processes do not wait on each other.
`charrnn.training.parallel` times them against the threads and keeps whichever is faster.

The parameters reach the workers, and each worker's weighted gradients come back, through
anonymous shared memory mapped before the fork (nothing is named, so nothing can be left
behind); a shard's tokens, state and regularisation (its dropout masks) go out, and its loss and final state come
back, through a pipe. The parent sums the gradients in the order the threads sum theirs, so the
results are the same to the bit. Workers ignore stop signals (the parent decides, see
`charrnn.signals`), and exit when the parent closes them, or ends, or if it is killed.

Left out: Windows and macOS, where fork is missing or unsafe with the system BLAS (sharding
needs OpenBLAS found through /proc anyway), and MPI, whose libraries do not survive a fork.
"""

from __future__ import annotations

import atexit
import contextlib
import mmap
import multiprocessing
import multiprocessing.util  # registers its exit hook on import: ours, registered later, runs first
import signal
import threading
import warnings
import weakref

import numpy as np

from charrnn.errors import UserError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
JOIN_SECONDS = 5.0  # how long a closed worker may take to finish its step and exit
ALIGN = 64  # bytes: each shared array starts on a cache line


def available() -> bool:
    """Whether workers can be forked here: a POSIX fork, asked for from the main thread."""
    return "fork" in multiprocessing.get_all_start_methods() and threading.current_thread() is threading.main_thread()


def shared_arrays(like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Empty arrays with `like`'s names, shapes and dtypes, in one anonymous shared mapping that
    forked children share with this process."""
    offsets, total = [], 0
    for array in like.values():
        offsets.append(total)
        total += -(-array.nbytes // ALIGN) * ALIGN
    buffer = mmap.mmap(-1, max(total, ALIGN))
    return {name: np.frombuffer(buffer, array.dtype, array.size, offset).reshape(array.shape)
            for (name, array), offset in zip(like.items(), offsets)}


def serve(model, params: dict, grads: dict, connection, inherited: list):
    """A worker's life: for each shard request, `model.loss_and_grads` on the shared parameters,
    its gradients weighted by the shard's share into the shared `grads`; reply with the loss and
    the final state, or with the exception raised. Ends on None, or when the parent is gone (its
    end of the pipe closes: the copies of the parent's ends this fork `inherited` are closed first)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    for end in inherited:
        end.close()
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        tokens, targets, state, reg, share, errors = request
        try:
            with np.errstate(**errors):
                loss, shard_grads, final, _ = model.loss_and_grads(params, tokens, targets, state, reg)
                for name, gradient in shard_grads.items():
                    np.multiply(gradient, share, out=grads[name])
            reply = ("done", loss, final)
        except Exception as error:  # handed to the parent, which raises it
            reply = ("failed", error)
        try:
            connection.send(reply)
        except Exception as error:  # an exception that does not pickle
            connection.send(("failed", RuntimeError(f"a worker process failed: {error!r}")))


def end(processes: list, connections: list, in_step: list):
    """Stop the workers: at once if a step was cut short (`in_step[0]`), else once they have read
    the request to end; any still alive after JOIN_SECONDS are killed."""
    for connection in connections if not in_step[0] else ():
        with contextlib.suppress(OSError):
            connection.send(None)
    for process in processes:
        process.join(0 if in_step[0] else JOIN_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()
    for connection in connections:
        connection.close()
    processes.clear()
    connections.clear()


class WorkerProcesses:
    """`count` (at least 2) forked processes, each computing `model.loss_and_grads` for one shard of
    a batch, with parameters shaped like `params`. `close` ends them; so does losing the object,
    or the interpreter's exit."""

    def __init__(self, model, params: dict[str, np.ndarray], count: int):
        self.count = count
        self.params = shared_arrays(params)
        self.grads = [shared_arrays(params) for _ in range(count)]
        self.connections, self.processes, self.in_step = [], [], [False]
        self.finalizer = weakref.finalize(self, end, self.processes, self.connections, self.in_step)
        # at exit, before multiprocessing's own hook, which would send the workers a SIGTERM they
        # ignore and wait for them for ever
        atexit.register(self.finalizer)
        context = multiprocessing.get_context("fork")
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # until the child ignores them
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns of forking with threads running (a progress bar's monitor): the
                # child runs only NumPy on its own arrays and takes none of their locks.
                warnings.simplefilter("ignore", DeprecationWarning)
                for grads in self.grads:
                    here, there = context.Pipe()
                    process = context.Process(target=serve, daemon=True,
                                              args=(model, self.params, grads, there, [here, *self.connections]))
                    process.start()
                    there.close()
                    self.connections.append(here)
                    self.processes.append(process)
        except BaseException:
            self.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def close(self):
        """End the workers (see `end`); later calls do nothing."""
        self.finalizer()
        atexit.unregister(self.finalizer)

    def loss_and_grads(self, params: dict[str, np.ndarray], shards: list[tuple]):
        """params, and one (tokens (T, b), targets (T, b), state, regularisation or None, share) per worker ->
        ([loss of each shard], the shares' weighted gradients summed, [final state of each shard])."""
        for name, value in params.items():
            np.copyto(self.params[name], value)
        errors = np.geterr()  # the caller's floating-point error handling, in every worker
        self.in_step[0] = True
        for worker, shard in enumerate(shards):
            self.talk(worker, lambda connection: connection.send((*shard, errors)))
        replies = [self.talk(worker, lambda connection: connection.recv()) for worker in range(len(shards))]
        self.in_step[0] = False
        for reply in replies:
            if reply[0] == "failed":
                raise reply[1]
        first, second, *others = self.grads[:len(shards)]
        grads = {name: first[name] + second[name] for name in params}  # as the threads add theirs
        for other in others:
            for name, gradient in grads.items():
                gradient += other[name]
        return [reply[1] for reply in replies], grads, [reply[2] for reply in replies]

    def talk(self, worker: int, exchange):
        """exchange(the worker's connection), or, if the worker has died (the kernel's out-of-memory
        killer, say), a one-line error."""
        try:
            return exchange(self.connections[worker])
        except (EOFError, OSError):
            self.processes[worker].join(1.0)
            code = self.processes[worker].exitcode
            how = f"was killed by signal {-code}" if code is not None and code < 0 else f"ended (exit code {code})"
            raise UserError(f"worker process {worker} {how} in the middle of a training step (out of memory?); "
                            f"the run's checkpoints are as last saved: resume with --resume") from None
