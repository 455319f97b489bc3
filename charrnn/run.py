"""A run directory: where `train` keeps its config, vocabulary, checkpoints and metrics.

    RUN_DIR/config.yaml     the resolved configuration
    RUN_DIR/vocab.json      the vocabulary the model was trained on
    RUN_DIR/last.npz        the latest state (what --resume continues)
    RUN_DIR/best.npz        the parameters with the best validation loss
    RUN_DIR/step-N.npz      periodic checkpoints (train.keep_checkpoints of them)
    RUN_DIR/metrics.jsonl   one JSON object per log line
    RUN_DIR/summary.json    written at the end
    RUN_DIR/data/           the corpus prepared on the fly when SOURCE is not a prepared directory

One `charrnn train` at a time writes a run directory: `claim` holds its lock (see `charrnn.lock`)
for the whole command, sweeps what killed writers left when it starts and any temporary file of
its own when it ends (however it ends), and, if the directory is new and the command fails
before training starts, removes it again, so a refused run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from charrnn import checkpoint, memory
from charrnn.config import Config, resolve
from charrnn.corpus import resolve_sources
from charrnn.data import Prepared
from charrnn.errors import UserError
from charrnn.finetune import grow
from charrnn.files import sweep_temporaries, write_atomic
from charrnn.lock import DirectoryLock
from charrnn.outputs import check_output_directory
from charrnn.model import RNNLM, State
from charrnn.prepare import PrepareOptions, prepare
from charrnn.schema import checkpoint_layout, config_mapping, config_of, progress_of, vocabulary_of
from charrnn.train import Progress, TrainingState
from charrnn.vectors import Vectors, read_vectors
from charrnn.vocab import UnknownTokensError, Vocabulary

ONEHOT_LIMIT = 4096  # one-hot or bag-of-words input over more tokens than this is refused


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


def open_source(source: str, run_dir: Path, on_bytes=None, base: Vocabulary | None = None,
                resumed: checkpoint.Checkpoint | None = None) -> tuple[Prepared, bool]:
    """(data, prepared now?): a prepared directory as it is; text files, folders and built-in
    corpora are prepared into RUN_DIR/data (reused while the sources' sha256 is unchanged). With
    a `base` vocabulary (fine-tuning), the vocabulary is `base` grown by the corpus's new tokens.
    Resuming (`resumed`), the text is encoded with the run's own vocabulary and the options its
    data was prepared with; a text with tokens that vocabulary lacks is refused, and RUN_DIR/data
    is replaced only by a preparation that succeeded."""
    path = Path(source)
    if path.is_dir() and (path / "meta.json").exists():
        data = Prepared.open(path)
        if base is not None and data.vocab.tokens[: base.size] != base.tokens:
            raise UserError(f"{source} was prepared with its own vocabulary; to fine-tune, give the text itself, "
                            f"so that it is encoded with the model's vocabulary grown by its new tokens")
        return data, False
    fixed = None
    if resumed is not None:
        fixed = vocabulary_of(resumed.meta)
        options = recorded_options(Path(resumed.meta["data"]), fixed)
    elif base is not None:
        options = PrepareOptions(level=base.level, extends=hashlib.sha256(base.to_json().encode()).hexdigest())
    else:
        options = PrepareOptions()
    try:
        meta = prepare(resolve_sources([source]), run_dir / "data", options, force=True, on_bytes=on_bytes,
                       base=base, fixed=fixed)
    except UnknownTokensError as error:
        raise UserError(f"{source} holds tokens the run in {run_dir} has no place for ({error}); a resumed run "
                        f"keeps its vocabulary: resume with the text it was trained on, or with none "
                        f"(charrnn train --out {run_dir} --resume)") from None
    return Prepared.open(run_dir / "data"), not meta.get("unchanged")


def recorded_options(data_dir: Path, vocab: Vocabulary) -> PrepareOptions:
    """The options a run's data was prepared with (its split fractions, above all), from its
    meta.json; the defaults at the vocabulary's level if that is gone or unreadable."""
    try:
        return PrepareOptions(**json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))["options"])
    except (OSError, ValueError, KeyError, TypeError):
        return PrepareOptions(level=vocab.level)


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
                         progress_of(saved.meta))


@dataclass
class Session:
    """What `charrnn train` works with: data, model, run directory and any checkpoint resumed from."""

    data: Prepared
    prepared_now: bool
    model: RNNLM
    run_dir: RunDirectory
    saved: checkpoint.Checkpoint | None
    init: checkpoint.Checkpoint | None = None  # the checkpoint a fine-tuning run starts from
    vectors: Vectors | None = None  # pretrained embeddings a new run starts from

    @property
    def start_progress(self) -> Progress:
        return progress_of(self.saved.meta) if self.saved is not None else Progress()

    def training_state(self, trainer) -> TrainingState:
        """The resumed state, exactly as saved, or a fresh one from the seed (carrying a fine-tuning
        source's weights over, see `charrnn.finetune`; its optimizer state starts fresh)."""
        if self.saved is None:
            state = trainer.initial_state()
            if self.init is not None:
                state.params = grow(self.init.params, state.params, len(self.init.meta["vocab"]["tokens"]))
            if self.vectors is not None:
                table = state.params["embedding.weight"]
                table[self.vectors.ids] = self.vectors.rows.astype(table.dtype)
            return state
        state = state_of(self.saved)
        if self.saved.meta["config"]["train"]["optimizer"] != trainer.cfg.optimizer:
            state.optimizer = trainer.optimizer.init(state.params)  # a new optimizer starts from zero state
        return state


