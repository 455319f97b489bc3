"""Checkpoints: one `.npz` of named arrays plus a JSON metadata entry, never pickle.

Layout: `param/<name>` (the model, under the core's PyTorch-style names), `optim/<key>` (the
optimizer state), `state/<i>` (the hidden state carried between steps), with `train.average`
`average/<name>` (the averaged weights, which eval, sample and export use once averaging has
begun: `Checkpoint.model_params`), and `meta`, the UTF-8
bytes of a JSON object with the format version, config, vocabulary, progress, RNG state and a
sha256 over every array and the rest of the metadata. Writes go through `files.atomic_writer`,
so a crash at any moment leaves the previous file whole; non-finite values are never written.

A checkpoint is a file people download and share, so `load` trusts nothing in it. It reads the
zip's directory first and refuses more members, other names, compressed members or declared
sizes than the metadata's own config implies (`layout(meta)`, supplied by the caller); it reads
each `.npy` header and checks shape and dtype before reading the data, and only then the bytes.
Whatever the zip or `.npy` readers raise on malformed input becomes one `UserError`.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from charrnn.errors import UserError
from charrnn.files.atomic import atomic_writer
from charrnn.training.optim import all_finite

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: the checksum covers the parameters only
MAX_META_BYTES = 64 << 20
MAX_HEADER_BYTES = 1 << 16  # an .npy header is well under this
Layout = dict[str, tuple[tuple[int, ...], np.dtype]]


@dataclass
class Checkpoint:
    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    hidden: list[np.ndarray]
    meta: dict
    average: dict[str, np.ndarray] | None = None  # the averaged weights, with train.average

    @property
    def model_params(self) -> dict[str, np.ndarray]:
        """The weights to use the model by: the average once training began it, else the parameters."""
        return self.average if self.average is not None and self.meta["progress"].get("averaged") else self.params


def arrays_of(checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    arrays = {f"param/{k}": v for k, v in checkpoint.params.items()}
    arrays.update({f"optim/{k}": v for k, v in checkpoint.optimizer.items()})
    arrays.update({f"state/{i}": v for i, v in enumerate(checkpoint.hidden)})
    arrays.update({f"average/{k}": v for k, v in (checkpoint.average or {}).items()})
    return arrays


def digest(arrays: dict[str, np.ndarray], meta: dict) -> str:
    """sha256 over every array (name, dtype, shape, bytes, in name order) and the metadata without it."""
    hasher = hashlib.sha256()
    for name in sorted(arrays):
        value = arrays[name]
        hasher.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
        hasher.update(np.ascontiguousarray(value).tobytes())
    rest = {k: v for k, v in meta.items() if k != "sha256"}
    hasher.update(json.dumps(rest, sort_keys=True).encode("utf-8"))
    return hasher.hexdigest()


def params_digest(params: dict[str, np.ndarray]) -> str:
    """Format 1's checksum: parameter names, dtypes, shapes and bytes, in order."""
    hasher = hashlib.sha256()
    for name, value in params.items():
        hasher.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
        hasher.update(np.ascontiguousarray(value).tobytes())
    return hasher.hexdigest()


