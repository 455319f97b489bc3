"""Checkpoints: one `.npz` of named arrays plus a JSON metadata entry, never pickle.

Layout: `param/<name>` (the model, under the core's PyTorch-style names), `optim/<key>` (the
optimizer state), `state/<i>` (the hidden state carried between steps) and `meta`, the UTF-8
bytes of a JSON object with the format version, config, vocabulary, progress, RNG state and the
sha256 of the parameter bytes. Writes go to a temporary file in the same directory, are flushed
and fsynced, then renamed over the target, so a crash at any moment leaves the previous file whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.errors import UserError

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    hidden: list[np.ndarray]
    meta: dict


def params_digest(params: dict[str, np.ndarray]) -> str:
    """sha256 over parameter names, dtypes, shapes and bytes, in order."""
    digest = hashlib.sha256()
    for name, value in params.items():
        digest.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def save(path: Path, checkpoint: Checkpoint):
    """Write atomically: temp file in the same directory, fsync, rename."""
    meta = {**checkpoint.meta, "format_version": FORMAT_VERSION, "params_sha256": params_digest(checkpoint.params)}
    arrays = {f"param/{k}": v for k, v in checkpoint.params.items()}
    arrays.update({f"optim/{k}": v for k, v in checkpoint.optimizer.items()})
    arrays.update({f"state/{i}": v for i, v in enumerate(checkpoint.hidden)})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load(path: Path) -> Checkpoint:
    """Read and verify a checkpoint; anything wrong is a UserError that says what to do."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; train first with `charrnn train`")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as error:
        raise UserError(f"{path} is not a readable checkpoint ({type(error).__name__}); "
                        f"it may be truncated: use another checkpoint or train again") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} has checkpoint format {meta.get('format_version')!r}, this charrnn reads "
                        f"{FORMAT_VERSION}; use the charrnn version that wrote it or train again")
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    optimizer = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    hidden = [arrays[f"state/{i}"] for i in range(sum(k.startswith("state/") for k in arrays))]
    if params_digest(params) != meta.get("params_sha256"):
        raise UserError(f"{path} fails its checksum (the parameters were changed or damaged); "
                        f"use another checkpoint or train again")
    return Checkpoint(params, optimizer, hidden, meta)