def open_session(source: str | None, out: Path, config: Config, saved: checkpoint.Checkpoint | None,
                 on_bytes=None, init: checkpoint.Checkpoint | None = None) -> Session:
    """Check everything that can be checked, then open the data and the model. Nothing in `out`
    is changed here except RUN_DIR/data when SOURCE is prepared on the fly."""
    if source is None:
        source = saved.meta["data"]
        if not (Path(source) / "meta.json").exists():
            raise UserError(f"the run's data directory {source} is gone; give SOURCE to resume with")
    data, prepared_now = open_source(source, out, on_bytes, vocabulary_of(init.meta) if init is not None else None,
                                     resumed=saved)
    if saved is not None and saved.meta["vocab"]["tokens"] != list(data.vocab.tokens):
        raise UserError(f"{source} has a different vocabulary from the run in {out}; resume with the same SOURCE")
    check_encoding(config, data.vocab)
    vectors = None
    if config.model.pretrained_embeddings and saved is None and init is None:
        vectors = read_vectors(Path(config.model.pretrained_embeddings), data.vocab)
        config.model.embedding_dim = vectors.dim  # the file decides the width of the table
    train = config.train
    memory.require(memory.training_bytes(config.model, data.vocab.size, train.batch_size, train.seq_len,
                                         train.optimizer, train.threads or 1),
                   "training this model", "lower model.hidden_size, model.num_layers, train.batch_size or "
                                          "train.seq_len")
    run_dir = RunDirectory(out, config, data.vocab, data.directory)
    return Session(data, prepared_now, RNNLM(config.model, data.vocab.size), run_dir, saved, init, vectors)


def check_encoding(config: Config, vocab: Vocabulary):
    """One-hot input over a large word vocabulary is slow and huge: ask for an embedding."""
    if config.model.encoding in ("onehot", "bow") and vocab.size > ONEHOT_LIMIT:
        raise UserError(f"model.encoding is {config.model.encoding} over {vocab.size:,} tokens, which is slow and "
                        f"memory-hungry; use --set model.encoding=embedding (a learned table of "
                        f"model.embedding_dim per token)")


class RunDirectory:
    """Writes a run's files; `save` is the trainer's checkpoint hook."""

    def __init__(self, path: Path, config: Config, vocab: Vocabulary, data_dir: Path):
        self.path, self.config, self.vocab, self.data_dir = Path(path), config, vocab, data_dir
        self.saved_step: int | None = None  # the step of the newest checkpoint on disk

    def start(self, resumed_step: int | None):
        """A fresh run (None) clears the old run's checkpoints and metrics; a resumed one drops
        the metrics of steps after the checkpoint, which it is about to replay."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.saved_step = resumed_step
        if resumed_step is None:
            for stale in [*self.path.glob("*.npz"), self.path / "summary.json"]:
                stale.unlink(missing_ok=True)
            write_atomic(self.path / "metrics.jsonl", "")
        else:
            kept = [line for line in self.metrics_lines() if json.loads(line).get("step", 0) <= resumed_step]
            write_atomic(self.path / "metrics.jsonl", "".join(line + "\n" for line in kept))
        write_atomic(self.path / "config.yaml", self.config.to_yaml())
        write_atomic(self.path / "vocab.json", self.vocab.to_json())

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


def resume_config(run_dir: Path, yaml_path, assignments, flags) -> tuple[Config, checkpoint.Checkpoint, list[str]]:
    """The checkpoint's config with new train settings applied; the model may not change.
    Also returns what changed, as 'key: old -> new' lines."""
    saved = read_checkpoint(Path(run_dir) / "last.npz")
    config = resolve(yaml_path, assignments, flags, base=config_mapping(saved.meta))
    old = config_of(saved.meta)  # keys added since the checkpoint was written take their defaults
    if config.model != old.model:
        raise UserError("model settings cannot change when resuming; start a new run with --out to change them")
    old = old.train
    changes = [f"train.{key}: {getattr(old, key)!r} -> {value!r}" for key, value in asdict(config.train).items()
               if getattr(old, key) != value]
    return config, saved, changes


def fine_tune_config(config: Config, yaml_path, assignments, flags) -> tuple[Config, checkpoint.Checkpoint]:
    """For a run with train.init_from: the source checkpoint, and the config with the source's model
    settings (any model setting given that differs is refused) and the source's path and sha256."""
    path = find_checkpoint(Path(config.train.init_from))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if config.train.init_from_sha256 not in (None, digest):
        raise UserError(f"{path} has changed since its sha256 was recorded (train.init_from_sha256); "
                        f"leave that key out to start from the file as it is now")
    source = read_checkpoint(path)
    source_model = asdict(config_of(source.meta).model)  # keys added since it was written take their defaults
    config = resolve(yaml_path, assignments, flags, base={"model": source_model})
    changed = [f"model.{k}" for k, v in asdict(config.model).items() if source_model[k] != v]
    if changed:
        raise UserError(f"a fine-tuning run takes its model settings from {path}; leave out {', '.join(changed)} "
                        f"(a config for fine-tuning needs only a train: section)")
    config.train.init_from, config.train.init_from_sha256 = str(path.resolve()), digest
    return config, source


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
    saved = read_checkpoint(find_checkpoint(target))
    config = config_of(saved.meta)
    vocab = vocabulary_of(saved.meta)
    return RNNLM(config.model, vocab.size), saved.params, vocab, saved.meta
