"""The configuration tree: `model:` and `train:` dataclasses, filled and validated once.

Values come from the defaults below, then a YAML file (a path, or the name of a config shipped
with charrnn: `tiny`, `lstm`, ...), then `--set section.key=value`, then the common command-line
flags; `resolve` applies them in that order and `validate` rejects an unknown key (naming the
closest valid one), a wrong type, a non-finite number or an impossible value before any work.

YAML is read strictly: UTF-8, at most `MAX_CONFIG_BYTES`, no anchors or aliases (a 259-byte
file of nested aliases can expand to hundreds of megabytes), and `1e6` is a number, as a user
means it, not the string YAML 1.1 makes of it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import importlib.resources
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from charrnn.errors import UserError
from charrnn.user_text import decode_utf8


@dataclass
class ModelConfig:
    """The network. Defaults suit a char LM on a laptop CPU."""

    cell: str = "lstm"  # rnn | lstm | gru
    nonlinearity: str = "tanh"  # tanh | relu (rnn cell only)
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0  # between layers, a fresh mask at every step, training only
    locked_dropout: float = 0.0  # between layers, one mask per sequence (variational, AWD-LSTM)
    output_dropout: float = 0.0  # on the top layer's output, one mask per sequence
    input_dropout: float = 0.0  # on an embedding input, one mask per sequence
    embedding_dropout: float = 0.0  # whole tokens dropped per batch (embedding rows, or W_ih columns)
    weight_drop: float = 0.0  # DropConnect on each layer's W_hh, one mask per batch
    bidirectional: bool = False  # sees the future: library use only, refused by `train`
    encoding: str = "onehot"  # onehot | bow | embedding
    embedding_dim: int = 64  # set from the file when pretrained_embeddings is given
    pretrained_embeddings: typing.Optional[str] = None  # word vectors in text format (embedding encoding)
    freeze_embeddings: bool = False  # keep the embedding table fixed while training
    bow_window: int = 3
    init: str = "default"  # default (PyTorch's uniform) | orthogonal (recurrent weights)
    forget_bias: float = 0.0  # LSTM forget-gate bias at initialisation
    dtype: str = "float32"  # float32 | float64


@dataclass
class TrainConfig:
    """The optimisation, schedule, evaluation and checkpointing."""

    batch_size: int = 32
    seq_len: int = 64
    optimizer: str = "adam"  # sgd | adagrad | rmsprop | adam | adamw
    lr: float = 2e-3
    momentum: float = 0.9  # sgd
    nesterov: bool = False  # sgd
    betas: list = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw
    alpha: float = 0.99  # rmsprop smoothing
    eps: float = 1e-8
    weight_decay: float = 0.0  # decoupled for adamw, L2 otherwise
    clip_norm: float = 5.0  # global gradient norm; 0 turns clipping off
    lr_schedule: str = "constant"  # constant | step | cosine
    decay_rate: float = 0.97  # step: multiply lr by this ...
    decay_every: int = 1  # ... every this many epochs ...
    decay_after: int = 10  # ... once this many epochs are done
    min_lr: float = 0.0  # cosine: the floor it decays to at the horizon (max_steps, max_epochs or max_time)
    warmup_steps: int = 0  # linear warm-up (cosine and step)
    max_steps: typing.Optional[int] = 2000  # None: bounded by max_epochs or max_time (a schedule then fits it)
    max_epochs: typing.Optional[int] = None
    max_time: typing.Optional[str] = None  # "90s", "10m", "1.5h"
    eval_every: int = 200
    eval_tokens: typing.Optional[int] = 200_000  # None: the whole val split
    patience: typing.Optional[int] = None  # evaluations without improvement before stopping
    checkpoint_every: int = 500
    keep_checkpoints: int = 0  # periodic step-N.npz files kept besides last and best
    log_every: int = 50
    seed: int = 1337
    threads: int = 0  # workers (threads or processes) on shards of the batch; 0: chosen by timing, see charrnn.training.layout
    step_products: str = "auto"  # batch_major | gate_major | packed (MKL): each step's W_hh product; auto: timed
    diverge_ratio: typing.Optional[float] = 3.0  # stop when a step's loss exceeds this x ln(vocab size); None: never
    activation_penalty: float = 0.0  # AR: this x mean(h^2) of the top output (after output dropout)
    temporal_penalty: float = 0.0  # TAR: this x mean((h_t - h_(t-1))^2) of the top output
    average: str = "none"  # none | ema | tail: the weights eval, sample, serve and export use
    average_decay: float = 0.999  # ema: the weight of the average so far at each step
    average_start: float = 0.5  # the share of the run's horizon (as the schedule's) after which averaging begins
    members: int = 1  # networks trained one after another, predictions averaged (charrnn.runs.ensemble)
    member_settings: list = field(default_factory=list)  # entry k: member k's own {key: value}, as --set takes them
    init_from: typing.Optional[str] = None  # fine-tune: start from this run's or checkpoint's parameters
    init_from_sha256: typing.Optional[str] = None  # the sha256 of that checkpoint (charrnn records it)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def max_seconds(self) -> float | None:
        return parse_duration(self.train.max_time) if self.train.max_time is not None else None

    def member_entry(self, k: int) -> dict[str, object]:
        """Member k's (1-based) own settings from train.member_settings, by full key ({} if it has none)."""
        entries = self.train.member_settings
        return {full_key(key): value for key, value in entries[k - 1].items()} if k <= len(entries) else {}

    def member(self, k: int) -> Config:
        """The configuration member k (1-based) of an ensemble trains with: seed `train.seed + k - 1`,
        then its entry of train.member_settings; a member that sets its own train.max_time has it, and
        the others share what is left of the ensemble's equally, so that the ensemble keeps its budget."""
        member = copy.deepcopy(self)
        member.train.members, member.train.member_settings = 1, []
        member.train.seed = self.train.seed + k - 1
        own = self.member_entry(k)
        if self.max_seconds is not None and "train.max_time" not in own:
            member.train.max_time = f"{self.shared_seconds():.3f}".rstrip("0").rstrip(".") + "s"
        for key, value in own.items():
            set_value(member, key, value)
        return member

    def shared_seconds(self) -> float:
        """Each member's share of train.max_time, less the time the members that set their own take."""
        sharing, taken = self.own_times()
        return (self.max_seconds - taken) / sharing if sharing else 0.0

    def own_times(self) -> tuple[int, float]:
        """(how many members share train.max_time, the seconds the members that set their own take)."""
        entries = [self.member_entry(k) for k in range(1, self.train.members + 1)]
        times = [entry["train.max_time"] for entry in entries if entry.get("train.max_time") is not None]
        return sum("train.max_time" not in entry for entry in entries), sum(map(parse_duration, times))


