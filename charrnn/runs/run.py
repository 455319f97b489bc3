"""A run directory: where `train` keeps its config, vocabulary, checkpoints and metrics.

    RUN_DIR/config.yaml     the resolved configuration
    RUN_DIR/vocab.json      the vocabulary the model was trained on
    RUN_DIR/last.npz        the latest state (what --resume continues)
    RUN_DIR/best.npz        the parameters with the best validation loss
    RUN_DIR/step-N.npz      periodic checkpoints (train.keep_checkpoints of them)
    RUN_DIR/metrics.jsonl   one JSON object per log line
    RUN_DIR/summary.json    written at the end
    RUN_DIR/data/           the corpus prepared on the fly when SOURCE is not a prepared directory

One `charrnn train` at a time writes a run directory: `claim` holds its lock (see
`charrnn.files.lock`) for the whole command, sweeps what killed writers left when it starts and
any temporary file of its own when it ends (however it ends), and, if the directory is new and
the command fails before training starts, removes it again, so a refused run leaves nothing
behind. `load_model` reads a trained model back, for every command that uses one.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from charrnn.config import Config
from charrnn.data.vocab import Vocabulary
from charrnn.errors import UserError
from charrnn.files.atomic import sweep_temporaries, write_atomic
from charrnn.files.lock import DirectoryLock
from charrnn.files.outputs import check_output_directory
from charrnn.nn.ensemble import Ensemble
from charrnn.nn.model import RNNLM, State
from charrnn.runs import checkpoint
from charrnn.runs.ensemble import is_ensemble, member_directories, member_name
from charrnn.runs.schema import checkpoint_layout, config_of, progress_of, vocabulary_of
from charrnn.training.loop import Progress, TrainingState


def read_checkpoint(path: Path) -> checkpoint.Checkpoint:
    """A checkpoint file, verified against the layout its own metadata implies."""
    return checkpoint.load(path, checkpoint_layout)


class Claim:
    """A claimed run directory: whether it is `fresh` (new), and whether to `keep` it if the command
    fails; `started()` marks the point after which nothing is removed."""

    def __init__(self, path: Path):
        self.fresh, self.keep = not Path(path).exists(), False

    def started(self):
        self.keep = True


@contextlib.contextmanager
def claim(out: Path):
    """Lock `out` for this command and sweep leftovers; a new `out` is removed if the command
    fails before `started()`."""
    out = Path(out)
    check_output_directory(out, "--out", "run")
    with DirectoryLock(out, "--out"):
        held = Claim(out)
        if not held.fresh:
            sweep_temporaries(out)
        try:
            yield held
        except BaseException:
            if held.fresh and not held.keep:
                shutil.rmtree(out, ignore_errors=True)
            raise
        finally:
            if out.is_dir():
                sweep_temporaries(out)


def checkpoint_of(state: TrainingState, config: Config, vocab: Vocabulary, data_dir: Path) -> checkpoint.Checkpoint:
    hidden = [array for layer in state.hidden.layers for array in layer] + [state.hidden.history]
    meta = {"config": config.to_dict(), "vocab": json.loads(vocab.to_json()), "data": str(data_dir.resolve()),
            "progress": asdict(state.progress),
            "rng": state.rng.bit_generator.state, "hidden_arity": len(state.hidden.layers[0])}
    return checkpoint.Checkpoint(state.params, state.optimizer, hidden, meta, state.average)


def state_of(saved: checkpoint.Checkpoint) -> TrainingState:
    """Rebuild the exact training state a checkpoint holds."""
    arity = saved.meta["hidden_arity"]
    arrays = saved.hidden[:-1]
    layers = [tuple(arrays[i:i + arity]) for i in range(0, len(arrays), arity)]
    rng = np.random.default_rng()
    rng.bit_generator.state = saved.meta["rng"]
    return TrainingState(saved.params, saved.optimizer, State(layers, saved.hidden[-1]), rng,
                         progress_of(saved.meta), saved.average)


class RunDirectory:
    """Writes a run's files; `save` is the trainer's checkpoint hook."""

    def __init__(self, path: Path, config: Config, vocab: Vocabulary, data_dir: Path):
        self.path, self.config, self.vocab, self.data_dir = Path(path), config, vocab, data_dir
        self.saved_step: int | None = None  # the step of the newest checkpoint on disk

    def start(self, resumed_step: int | None):
        """A fresh run (None) starts clean: everything an earlier run left here goes (checkpoints,
        metrics, exports, pages, an old data/), but for the data this run reads from RUN_DIR/data.
        (`claim` has made sure this is a run directory, not a folder of the user's own files.)
        A resumed one drops the metrics of steps after the checkpoint, which it is about to replay."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.saved_step = resumed_step
        if resumed_step is None:
            self.clear()
            write_atomic(self.path / "metrics.jsonl", "")
        else:
            kept = [line for line in self.metrics_lines() if json.loads(line).get("step", 0) <= resumed_step]
            write_atomic(self.path / "metrics.jsonl", "".join(line + "\n" for line in kept))
        write_atomic(self.path / "config.yaml", self.config.to_yaml())
        write_atomic(self.path / "vocab.json", self.vocab.to_json())

    def clear(self):
        """Make the directory, removing all an earlier run (or ensemble) left in it but the data
        this run reads from RUN_DIR/data."""
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.iterdir():
            if stale.name == "data" and stale.resolve() == Path(self.data_dir).resolve():
                continue
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()

    def metrics_lines(self) -> list[str]:
        try:
            lines = (self.path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        valid = []
        for line in lines:  # a line cut short by a kill is dropped
            try:
                json.loads(line)
            except ValueError:
                continue
            valid.append(line)
        return valid

    def save(self, state: TrainingState, names: tuple[str, ...]):
        saved = checkpoint_of(state, self.config, self.vocab, self.data_dir)
        for name in names:
            if name.startswith("step-") and not self.config.train.keep_checkpoints:
                continue
            checkpoint.save(self.path / f"{name}.npz", saved)
        self.saved_step = state.progress.step
        self.prune_periodic()

    def prune_periodic(self):
        periodic = sorted(self.path.glob("step-*.npz"), key=lambda p: int(p.stem[5:]))
        for old in periodic[: max(0, len(periodic) - self.config.train.keep_checkpoints)]:
            old.unlink()

    def append_metrics(self, record: dict):
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def write_summary(self, reason: str, progress: Progress, layout: dict):
        """summary.json: why and where training stopped, and how the work was laid out (`layout`)."""
        summary = {"reason": reason, "steps": progress.step, "epochs": progress.epoch, "tokens": progress.tokens,
                   "seconds": round(progress.elapsed, 1), "best_val_loss": progress.best_val,
                   "best_step": progress.best_step, "last_val_loss": progress.last_val, **layout}
        if self.config.train.init_from is not None:
            summary["init_from"] = {"path": self.config.train.init_from, "sha256": self.config.train.init_from_sha256}
        write_atomic(self.path / "summary.json", json.dumps(summary, indent=1))


def find_checkpoint(target: Path, use: str | None = None) -> Path:
    """A run directory's best.npz (else last.npz), or a checkpoint file as given. An ensemble's
    directory is refused with a word on what to give instead, naming the command's `use` of it."""
    target = Path(target)
    if is_ensemble(target):
        raise UserError(f"{target} is an ensemble of {len(member_directories(target))} networks, and "
                        f"{use or 'this command'} takes one; give one of them, e.g. {target / member_name(1)}")
    if target.is_dir():
        for name in ("best.npz", "last.npz"):
            if (target / name).is_file():
                return target / name
        raise UserError(f"{target} holds no checkpoint (best.npz or last.npz); train first with `charrnn train`")
    if not target.exists():
        raise UserError(f"{target}: no such run directory or checkpoint file")
    return target


def load_model(target: Path, use: str | None = None) -> tuple[RNNLM, dict[str, np.ndarray], Vocabulary, dict]:
    """(model, params, vocabulary, meta) from a run directory or checkpoint file; the params are
    the averaged weights where training averaged them (`Checkpoint.model_params`). An ensemble's
    directory is refused, naming `use` (see `load_models`)."""
    saved = read_checkpoint(find_checkpoint(target, use))
    config = config_of(saved.meta)
    vocab = vocabulary_of(saved.meta)
    return RNNLM(config.model, vocab.size), saved.model_params, vocab, saved.meta


def load_models(target: Path) -> tuple[RNNLM | Ensemble, dict | list[dict], Vocabulary, dict]:
    """`load_model`, or for an ensemble's directory (`charrnn.runs.ensemble`) an `Ensemble` of its
    members, their params as a list, and the first member's meta with every member's under "members"
    (their settings may differ: `train.member_settings`); every member must have saved a checkpoint
    over the same vocabulary."""
    if not is_ensemble(target):
        return load_model(target)
    models, params, metas = [], [], []
    for member in member_directories(target):
        if not (member / "best.npz").is_file() and not (member / "last.npz").is_file():
            raise UserError(f"{member} has no checkpoint yet; finish training the ensemble: "
                            f"charrnn train --out {target} --resume")
        model, member_params, vocab, meta = load_model(member)
        if metas and meta["vocab"] != metas[0]["vocab"]:
            raise UserError(f"{member} has another vocabulary than {target / member_name(1)}; "
                            f"the members of an ensemble are trained on one corpus")
        models.append(model)
        params.append(member_params)
        metas.append(meta)
    return Ensemble(models), params, vocabulary_of(metas[0]), {**metas[0], "members": metas}
