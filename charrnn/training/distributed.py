"""Training across processes with MPI: which streams this process owns, and the collectives that
combine the processes' work.

`train.batch_size` is the global batch. Process r of N owns a contiguous block of its streams
(`rows`); inside a process the block is cut again across worker threads (`charrnn.training.parallel`).
The trainer sees one communicator, handed to its data-parallel seam:

- `Solo` is the single process: every stream is its own, and every collective is the identity,
  so training without MPI runs exactly the code it always ran and imports nothing new.
- `World` wraps mpi4py's COMM_WORLD. Each step's gradients, loss, the clock and any stop request
  travel in one flat buffer through one `Allreduce`; checkpoints gather the hidden state of every
  stream (`gather_rows`), so a run resumes on any number of processes.

mpi4py is imported only when an MPI launcher (mpiexec, mpirun, srun) started this process with
more than one process in the job, which `launched_size` reads from the launcher's environment.
Rank 0 owns every file and every line of output; the others follow it.
"""

from __future__ import annotations

import os
import time

import numpy as np

from charrnn.errors import UserError
from charrnn.extras import install_command

SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS", "MPI_LOCALNRANKS")
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")
REQUESTS = ("interrupted", "terminated")  # the stop requests a step can carry


def launched_size(environ=os.environ) -> int:
    """The number of processes an MPI launcher started this one with (1 when there was none)."""
    sizes = [int(environ[name]) for name in SIZE_VARIABLES if environ.get(name, "").isdigit()]
    return max(sizes, default=1)


def launched_rank(environ=os.environ) -> int:
    """This process's rank as the launcher's environment gives it (0 when there is none)."""
    ranks = [int(environ[name]) for name in RANK_VARIABLES if environ.get(name, "").isdigit()]
    return ranks[0] if ranks else 0


def split_rows(batch: int, parts: int) -> list[slice]:
    """`parts` contiguous, nearly equal ranges covering range(batch)."""
    bounds = np.linspace(0, batch, parts + 1).round().astype(int)
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def describe_threads(workers: int, blas: int, forked: bool = False) -> str:
    """How one process spreads its work: '2 worker threads x 1 BLAS thread', '1 worker x 2 BLAS threads',
    or, with its training steps' shards in forked processes, '2 worker processes x 1 BLAS thread'."""
    if workers > 1:
        return f"{workers} worker {'processes' if forked else 'threads'} x 1 BLAS thread"
    return f"1 worker x {blas} BLAS thread{'s' if blas > 1 else ''}"


def connect(environ=os.environ):
    """The communicator for this process: `World` under an MPI launcher with several processes,
    else `Solo`. Under a launcher without mpi4py, rank 0 says how to install it."""
    size = launched_size(environ)
    if size <= 1:
        return Solo()
    try:
        from mpi4py import MPI
    except ImportError:
        raise MissingMPI(size, launched_rank(environ)) from None
    return Solo() if MPI.COMM_WORLD.Get_size() == 1 else World(MPI)


class MissingMPI(UserError):
    """Started by an MPI launcher, but mpi4py is not installed."""

    def __init__(self, size: int, rank: int):
        self.rank = rank
        super().__init__(f"started by an MPI launcher with {size} processes, but mpi4py is not installed; "
                         f"install it with: {install_command('mpi')}")


class Solo:
    """One process: it owns every stream, and combining with the others changes nothing."""

    rank, size, local_size, writes = 0, 1, 1, True
    seconds = 0.0  # time spent in collectives

    def rows(self, batch: int) -> slice:
        return slice(0, batch)

    def sum(self, buffer: np.ndarray) -> np.ndarray:
        return buffer

    def gather_rows(self, local: np.ndarray, batch: int, axis: int = 0) -> np.ndarray:
        return local

    def describe(self, workers: int, blas: int, forked: bool = False) -> str:
        return describe_threads(workers, blas, forked)


class World:
    """All the processes an MPI launcher started, through mpi4py's COMM_WORLD."""

    writes = property(lambda self: self.rank == 0)

    def __init__(self, mpi):
        self.mpi, self.comm = mpi, mpi.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.local_size = self.comm.Split_type(mpi.COMM_TYPE_SHARED).Get_size()  # processes on this machine
        self.seconds = 0.0

    def rows(self, batch: int) -> slice:
        """This process's block of `batch` streams."""
        return split_rows(batch, self.size)[self.rank]

    def sum(self, buffer: np.ndarray) -> np.ndarray:
        """buffer (n,) contiguous -> the element-wise sum over all processes, in place."""
        begin = time.perf_counter()
        self.comm.Allreduce(self.mpi.IN_PLACE, buffer, op=self.mpi.SUM)
        self.seconds += time.perf_counter() - begin
        return buffer

    def gather_rows(self, local: np.ndarray, batch: int, axis: int = 0) -> np.ndarray:
        """This process's rows (along `axis`) of an array over `batch` streams -> the whole array,
        on every process."""
        moved = np.ascontiguousarray(np.moveaxis(local, axis, 0))
        width = int(np.prod(moved.shape[1:], dtype=np.int64))
        whole = np.empty((batch, *moved.shape[1:]), moved.dtype)
        counts = [(s.stop - s.start) * width for s in split_rows(batch, self.size)]
        self.comm.Allgatherv(moved, [whole, counts])
        return np.moveaxis(whole, 0, axis)

    def share(self, value=None):
        """Rank 0's `value` (plain data: numbers, strings, lists, dicts), on every process."""
        return self.comm.bcast(value, root=0)

    def share_arrays(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Rank 0's arrays on every process (the others pass anything; shapes travel first)."""
        layout = self.share([(a.shape, a.dtype.str) for a in arrays] if self.rank == 0 else None)
        received = arrays if self.rank == 0 else [np.empty(shape, dtype) for shape, dtype in layout]
        for array in received:
            self.comm.Bcast(np.ascontiguousarray(array) if self.rank == 0 else array, root=0)
        return received

    def abort(self, code: int):
        """End every process of the job now (after a failure on this one)."""
        self.comm.Abort(code)

    def describe(self, workers: int, blas: int, forked: bool = False) -> str:
        return f"{self.size} ranks x {describe_threads(workers, blas, forked)}"