CHOICES = {
    "model.cell": ("rnn", "lstm", "gru"), "model.nonlinearity": ("tanh", "relu"),
    "model.encoding": ("onehot", "bow", "embedding"), "model.init": ("default", "orthogonal"),
    "model.dtype": ("float32", "float64"),
    "train.optimizer": ("sgd", "adagrad", "rmsprop", "adam", "adamw"),
    "train.lr_schedule": ("constant", "step", "cosine"),
    "train.step_products": ("auto", "batch_major", "gate_major", "packed"),
    "train.average": ("none", "ema", "tail"),
}
POSITIVE = ("model.hidden_size", "model.num_layers", "model.embedding_dim", "model.bow_window",
            "train.batch_size", "train.seq_len", "train.lr", "train.max_steps", "train.eval_every",
            "train.checkpoint_every", "train.log_every", "train.decay_every", "train.eps",
            "train.max_epochs", "train.eval_tokens", "train.patience", "train.diverge_ratio", "train.members")
NON_NEGATIVE = ("train.weight_decay", "train.clip_norm", "train.min_lr", "train.warmup_steps",
                "train.keep_checkpoints", "train.decay_after", "train.momentum", "train.seed", "train.threads",
                "train.activation_penalty", "train.temporal_penalty")
UNIT_INTERVAL = {"model.dropout": "[0, 1)", "model.locked_dropout": "[0, 1)", "model.output_dropout": "[0, 1)",
                 "model.input_dropout": "[0, 1)", "model.embedding_dropout": "[0, 1)", "model.weight_drop": "[0, 1)",
                 "train.alpha": "[0, 1)", "train.momentum": "[0, 1)", "train.decay_rate": "(0, 1]",
                 "train.average_decay": "(0, 1)", "train.average_start": "[0, 1)"}
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_CONFIG_BYTES = 1 << 20
MAX_MEMBERS = 16  # networks in an ensemble
SHARED_BY_MEMBERS = ("model.cell", "model.nonlinearity", "model.hidden_size", "model.num_layers",
                     "model.bidirectional", "model.encoding", "model.embedding_dim", "model.pretrained_embeddings",
                     "model.freeze_embeddings", "model.bow_window", "model.dtype", "train.batch_size",
                     "train.seq_len", "train.members",
                     "train.member_settings", "train.init_from", "train.init_from_sha256")
