"""What a checkpoint's metadata must look like, and the arrays it implies.

`checkpoint_layout(meta)` checks the type of every metadata field (the config is validated as
any config is; the vocabulary is rebuilt; progress, RNG state and hidden-state arity are
checked), then derives from the config and vocabulary the exact name, shape and dtype of every
parameter, optimizer-state and hidden-state array. `checkpoint.load` holds the file against it
before reading any array, so a crafted file is refused before it can allocate anything.
"""

from __future__ import annotations

import json

import numpy as np

from charrnn.config import Config, coerce, field_types, resolve
from charrnn.data.vocab import Vocabulary
from charrnn.errors import UserError
from charrnn.nn.model import RNNLM
from charrnn.runs.checkpoint import Layout
from charrnn.training.loop import Progress
from charrnn.training.optim import make_optimizer

FIELDS = {"config": dict, "vocab": dict, "progress": dict, "rng": dict, "hidden_arity": int, "data": str}


def bad(why: str):
    raise UserError(f"the checkpoint's metadata is not what charrnn writes ({why}); use another checkpoint")


def config_mapping(meta: dict) -> dict:
    """The checkpoint's config as a mapping to resolve. Runs saved before `train.step_products`
    existed laid their products out batch-major: they resume so, bit for bit."""
    mapping = dict(meta["config"])
    if isinstance(mapping.get("train"), dict) and "step_products" not in mapping["train"]:
        mapping["train"] = {**mapping["train"], "step_products": "batch_major"}
    return mapping


def config_of(meta: dict) -> Config:
    try:
        return resolve(base=config_mapping(meta))
    except UserError as error:
        bad(f"its config: {error}")


def vocabulary_of(meta: dict) -> Vocabulary:
    try:
        return Vocabulary.from_json(json.dumps(meta["vocab"]))
    except Exception as error:  # any shape of malformed vocabulary
        bad(f"its vocabulary: {type(error).__name__}")


def check_progress(progress: dict):
    """Each progress field of its declared type (as config values are checked), and none negative."""
    hints = field_types(Progress)
    if not set(progress) <= set(hints):  # fields added since an older format keep their defaults
        bad("progress fields")
    for name, value in progress.items():
        try:
            coerce(f"progress.{name}", value, hints[name])
        except UserError:
            bad(f"progress.{name} = {value!r}")
        if isinstance(value, (int, float)) and value < 0:
            bad(f"progress.{name} = {value!r}")


def check_rng(state: dict):
    try:
        np.random.default_rng().bit_generator.state = state
    except Exception:
        bad("RNG state")


def checkpoint_layout(meta: dict) -> Layout:
    """meta -> {array name: (shape, dtype)} for every array the checkpoint must hold."""
    for name, kind in FIELDS.items():
        if not isinstance(meta.get(name), kind) or isinstance(meta.get(name), bool):
            bad(f"{name} is missing or not a {kind.__name__}")
    config = config_of(meta)
    vocab = vocabulary_of(meta)
    check_progress(meta["progress"])
    check_rng(meta["rng"])
    model = RNNLM(config.model, vocab.size)
    if meta["hidden_arity"] != model.cell.arity:
        bad("hidden_arity")
    params = {f"param/{k}": (shape, model.dtype) for k, shape in model.param_shapes().items()}
    optimizer = make_optimizer(config.train).state_layout(
        {k[len("param/"):]: v for k, v in params.items()})
    layout = {**params, **{f"optim/{k}": v for k, v in optimizer.items()}}
    if config.train.average != "none":
        layout.update({f"average/{k[len('param/'):]}": v for k, v in params.items()})
    batch, hidden = config.train.batch_size, config.model.hidden_size
    count = config.model.num_layers * model.directions * model.cell.arity
    layout.update({f"state/{i}": ((batch, hidden), model.dtype) for i in range(count)})
    layout[f"state/{count}"] = (model.encoder.history_shape(batch), np.dtype(np.int64))
    return layout


def progress_of(meta: dict) -> Progress:
    return Progress(**meta["progress"])

