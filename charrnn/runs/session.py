"""What a `charrnn train` starts from: its data, model, run directory, and any checkpoint it
resumes or fine-tunes from.

Everything that can be checked is checked here, before the run directory changes: the source
(a prepared directory, or text prepared into RUN_DIR/data on the fly; a resumed run's text is
encoded with the run's own vocabulary), the settings a resume may change and the model settings
a fine-tuning run takes from its source, the encoding against the vocabulary's size, the memory
a model needs, and pretrained vectors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from charrnn.compute import memory
from charrnn.config import Config, ModelConfig, TrainConfig, resolve
from charrnn.data.corpus import corpus_name, resolve_sources
from charrnn.data.prepare import PrepareOptions, prepare, prepared_from
from charrnn.data.splits import Prepared
from charrnn.data.vectors import Vectors, read_vectors
from charrnn.data.vocab import UnknownTokensError, Vocabulary
from charrnn.errors import UserError
from charrnn.files.outputs import is_prepared_directory
from charrnn.nn.model import RNNLM
from charrnn.runs import checkpoint
from charrnn.runs.run import RunDirectory, find_checkpoint, read_checkpoint, state_of
from charrnn.runs.schema import config_mapping, config_of, progress_of, vocabulary_of
from charrnn.training.finetune import grow
from charrnn.training.loop import Progress, TrainingState

ONEHOT_LIMIT = 4096  # one-hot or bag-of-words input over more tokens than this is refused


def open_source(source: str, run_dir: Path, on_bytes=None, base: Vocabulary | None = None,
                resumed: checkpoint.Checkpoint | None = None) -> tuple[Prepared, bool]:
    """(data, prepared now?): a prepared directory as it is; text files, folders and built-in
    corpora are prepared into RUN_DIR/data (reused while the sources' sha256 is unchanged), unless
    `charrnn prepare SOURCE` already made data/NAME of the same text with its default options,
    which is then read from there. With
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
    sources = resolve_sources([source])
    shared = Path("data") / corpus_name(source)  # where `charrnn prepare SOURCE` puts it
    if resumed is None and base is None and source != "-" and is_prepared_directory(shared) and \
            prepared_from(shared, sources, PrepareOptions()):
        return Prepared.open(shared), False
    fixed = None
    if resumed is not None:
        fixed = vocabulary_of(resumed.meta)
        options = recorded_options(Path(resumed.meta["data"]), fixed)
    elif base is not None:
        options = PrepareOptions(level=base.level, extends=hashlib.sha256(base.to_json().encode()).hexdigest())
    else:
        options = PrepareOptions()
    try:
        meta = prepare(sources, run_dir / "data", options, force=True, on_bytes=on_bytes,
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
        source's weights over, see `charrnn.training.finetune`; its optimizer state starts fresh)."""
        if self.saved is None:
            state = trainer.initial_state()
            if self.init is not None:  # from the weights the source is used by (its average, where it has one)
                state.params = grow(self.init.model_params, state.params, len(self.init.meta["vocab"]["tokens"]))
            if self.vectors is not None:
                table = state.params["embedding.weight"]
                table[self.vectors.ids] = self.vectors.rows.astype(table.dtype)
            return state
        state = state_of(self.saved)
        if self.saved.meta["config"]["train"]["optimizer"] != trainer.cfg.optimizer:
            state.optimizer = trainer.optimizer.init(state.params)  # a new optimizer starts from zero state
        if (trainer.cfg.average == "none") != (state.average is None):  # averaging turned on or off on resuming
            state.average = {k: v.copy() for k, v in state.params.items()} if trainer.cfg.average != "none" else None
            state.progress.averaged = 0
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
    require_training_memory(config.model, config.train, data.vocab.size)
    run_dir = RunDirectory(out, config, data.vocab, data.directory)
    return Session(data, prepared_now, RNNLM(config.model, data.vocab.size), run_dir, saved, init, vectors)


def require_training_memory(model: ModelConfig, train: TrainConfig, vocab_size: int):
    """Refuse with one line a training whose parameters, optimizer state and activations would not fit."""
    memory.require(memory.training_bytes(model, vocab_size, train.batch_size, train.seq_len, train.optimizer,
                                         train.threads or 1),
                   "training this model", "lower model.hidden_size, model.num_layers, train.batch_size or "
                                          "train.seq_len")


def check_encoding(config: Config, vocab: Vocabulary):
    """One-hot input over a large word vocabulary is slow and huge: ask for an embedding."""
    if config.model.encoding in ("onehot", "bow") and vocab.size > ONEHOT_LIMIT:
        raise UserError(f"model.encoding is {config.model.encoding} over {vocab.size:,} tokens, which is slow and "
                        f"memory-hungry; use --set model.encoding=embedding (a learned table of "
                        f"model.embedding_dim per token)")


def resume_config(run_dir: Path, yaml_path, assignments, flags,
                  config: Config | None = None) -> tuple[Config, checkpoint.Checkpoint, list[str]]:
    """The checkpoint's config with new train settings applied (or `config` as given: an ensemble's
    member, `charrnn.runs.ensemble`); the model may not change. Also returns what changed, as
    'key: old -> new' lines."""
    saved = read_checkpoint(Path(run_dir) / "last.npz")
    if config is None:
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
    path = find_checkpoint(Path(config.train.init_from), "fine-tuning (train.init_from)")
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