SYNONYMS = {"learning_rate": "lr", "lr_decay": "decay_rate", "learning_rate_decay": "decay_rate",
            "epochs": "max_epochs", "num_epochs": "max_epochs", "steps": "max_steps", "iterations": "max_steps",
            "max_iters": "max_steps", "seq_length": "seq_len", "sequence_length": "seq_len", "block_size": "seq_len",
            "batch": "batch_size", "rnn_size": "hidden_size", "hidden": "hidden_size", "n_hidden": "hidden_size",
            "layers": "num_layers", "n_layers": "num_layers", "num_layer": "num_layers", "model": "cell",
            "rnn_type": "cell", "type": "cell", "grad_clip": "clip_norm", "clip": "clip_norm",
            "max_grad_norm": "clip_norm", "dropout_rate": "dropout", "activation": "nonlinearity",
            "time": "max_time", "early_stopping": "patience", "epsilon": "eps", "beta": "betas",
            "dropconnect": "weight_drop", "wdrop": "weight_drop", "variational_dropout": "locked_dropout",
            "dropouth": "locked_dropout", "dropouti": "input_dropout", "dropoute": "embedding_dropout",
            "ar": "activation_penalty", "tar": "temporal_penalty", "ema": "average", "swa": "average"}


def parse_duration(text) -> float:
    """'90s' | '10m' | '1.5h' | 45 -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
    if not match:
        raise UserError(f"train.max_time must look like 90s, 10m or 1.5h, not {text!r}")
    return float(match[1]) * UNITS[match[2] or "s"]


def sections(config: Config) -> dict[str, object]:
    return {"model": config.model, "train": config.train}


def all_keys() -> list[str]:
    return [f"{name}.{f.name}" for name, part in sections(Config()).items() for f in dataclasses.fields(part)]


def closest(key: str) -> str:
    """'; did you mean ...?' for a mistyped `section.key`: the key of a known synonym or of the same
    name in any section (learning_rate -> train.lr), else the nearest spelling in its section."""
    keys = all_keys()
    section, _, name = key.rpartition(".")
    in_section = [k for k in keys if k.startswith(section + ".")] or keys
    wanted = SYNONYMS.get(name, name)
    near = difflib.get_close_matches(name, [k.split(".")[1] for k in in_section], n=1, cutoff=0.6)
    found = [k for k in keys if k.split(".")[1] == wanted] or [k for k in in_section if k.split(".")[1] in near]
    return f"; did you mean {found[0]!r}?" if found else f"; valid keys are {', '.join(keys)}"


def closest_section(name: str) -> str:
    near = difflib.get_close_matches(name, ["model", "train"], n=1, cutoff=0.4)
    return f"; did you mean {near[0]!r}?" if near else "; the sections are model and train"


@functools.cache
def field_types(section: type) -> dict[str, object]:
    """The resolved type of each field of a config section (resolving them is slow: done once)."""
    return typing.get_type_hints(section)


def full_key(key: str) -> str:
    """An unambiguous bare key -> its `section.key` (lr -> train.lr); anything else as it is."""
    if "." not in key:
        matches = [k for k in all_keys() if k.endswith("." + key)]
        return matches[0] if len(matches) == 1 else key
    return key


def set_value(config: Config, key: str, value):
    """Set `section.key` (or an unambiguous bare `key`) to `value`, checking its type."""
    key = full_key(key)
    section_name, _, name = key.partition(".")
    part = sections(config).get(section_name)
    if part is None or name not in {f.name for f in dataclasses.fields(part)}:
        raise UserError(f"unknown config key {key!r}{closest(key)}")
    hint = field_types(type(part))[name]
    setattr(part, name, coerce(key, value, hint))


def coerce(key: str, value, hint):
    """Check `value` against the field's type, converting only where no information is lost."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    if value is None:
        if optional:
            return None
        raise UserError(f"{key} must not be empty")
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if key == "train.max_time":
        parse_duration(value)
        return str(value)
    if base is bool and isinstance(value, bool):
        return value
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise UserError(f"{key} must be a finite number, not {value!r}")
        return float(value)
    if base is str and isinstance(value, str):
        return value
    if base is list and isinstance(value, (list, tuple)):
        return list(value)
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}[base]
    raise UserError(f"{key} must be {kind}, not {value!r}")


