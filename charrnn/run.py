"""A run directory: where `train` keeps its config, vocabulary, checkpoints and metrics.

    RUN_DIR/config.yaml     the resolved configuration
    RUN_DIR/vocab.json      the vocabulary the model was trained on
    RUN_DIR/last.npz        the latest state (what --resume continues)
    RUN_DIR/best.npz        the parameters with the best validation loss
    RUN_DIR/step-N.npz      periodic checkpoints (train.keep_checkpoints of them)
    RUN_DIR/metrics.jsonl   one JSON object per log line
    RUN_DIR/summary.json    written at the end
    RUN_DIR/data/           the corpus prepared on the fly when SOURCE is not a prepared directory
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from charrnn import checkpoint
from charrnn.config import Config, resolve
from charrnn.corpus import resolve_sources
from charrnn.data import Prepared
from charrnn.errors import UserError
from charrnn.model import RNNLM, State
from charrnn.prepare import PrepareOptions, prepare
from charrnn.train import Progress, TrainingState
from charrnn.vocab import Vocabulary


def open_source(source: str, run_dir: Path, on_bytes=None) -> Prepared:
    """A prepared directory as it is; text files, folders and built-in corpora are prepared into
    RUN_DIR/data (reused while the sources' sha256 is unchanged)."""
    path = Path(source)
    if path.is_dir() and (path / "meta.json").exists():
        return Prepared.open(path)
    prepare(resolve_sources([source]), run_dir / "data", PrepareOptions(), force=True, on_bytes=on_bytes)
    return Prepared.open(run_dir / "data")


def checkpoint_of(state: TrainingState, config: Config, vocab: Vocabulary, data_dir: Path) -> checkpoint.Checkpoint:
    hidden = [array for layer in state.hidden.layers for array in layer] + [state.hidden.history]
    meta = {"config": config.to_dict(), "vocab": json.loads(vocab.to_json()), "data": str(data_dir.resolve()),
            "progress": asdict(state.progress),
            "rng": state.rng.bit_generator.state, "hidden_arity": len(state.hidden.layers[0])}
    return checkpoint.Checkpoint(state.params, state.optimizer, hidden, meta)


def state_of(saved: checkpoint.Checkpoint) -> TrainingState:
    """Rebuild the exact training state a checkpoint holds."""
    arity = saved.meta["hidden_arity"]
    arrays = saved.hidden[:-1]
    layers = [tuple(arrays[i:i + arity]) for i in range(0, len(arrays), arity)]
    rng = np.random.default_rng()
    rng.bit_generator.state = saved.meta["rng"]
    return TrainingState(saved.params, saved.optimizer, State(layers, saved.hidden[-1]), rng,
                         Progress(**saved.meta["progress"]))


@dataclass
class Session:
    """What `charrnn train` works with: data, model, run directory and any checkpoint resumed from."""

    data: Prepared
    model: RNNLM
    run_dir: RunDirectory
    saved: checkpoint.Checkpoint | None

    @property
    def start_step(self) -> int:
        return self.saved.meta["progress"]["step"] if self.saved is not None else 0

    def training_state(self, trainer) -> TrainingState:
        """The resumed state, exactly as saved, or a fresh one from the seed."""
        if self.saved is None:
            return trainer.initial_state()
        state = state_of(self.saved)
        if self.saved.meta["config"]["train"]["optimizer"] != trainer.cfg.optimizer:
            state.optimizer = trainer.optimizer.init(state.params)  # a new optimizer starts from zero state
        return state


def open_session(source: str, out: Path, config: Config, saved: checkpoint.Checkpoint | None,
                 on_bytes=None) -> Session:
    """Open the data and the run directory; a fresh run clears the old run's checkpoints and summary."""
    data = open_source(source, out, on_bytes)
    if saved is not None and saved.meta["vocab"]["tokens"] != list(data.vocab.tokens):
        raise UserError(f"{source} has a different vocabulary from the run in {out}; resume with the same SOURCE")
    run_dir = RunDirectory(out, config, data.vocab, data.directory)
    if saved is None:
        for stale in [*Path(out).glob("*.npz"), Path(out) / "summary.json"]:
            stale.unlink(missing_ok=True)
    run_dir.start(fresh=saved is None)
    return Session(data, RNNLM(config.model, data.vocab.size), run_dir, saved)


class RunDirectory:
    """Writes a run's files; `save` is the trainer's checkpoint hook."""

    def __init__(self, path: Path, config: Config, vocab: Vocabulary, data_dir: Path):
        self.path, self.config, self.vocab, self.data_dir = Path(path), config, vocab, data_dir

    def start(self, fresh: bool):
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.yaml").write_text(self.config.to_yaml())
        (self.path / "vocab.json").write_text(self.vocab.to_json(), encoding="utf-8")
        if fresh:
            (self.path / "metrics.jsonl").write_text("")

    def save(self, state: TrainingState, names: tuple[str, ...]):
        saved = checkpoint_of(state, self.config, self.vocab, self.data_dir)
        for name in names:
            if name.startswith("step-") and not self.config.train.keep_checkpoints:
                continue
            checkpoint.save(self.path / f"{name}.npz", saved)
        self.prune_periodic()

    def prune_periodic(self):
        periodic = sorted(self.path.glob("step-*.npz"), key=lambda p: int(p.stem[5:]))
        for old in periodic[: max(0, len(periodic) - self.config.train.keep_checkpoints)]:
            old.unlink()

    def append_metrics(self, record: dict):
        with open(self.path / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def write_summary(self, reason: str, progress: Progress):
        summary = {"reason": reason, "steps": progress.step, "epochs": progress.epoch, "tokens": progress.tokens,
                   "seconds": round(progress.elapsed, 1), "best_val_loss": progress.best_val,
                   "best_step": progress.best_step, "last_val_loss": progress.last_val}
        (self.path / "summary.json").write_text(json.dumps(summary, indent=1))


def resume_config(run_dir: Path, yaml_path, assignments, flags) -> tuple[Config, checkpoint.Checkpoint]:
    """The checkpoint's config with new train settings applied; the model may not change."""
    saved = checkpoint.load(run_dir / "last.npz")
    config = resolve(yaml_path, assignments, flags, base=saved.meta["config"])
    if asdict(config.model) != saved.meta["config"]["model"]:
        raise UserError("model settings cannot change when resuming; start a new run with --out to change them")
    return config, saved


def find_checkpoint(target: Path) -> Path:
    """A run directory's best.npz (else last.npz), or a checkpoint file as given."""
    target = Path(target)
    if target.is_dir():
        for name in ("best.npz", "last.npz"):
            if (target / name).is_file():
                return target / name
        raise UserError(f"{target} holds no checkpoint (best.npz or last.npz); train first with `charrnn train`")
    if not target.exists():
        raise UserError(f"{target}: no such run directory or checkpoint file")
    return target


def load_model(target: Path) -> tuple[RNNLM, dict[str, np.ndarray], Vocabulary, dict]:
    """(model, params, vocabulary, meta) from a run directory or checkpoint file."""
    saved = checkpoint.load(find_checkpoint(target))
    config = resolve(base=saved.meta["config"])
    vocab = Vocabulary.from_json(json.dumps(saved.meta["vocab"]))
    return RNNLM(config.model, vocab.size), saved.params, vocab, saved.meta
