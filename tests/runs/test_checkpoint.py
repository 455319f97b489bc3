"""Checkpoint files: atomic writes, the umask, and a loader that refuses anything charrnn did not write.

The format-level tests use a small synthetic layout; `test_faults.py` fuzzes real run checkpoints.
"""

import json
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from charrnn.errors import UserError
from charrnn.runs import checkpoint

F64 = np.dtype(np.float64)


def layout(meta):
    return {"param/w": ((3,), F64), "state/0": ((2,), F64)}


def small(value=1.0, **meta):
    return checkpoint.Checkpoint({"w": np.full(3, value)}, {}, [np.zeros(2)], meta)


def test_a_checkpoint_reads_back_what_was_written(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, small(2.0, note="x"))
    saved = checkpoint.load(path, layout)
    assert saved.params["w"].tolist() == [2.0, 2.0, 2.0] and saved.meta["note"] == "x"
    assert saved.hidden[0].tolist() == [0.0, 0.0] and saved.params["w"].flags.writeable


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    checkpoint.save(path, small(progress=1))

    def crash(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, small(0.0, progress=2))
    assert checkpoint.load(path, layout).meta["progress"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.npz"]


def test_kill_9_at_any_moment_of_checkpointing_leaves_a_loadable_file(tmp_path):
    script = ("import numpy as np, sys\nfrom charrnn.runs import checkpoint\nfrom pathlib import Path\n"
              "p = Path(sys.argv[1]); i = 0\nwhile True:\n"
              "    checkpoint.save(p, checkpoint.Checkpoint({'w': np.full(200000, i, np.float32)}, {}, [], {'i': i}))\n"
              "    i += 1\n    print(i, flush=True)\n")
    path = tmp_path / "last.npz"
    process = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE)
    process.stdout.readline()
    time.sleep(0.3)
    process.kill()
    process.wait()
    saved = checkpoint.load(path, lambda meta: {"param/w": ((200000,), np.dtype(np.float32))})
    assert np.all(saved.params["w"] == saved.meta["i"])


def test_non_finite_values_are_never_written(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, small(1.0))
    before = path.read_bytes()
    with pytest.raises(ValueError, match="non-finite"):
        checkpoint.save(path, small(np.nan))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["c.npz"]


def test_checkpoints_follow_the_umask_like_every_other_run_file(tmp_path):
    previous = os.umask(0o022)
    try:
        checkpoint.save(tmp_path / "c.npz", small())
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "c.npz").stat().st_mode) == 0o644


def test_truncated_tampered_and_future_checkpoints_are_refused(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, small())
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a valid charrnn checkpoint"):
        checkpoint.load(tmp_path / "cut.npz", layout)
    saved = checkpoint.load(path, layout)
    arrays = {"param/w": saved.params["w"] + 1, "state/0": saved.hidden[0],
              "meta": np.frombuffer(json.dumps(saved.meta).encode(), np.uint8)}
    np.savez(tmp_path / "tampered.npz", **arrays)
    with pytest.raises(UserError, match="fails its checksum"):
        checkpoint.load(tmp_path / "tampered.npz", layout)
    arrays["meta"] = np.frombuffer(json.dumps({**saved.meta, "format_version": 99}).encode(), np.uint8)
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(UserError, match="checkpoint format 99"):
        checkpoint.load(tmp_path / "future.npz", layout)


def test_the_checksum_covers_every_array_not_only_the_parameters(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, small())
    saved = checkpoint.load(path, layout)
    arrays = {"param/w": saved.params["w"], "state/0": saved.hidden[0] + 1,
              "meta": np.frombuffer(json.dumps(saved.meta).encode(), np.uint8)}
    np.savez(tmp_path / "state-changed.npz", **arrays)
    with pytest.raises(UserError, match="fails its checksum"):
        checkpoint.load(tmp_path / "state-changed.npz", layout)


def test_arrays_are_checked_against_the_layout_before_their_data_is_read(tmp_path):
    path = tmp_path / "c.npz"
    big = checkpoint.Checkpoint({"w": np.ones(3)}, {}, [np.zeros(2)], {})
    checkpoint.save(path, big)
    with pytest.raises(UserError, match=r"shape \(3,\) where \(4,\)"):
        checkpoint.load(path, lambda meta: {"param/w": ((4,), F64), "state/0": ((2,), F64)})
    with pytest.raises(UserError, match="float64 where float32"):
        checkpoint.load(path, lambda meta: {"param/w": ((3,), np.dtype(np.float32)), "state/0": ((2,), F64)})
    with pytest.raises(UserError, match="do not match its config"):
        checkpoint.load(path, lambda meta: {"param/w": ((3,), F64)})
    with pytest.raises(UserError, match="needs .* bytes of arrays"):
        checkpoint.load(path, lambda meta: {"param/w": ((3,), F64), "state/0": ((10**9,), F64)})


def test_a_directory_or_fifo_is_not_a_checkpoint(tmp_path):
    os.mkfifo(tmp_path / "pipe.npz")
    with pytest.raises(UserError, match="not a regular file"):
        checkpoint.load(tmp_path / "pipe.npz", layout)
    with pytest.raises(UserError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "missing.npz", layout)