def apply_mapping(config: Config, mapping: dict, origin: str):
    """Apply a nested {section: {key: value}} mapping, as read from YAML."""
    if not isinstance(mapping, dict):
        raise UserError(f"{origin} must hold a mapping with model: and train: sections")
    for section_name, values in mapping.items():
        if section_name not in ("model", "train"):
            raise UserError(f"unknown config section {section_name!r} in {origin}{closest_section(str(section_name))}")
        if not isinstance(values, dict):
            raise UserError(f"{section_name}: in {origin} must be a mapping of keys to values")
        for name, value in values.items():
            set_value(config, f"{section_name}.{name}", value)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that reads 1e6 and 1E-3 as numbers (YAML 1.1 wants 1.0e+6)."""


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                 |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                 |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                 |[-+]?\.(?:inf|Inf|INF)
                 |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text: str, origin: str):
    """YAML text -> Python values; aliases are refused (they can expand without bound)."""
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=StrictLoader)):
            raise UserError(f"{origin} uses YAML aliases (*name); write the values out instead")
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{origin} is not valid YAML{where}; fix it or leave it out") from None


def parse_assignment(text: str) -> tuple[str, object]:
    """'train.lr=0.01' -> ('train.lr', 0.01), the value read as YAML (a bare word stays a string)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set takes key=value, like train.lr=0.001, not {text!r}")
    if not raw.strip():
        return key.strip(), None
    try:
        return key.strip(), parse_yaml(raw, f"the value of --set {key.strip()}")
    except UserError:
        return key.strip(), raw


def packaged_configs() -> list[str]:
    """Names of the configs shipped with charrnn (`charrnn train -c NAME`)."""
    return sorted(p.name[:-5] for p in importlib.resources.files("charrnn.configs").iterdir()
                  if p.name.endswith(".yaml"))


def config_file(name: Path | str) -> Path:
    """A config path as given, else the packaged config of that name."""
    path = Path(name)
    if path.exists() or path.suffix:
        return path
    if str(name) in packaged_configs():
        return Path(str(importlib.resources.files("charrnn.configs") / f"{name}.yaml"))
    raise UserError(f"config {name!r} is neither a file nor a packaged config ({', '.join(packaged_configs())})")