def save(path: Path, checkpoint: Checkpoint):
    """Write atomically (temporary file, fsync, rename); refuse non-finite values."""
    arrays = arrays_of(checkpoint)
    if not all_finite(arrays.values()):
        raise ValueError("refusing to write a checkpoint with non-finite values")
    meta = {**checkpoint.meta, "format_version": FORMAT_VERSION}
    meta["sha256"] = digest(arrays, meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as handle:
        np.savez(handle, **arrays)


def load(path: Path, layout: Callable[[dict], Layout]) -> Checkpoint:
    """Read and verify a checkpoint; `layout(meta)` names every array it must hold, with shape and
    dtype, or raises UserError for metadata that does not describe a charrnn model."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"no checkpoint at {path}; train first with `charrnn train`")
    if not path.is_file():
        raise UserError(f"{path} is not a regular file; give a checkpoint (.npz) or a run directory")
    with open(path, "rb") as handle:  # permission errors surface as themselves
        try:
            with zipfile.ZipFile(handle) as archive:
                return read_archive(archive, path, layout)
        except UserError:
            raise
        except Exception as error:  # anything the zip or .npy readers raise on malformed input
            raise UserError(f"{path} is not a valid charrnn checkpoint ({type(error).__name__}: "
                            f"{str(error)[:80]}); use another checkpoint or train again") from None


def refuse(path: Path, why: str):
    raise UserError(f"{path} is not a valid charrnn checkpoint ({why}); use another checkpoint or train again")


def read_archive(archive: zipfile.ZipFile, path: Path, layout: Callable[[dict], Layout]) -> Checkpoint:
    members = {info.filename: info for info in archive.infolist()}
    if len(members) != len(archive.infolist()):
        refuse(path, "duplicate members")
    if any(info.compress_type != zipfile.ZIP_STORED for info in members.values()):
        refuse(path, "compressed members; charrnn writes none")
    if "meta.npy" not in members:
        refuse(path, "no metadata")
    meta_bytes = read_member(archive, members["meta.npy"], None, np.dtype(np.uint8), path)
    try:
        meta = json.loads(meta_bytes.tobytes().decode("utf-8"))
    except ValueError:
        refuse(path, "metadata is not JSON")
    if not isinstance(meta, dict):
        refuse(path, "metadata is not a JSON object")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise UserError(f"{path} has checkpoint format {version!r}, this charrnn reads "
                        f"{', '.join(map(str, READABLE_VERSIONS))}; use the charrnn version that wrote it or train again")
    expected = layout(meta)
    names = {name[: -len(".npy")] for name in members if name != "meta.npy" and name.endswith(".npy")}
    if len(names) != len(members) - 1 or names != set(expected):
        odd = sorted(names ^ set(expected)) or sorted(n for n in members if not n.endswith(".npy"))
        refuse(path, f"its arrays do not match its config: {', '.join(odd[:3])}")
    need = sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in expected.values())
    if need > path.stat().st_size:
        refuse(path, f"its config needs {need:,} bytes of arrays but the file has {path.stat().st_size:,}")
    arrays = {name: read_member(archive, members[name + ".npy"], *expected[name], path) for name in expected}
    if version == 1:
        params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
        intact = params_digest(params) == meta.get("params_sha256")
    else:
        intact = digest(arrays, meta) == meta.get("sha256")
    if not intact:
        raise UserError(f"{path} fails its checksum (it was changed or damaged); use another checkpoint or train again")
    if not all_finite(arrays.values()):
        refuse(path, "non-finite values")
    average = {k[len("average/"):]: v for k, v in arrays.items() if k.startswith("average/")}
    return Checkpoint({k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")},
                      {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")},
                      [arrays[f"state/{i}"] for i in range(sum(k.startswith("state/") for k in arrays))], meta,
                      average or None)


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, shape: tuple[int, ...] | None,
                dtype: np.dtype, path: Path) -> np.ndarray:
    """One `.npy` member, its header checked against `shape` (None: any 1-D up to MAX_META_BYTES)
    and `dtype` before its data is read."""
    limit = MAX_META_BYTES if shape is None else int(np.prod(shape)) * dtype.itemsize
    if info.file_size > limit + MAX_HEADER_BYTES:
        refuse(path, f"{info.filename} declares {info.file_size:,} bytes")
    with archive.open(info) as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            found_shape, fortran, found_dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            found_shape, fortran, found_dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            refuse(path, f"{info.filename} has .npy version {version}")
        if fortran or found_dtype != dtype or found_dtype.hasobject:
            refuse(path, f"{info.filename} is {found_dtype} where {dtype} was expected")
        if shape is None:
            if len(found_shape) != 1 or found_shape[0] > MAX_META_BYTES:
                refuse(path, "metadata of an unexpected shape")
            shape = found_shape
        elif tuple(found_shape) != tuple(shape):
            refuse(path, f"{info.filename} has shape {tuple(found_shape)} where {tuple(shape)} was expected")
        array = np.empty(shape, dtype)
        view = memoryview(array.reshape(-1).view(np.uint8)) if array.size else memoryview(b"")
        filled = 0
        while filled < len(view):
            count = handle.readinto(view[filled:])
            if not count:
                refuse(path, f"{info.filename} is truncated")
            filled += count
    return array
