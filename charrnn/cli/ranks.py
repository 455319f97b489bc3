"""`charrnn train` on several processes under MPI: rank 0 leads, the others follow.

Rank 0 runs the command as a single process would: it checks the settings, prepares the data,
claims the run directory, builds or resumes the training state, and owns every file and every
line of output. The other ranks wait for it (`follow`), then receive the resolved config and the
whole training state from it, memory-map the same prepared splits and train on their streams.

Failures end every rank, never leave some waiting:
- a failure while rank 0 sets up is shared with the others, which exit with its code in silence,
  so the user sees rank 0's one line;
- stops decided inside training (a stop request, bad numbers) are agreed by all ranks, and each
  leaves with the same code;
- anything raised on one rank during training (a crash, a second Ctrl-C, a full disk on rank 0)
  is said in one line by that rank, which then aborts the job (the MPI library may add a line
  of its own).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path

import click

from charrnn.cli.group import Failure, as_failure
from charrnn.training.distributed import MissingMPI, connect

ABORT_GRACE = 0.5  # seconds between a rank's error line and the abort, for the launcher to pass the line on


def connect_or_leave():
    """The communicator; under a launcher without mpi4py, rank 0 fails with the install hint and
    the other ranks exit in silence."""
    try:
        return connect()
    except MissingMPI as missing:
        if missing.rank == 0:
            raise
        sys.exit(1)


def exit_code(error: BaseException) -> int:
    failure = as_failure(error)
    if failure is not None:
        return failure.exit_code
    return error.code if isinstance(error, SystemExit) and isinstance(error.code, int) else 1


class Lead:
    """Rank 0's side of the start: `ready` hands the others what they need to train."""

    def __init__(self, comm):
        self.comm, self.shared = comm, False

    def ready(self, config, data_dir: Path, state):
        """Share the resolved config, the data directory and the whole training state."""
        self.shared = True
        if self.comm.size == 1:
            return
        self.comm.share({"config": config.to_dict(), "data": str(data_dir), "state": state_layout(state)})
        self.comm.share_arrays(state_arrays(state))


@contextlib.contextmanager
def leading(comm):
    """Rank 0's set-up: if it ends before `ready` (a failure, or a command that does not train),
    the others are told to exit with its code."""
    lead = Lead(comm)
    try:
        yield lead
    except BaseException as error:
        if not lead.shared and comm.size > 1:
            comm.share({"code": exit_code(error) or 1})
        raise
    if not lead.shared and comm.size > 1:
        comm.share({"code": 0})


@contextlib.contextmanager
def aborting(comm):
    """Within the block, a failure on this rank is said in one line and ends the whole job."""
    try:
        yield
    except BaseException as error:
        if comm.size == 1 or (isinstance(error, SystemExit) and not error.code):
            raise
        if os.environ.get("CHARRNN_TRACEBACK"):
            traceback.print_exc()
        failure = as_failure(error) or Failure(f"internal error ({type(error).__name__}: {error})")
        where = "" if comm.rank == 0 else f"rank {comm.rank} of {comm.size}: "
        click.echo(f"Error: {where}{failure.format_message()}", err=True)
        sys.stderr.flush()
        time.sleep(ABORT_GRACE)
        comm.abort(failure.exit_code)


def state_layout(state) -> dict:
    """The plain-data part of a training state, and how its arrays are grouped."""
    return {"params": list(state.params), "optimizer": list(state.optimizer),
            "arity": len(state.hidden.layers[0]), "layers": len(state.hidden.layers),
            "rng": state.rng.bit_generator.state, "progress": asdict(state.progress),
            "average": state.average is not None}


def state_arrays(state) -> list:
    return [*state.params.values(), *state.optimizer.values(), *(state.average or {}).values(),
            *(a for layer in state.hidden.layers for a in layer), state.hidden.history]


def received_state(layout: dict, arrays: list):
    """The training state rank 0 shared, from its layout and arrays."""
    import numpy as np

    from charrnn.nn.model import State
    from charrnn.training.loop import Progress, TrainingState

    params = dict(zip(layout["params"], arrays))
    arrays = arrays[len(params):]
    optimizer = dict(zip(layout["optimizer"], arrays))
    arrays = arrays[len(optimizer):]
    average = dict(zip(layout["params"], arrays)) if layout["average"] else None
    arrays = arrays[len(average or {}):]
    arity = layout["arity"]
    layers = [tuple(arrays[i * arity:(i + 1) * arity]) for i in range(layout["layers"])]
    rng = np.random.default_rng()
    rng.bit_generator.state = layout["rng"]
    return TrainingState(params, optimizer, State(layers, arrays[-1]), rng, Progress(**layout["progress"]), average)


def own_streams(state, comm, batch: int):
    """The state with the hidden state of this rank's streams only."""
    return replace(state, hidden=state.hidden.rows(comm.rows(batch)))


def saving_whole(comm, save, batch: int):
    """The trainer's save hook: the hidden state of every stream is gathered (on every rank: it is
    a collective), and rank 0 writes."""
    from charrnn.nn.model import State

    def save_whole(state, names):
        hidden = State([tuple(comm.gather_rows(a, batch) for a in layer) for layer in state.hidden.layers],
                       comm.gather_rows(state.hidden.history, batch, axis=1))
        if comm.writes:
            save(replace(state, hidden=hidden), names)

    return save_whole


def follow(comm, second_message: str):
    """A rank other than 0: wait for rank 0's set-up, then train on this rank's streams, silently."""
    from charrnn import signals
    from charrnn.data.splits import Prepared
    from charrnn.nn.model import RNNLM
    from charrnn.runs.schema import config_of
    from charrnn.training.loop import Trainer

    setup = comm.share()
    if "config" not in setup:
        sys.exit(setup["code"])
    with aborting(comm):
        config = config_of({"config": setup["config"]})
        data = Prepared.open(Path(setup["data"]))
        model = RNNLM(config.model, data.vocab.size)
        batch = config.train.batch_size
        trainer = Trainer(config, model, data.splits["train"], data.splits["val"], report=lambda kind, record: None,
                          save=saving_whole(comm, None, batch), comm=comm)
        state = own_streams(received_state(setup["state"], comm.share_arrays([])), comm, batch)
    with signals.requested(second_message) as stop, aborting(comm):
        reason = trainer.run(state, should_stop=lambda: signals.stop_name(stop[0]) if stop else None)
    sys.exit({"non_finite": 1, "diverged": 1, "interrupted": 130, "terminated": 143}.get(reason, 0))