def load_yaml(path: Path) -> dict:
    """Read a config file strictly (see the module docstring)."""
    path = config_file(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise UserError(f"config file {path} not found") from None
    except IsADirectoryError:
        raise UserError(f"config file {path} is a directory; give a YAML file") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise UserError(f"config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB; a config is a few lines")
    return parse_yaml(decode_utf8(raw, f"config file {path}"), f"config file {path}") or {}


def resolve(yaml_path: Path | None = None, assignments: typing.Iterable[str] = (),
            flags: dict | None = None, base: dict | None = None) -> Config:
    """Defaults <- base mapping (a checkpoint's) <- YAML file <- --set <- flags; validated."""
    config = Config()
    if base:
        apply_mapping(config, base, "the checkpoint")
    if yaml_path is not None:
        apply_mapping(config, load_yaml(yaml_path), str(yaml_path))
    for text in assignments:
        set_value(config, *parse_assignment(text))
    for key, value in (flags or {}).items():
        if value is not None:
            set_value(config, key, value)
    validate(config)
    return config


def validate(config: Config):
    """Reject impossible values, naming the key."""
    values = {f"{s}.{k}": v for s, part in sections(config).items() for k, v in dataclasses.asdict(part).items()}
    for key, choices in CHOICES.items():
        if values[key] not in choices:
            raise UserError(f"{key} must be one of {', '.join(choices)}, not {values[key]!r}")
    for key in POSITIVE:
        if values[key] is not None and values[key] <= 0:
            raise UserError(f"{key} must be positive, not {values[key]!r}")
    for key in NON_NEGATIVE:
        if values[key] < 0:
            raise UserError(f"{key} must not be negative, not {values[key]!r}")
    for key, interval in UNIT_INTERVAL.items():
        low_ok = values[key] >= 0 if interval[0] == "[" else values[key] > 0
        high_ok = values[key] < 1 if interval[-1] == ")" else values[key] <= 1
        if not (low_ok and high_ok):
            raise UserError(f"{key} must be in {interval}, not {values[key]!r}")
    betas = config.train.betas
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                                  for b in betas):
        raise UserError(f"train.betas must be two numbers in [0, 1), not {betas!r}")
    if (config.model.pretrained_embeddings or config.model.freeze_embeddings) and config.model.encoding != "embedding":
        raise UserError("model.pretrained_embeddings and model.freeze_embeddings need model.encoding: embedding")
    if config.model.input_dropout and config.model.encoding != "embedding":
        raise UserError("model.input_dropout drops features of an embedding input, so it needs model.encoding: "
                        "embedding; for one-hot or bag-of-words input, model.embedding_dropout drops whole tokens")
    train = config.train
    if train.max_steps is None and train.max_epochs is None and train.max_time is None:
        raise UserError("train.max_steps, train.max_epochs and train.max_time are all empty; set at least one "
                        "so that training stops")
    if train.members > MAX_MEMBERS:
        raise UserError(f"train.members must be at most {MAX_MEMBERS}, not {train.members}")
    if train.members > 1 and train.init_from is not None:
        raise UserError("train.init_from fine-tunes one network, and train.members trains several; fine-tune "
                        "one member at a time (--init-from RUN/member-1), or leave train.members at 1")
    if train.member_settings:
        validate_member_settings(config)
    if train.init_from_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", train.init_from_sha256):
        raise UserError(f"train.init_from_sha256 must be 64 hexadecimal digits, not {train.init_from_sha256!r}")


def validate_member_settings(config: Config):
    """Reject train.member_settings that no ensemble can train with: more entries than members, an
    entry that is not a mapping, a key given twice (lr and train.lr), a key every member shares (the
    network's shape and input, read side by side as one, and the batch, which the split must hold
    for every member), more of max_time than there is, or a member whose settings fail as a run's would."""
    entries, members = config.train.member_settings, config.train.members
    if members == 1:
        raise UserError("train.member_settings gives the members of an ensemble settings of their own; set "
                        "train.members to 2 or more, or leave it out")
    if len(entries) > members:
        raise UserError(f"train.member_settings has {len(entries)} entries for {members} members; "
                        f"give at most one per member")
    for k, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not all(isinstance(key, str) for key in entry):
            raise UserError(f"train.member_settings entry {k} must map keys to values, like {{train.lr: 0.005}} "
                            f"({{}} for none), not {entry!r}")
        named = [full_key(key) for key in entry]
        twice = next((name for name in named if named.count(name) > 1), None)
        if twice is not None:
            same = [key for key, name in zip(entry, named) if name == twice]
            raise UserError(f"train.member_settings entry {k} sets {twice} twice (as {' and '.join(same)}); "
                            f"give it once")
        shared = [key for key in entry if full_key(key) in SHARED_BY_MEMBERS]
        if shared:
            raise UserError(f"train.member_settings entry {k} sets {shared[0]}, which every member shares; set it "
                            f"for the whole ensemble")
        try:  # each value's type, before the time below reads any max_time
            probe = copy.deepcopy(config)
            for key, value in entry.items():
                set_value(probe, key, value)
        except UserError as error:
            raise UserError(f"train.member_settings entry {k}: {error}") from None
    sharing, taken = config.own_times()
    if config.max_seconds is not None and (taken > config.max_seconds or sharing and taken >= config.max_seconds):
        raise UserError(f"the members' own max_time in train.member_settings add up to {taken:g}s, "
                        + (f"more than the ensemble's train.max_time ({config.train.max_time})"
                           if taken > config.max_seconds else
                           f"all of the ensemble's train.max_time ({config.train.max_time}), leaving none for the "
                           f"members without one"))
    for k in range(1, len(entries) + 1):
        try:
            validate(config.member(k))
        except UserError as error:
            raise UserError(f"train.member_settings entry {k}: {error}") from None
