"""Layout choices remembered per machine, model shape and library versions, so that a second
`charrnn train` of the same shape starts at once.

Timing the layouts of a training step (threads or worker processes, the step products; see
`charrnn.training.layout`) takes about 30 s for a large model on two quiet cores, and minutes
under load. What it settles depends only on the machine (CPU, cores available to the process,
the BLAS and its kernel, MKL and the settings that hold it back), the versions of Python, NumPy
and charrnn, and the shapes of the work (cell, sizes, vocabulary, batch, sequence length,
dtype, dropout, the thread and product settings). Those are hashed into a key, and the choice is
kept under it in `$XDG_CACHE_HOME/charrnn/layouts.json` (`~/.cache/...` by default), written
atomically. `--retime` times again and replaces the entry. A cache that cannot be read or written
is passed over: it only saves time. Under MPI, rank 0 times as before and nothing is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

from charrnn import __version__
from charrnn.config import Config
from charrnn.files.atomic import write_atomic
from charrnn.training.layout import LayoutChoice

KEPT = 256  # entries; the oldest go first
LIBRARY_SETTINGS = ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_ENABLE_INSTRUCTIONS",
                    "MKL_CBWR", "MKL_NUM_THREADS")


def cache_file(environ=os.environ) -> Path:
    """Where the choices are kept: under XDG_CACHE_HOME when it is set (an absolute path), else ~/.cache."""
    base = environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "charrnn" / "layouts.json"


def fingerprint(config: Config, vocab_size: int) -> dict:
    """What a layout choice depends on, as plain values."""
    import numpy as np

    from charrnn.compute import machine

    model = {k: v for k, v in asdict(config.model).items()
             if k not in ("pretrained_embeddings", "init", "forget_bias")}  # what sets no shape or cost
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": machine.cpu_name(), "cores": cores, "simd": machine.simd_level(), "blas": machine.blas_kernel(),
            "mkl": machine.mkl_name(), "python": platform.python_version(), "numpy": np.__version__,
            "charrnn": __version__, "settings": {name: os.environ.get(name) for name in LIBRARY_SETTINGS},
            "model": model, "vocab_size": vocab_size,
            "train": {key: getattr(config.train, key) for key in ("batch_size", "seq_len", "threads", "step_products")}}


def key_of(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def read_entries(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def recall(facts: dict, path: Path | None = None) -> LayoutChoice | None:
    """The choice kept for these facts, or None (none kept, or a damaged entry)."""
    entry = read_entries(path or cache_file()).get(key_of(facts))
    try:
        choice = LayoutChoice(**entry["choice"])
    except (TypeError, KeyError):
        return None
    valid = isinstance(choice.workers, int) and choice.workers >= 1 and isinstance(choice.forked, bool)
    return choice if valid and isinstance(choice.step_products, str) else None


def remember(facts: dict, choice: LayoutChoice, path: Path | None = None) -> bool:
    """Keep `choice` for these facts; False if the cache could not be written (nothing else changes)."""
    path = path or cache_file()
    entries = read_entries(path)
    entries.pop(key_of(facts), None)
    entries[key_of(facts)] = {"choice": asdict(choice), "facts": facts}
    entries = dict(list(entries.items())[-KEPT:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(entries, indent=1))
    except OSError:
        return False
    return True
