"""A checkpoint is a file people download and share: the loader must refuse, with one UserError line,
anything that is not exactly what charrnn writes, and never allocate more than such a file can need.

Fuzzes a real run's checkpoint: truncations, byte flips (random ones, and every byte of the zip's
headers and directory), and crafted archives whose checksum is recomputed so that only the
structure checks can catch them. `make torture` flips many more bytes.
"""

import io
import json
import random
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.errors import UserError
from charrnn.runs import checkpoint
from charrnn.runs import run as runs
from conftest import SHAKESPEARE_LIKE, TORTURE, assert_one_line_failure


@pytest.fixture(scope="module")
def original(trained_run):
    """(bytes of the run's last.npz, its arrays by member name, its meta)."""
    data = (trained_run / "last.npz").read_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    return data, arrays, meta


def load_bytes(tmp_path, data, name="f.npz"):
    path = tmp_path / name
    path.write_bytes(data)
    return runs.read_checkpoint(path)


def craft(tmp_path, arrays, meta, name="crafted.npz", recompute=True, compressed=False):
    """Write an archive like charrnn's, with the checksum recomputed over the crafted content."""
    meta = dict(meta) if isinstance(meta, dict) else meta
    if recompute and isinstance(meta, dict):
        meta["sha256"] = checkpoint.digest(arrays, meta)
    members = {**arrays, "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    path = tmp_path / name
    (np.savez_compressed if compressed else np.savez)(path, **members)
    return path


def same(loaded, arrays, meta):
    members = checkpoint.arrays_of(loaded)
    return loaded.meta == meta and set(members) == set(arrays) and all(
        np.array_equal(members[k], arrays[k]) for k in arrays)


def test_the_original_loads(tmp_path, original):
    data, arrays, meta = original
    assert same(load_bytes(tmp_path, data), arrays, meta)


def test_every_truncation_is_refused(tmp_path, original):
    data = original[0]
    rng = random.Random(1)
    lengths = range(len(data)) if TORTURE else sorted({0, 1, 4, 30, len(data) - 1, len(data) - 22,
                                                        *rng.sample(range(len(data)), 40)})
    for length in lengths:
        with pytest.raises(UserError):
            load_bytes(tmp_path, data[:length])


def zip_structure_offsets(data: bytes) -> list[int]:
    """Every byte of the local headers, the central directory and its end record."""
    offsets = set()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            start = info.header_offset
            name_len, extra_len = struct.unpack("<HH", data[start + 26: start + 30])
            offsets.update(range(start, start + 30 + name_len + extra_len))
    directory = data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x05\x06"))
    first_entry = data.find(b"PK\x01\x02")
    offsets.update(range(first_entry, len(data)))
    return sorted(o for o in offsets if 0 <= o < len(data)) if directory >= 0 else sorted(offsets)


def test_byte_flips_are_refused_or_harmless(tmp_path, original):
    """A flipped byte either changes nothing the loader returns, or is refused as a UserError."""
    data, arrays, meta = original
    rng = random.Random(2)
    structure = zip_structure_offsets(data)
    positions = (structure + rng.sample(range(len(data)), 3000) if TORTURE else
                 rng.sample(structure, min(400, len(structure))) + rng.sample(range(len(data)), 200))
    refused = 0
    for position in positions:
        flipped = bytearray(data)
        flipped[position] ^= 1 << rng.randrange(8)
        try:
            loaded = load_bytes(tmp_path, bytes(flipped))
        except UserError:
            refused += 1
            continue
        assert same(loaded, arrays, meta), f"a flip at byte {position} changed what was loaded"
    assert refused > len(positions) // 2


CRAFTS = {
    "head of the wrong shape": lambda a, m: ({**a, "param/head.weight": a["param/head.weight"][:, :-1]}, m),
    "config names another cell": lambda a, m: (a, {**m, "config": {**m["config"], "model": {
        **m["config"]["model"], "cell": "gru"}}}),
    "config names another depth": lambda a, m: (a, {**m, "config": {**m["config"], "model": {
        **m["config"]["model"], "num_layers": 3}}}),
    "config asks for a huge model": lambda a, m: (a, {**m, "config": {**m["config"], "model": {
        **m["config"]["model"], "hidden_size": 10**9}}}),
    "config with an invalid value": lambda a, m: (a, {**m, "config": {**m["config"], "train": {
        **m["config"]["train"], "lr": -1}}}),
    "meta is a list": lambda a, m: (a, [m]),
    "meta without a vocabulary": lambda a, m: (a, {k: v for k, v in m.items() if k != "vocab"}),
    "vocabulary of the wrong type": lambda a, m: (a, {**m, "vocab": {"level": "char", "tokens": 5, "counts": []}}),
    "progress of the wrong type": lambda a, m: (a, {**m, "progress": {**m["progress"], "step": "many"}}),
    "progress with an unknown field": lambda a, m: (a, {**m, "progress": {**m["progress"], "evil": 1}}),
    "negative progress": lambda a, m: (a, {**m, "progress": {**m["progress"], "position": -1}}),
    "garbage RNG state": lambda a, m: (a, {**m, "rng": {"bit_generator": "PCG64", "state": "x"}}),
    "wrong hidden arity": lambda a, m: (a, {**m, "hidden_arity": 5}),
    "a missing optimizer array": lambda a, m: ({k: v for k, v in a.items() if not k.startswith("optim/m/")}, m),
    "an extra member": lambda a, m: ({**a, "param/extra": np.zeros(3, np.float32)}, m),
    "optimizer state as float64": lambda a, m: ({k: (v.astype(np.float64) if k.startswith("optim/v/") else v)
                                                 for k, v in a.items()}, m),
    "parameters as integers": lambda a, m: ({k: (v.astype(np.int32) if k.startswith("param/") else v)
                                             for k, v in a.items()}, m),
    "a transposed weight of the same size": lambda a, m: ({**a, "param/rnn.weight_hh_l0": np.ascontiguousarray(
        a["param/rnn.weight_hh_l0"].reshape(a["param/rnn.weight_hh_l0"].shape[::-1]))}, m),
    "a non-finite parameter": lambda a, m: ({**a, "param/head.bias": np.full_like(a["param/head.bias"], np.nan)}, m),
    "future format": lambda a, m: (a, {**m, "format_version": 3}),
}


@pytest.mark.parametrize("case", list(CRAFTS))
def test_crafted_structures_with_a_recomputed_checksum_are_refused(tmp_path, original, case):
    _, arrays, meta = original
    crafted_arrays, crafted_meta = CRAFTS[case](dict(arrays), dict(meta))
    path = craft(tmp_path, crafted_arrays, crafted_meta)
    with pytest.raises(UserError):
        runs.read_checkpoint(path)
    result = CliRunner().invoke(cli, ["sample", str(path), "--length", "5"])
    assert_one_line_failure(result.exit_code, result.stderr)


def test_compressed_members_are_refused_before_inflating(tmp_path, original):
    """A 300 MB member that deflates from well under 1 MB: refused from the directory alone."""
    _, arrays, meta = original
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("meta.npy", b"")
        with archive.open("param/head.weight.npy", "w", force_zip64=True) as member:
            chunk = bytes(1 << 20)
            for _ in range(300):
                member.write(chunk)
    assert path.stat().st_size < 2 << 20
    tracemalloc.start()
    with pytest.raises(UserError, match="compressed"):
        runs.read_checkpoint(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20
    with pytest.raises(UserError, match="compressed"):
        runs.read_checkpoint(craft(tmp_path, arrays, meta, "deflated.npz", compressed=True))


def test_declared_sizes_beyond_what_the_config_needs_are_refused_before_reading(tmp_path, original):
    data, arrays, meta = original
    path = tmp_path / "declared.npz"
    with zipfile.ZipFile(path, "w") as archive:  # stored, as charrnn writes, but a 64 MB metadata member
        with archive.open("meta.npy", "w", force_zip64=True) as member:
            member.write(np.lib.format.header_data_from_array_1_0(np.zeros(1, np.uint8)).__repr__().encode())
            for _ in range(70):
                member.write(bytes(1 << 20))
    tracemalloc.start()
    with pytest.raises(UserError, match="declares"):
        runs.read_checkpoint(path)
    assert tracemalloc.get_traced_memory()[1] < 16 << 20
    tracemalloc.stop()


def test_a_pickle_payload_never_runs(tmp_path, original):
    _, arrays, meta = original
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = np.empty(1, dtype=object)
    evil[0] = Payload()
    path = tmp_path / "evil.npz"
    members = {**arrays, "param/head.bias": evil, "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    np.savez(path, **members)
    with pytest.raises(UserError):
        runs.read_checkpoint(path)
    assert not marker.exists()


def test_many_members_or_duplicate_names_are_refused(tmp_path, original):
    data, arrays, meta = original
    many = tmp_path / "many.npz"
    with zipfile.ZipFile(many, "w") as archive:
        archive.writestr("meta.npy", data[:0])
        for index in range(10_000):
            archive.writestr(f"param/x{index}.npy", b"")
    with pytest.raises(UserError):
        runs.read_checkpoint(many)
    duplicate = tmp_path / "duplicate.npz"
    duplicate.write_bytes(data)
    with zipfile.ZipFile(duplicate, "a") as archive, pytest.warns(UserWarning):
        archive.writestr("meta.npy", b"\x93NUMPY")
    with pytest.raises(UserError, match="duplicate"):
        runs.read_checkpoint(duplicate)


def test_odd_npy_headers_are_refused(tmp_path, original):
    _, arrays, meta = original
    name = "param/head.bias"
    for variant in ("fortran", "version 3"):
        buffer = io.BytesIO()
        value = arrays[name]
        if variant == "fortran":
            np.lib.format.write_array(buffer, np.asfortranarray(np.atleast_2d(value)).reshape(-1, 1, order="F").T,
                                      version=(1, 0))
        else:
            np.lib.format.write_array(buffer, value, version=(3, 0))
        path = tmp_path / f"{variant}.npz"
        meta_bytes = io.BytesIO()
        np.lib.format.write_array(meta_bytes, np.frombuffer(json.dumps(meta).encode(), np.uint8))
        with zipfile.ZipFile(path, "w") as archive:
            for key, array in arrays.items():
                if key != name:
                    member = io.BytesIO()
                    np.lib.format.write_array(member, array)
                    archive.writestr(key + ".npy", member.getvalue())
            archive.writestr(name + ".npy", buffer.getvalue())
            archive.writestr("meta.npy", meta_bytes.getvalue())
        with pytest.raises(UserError):
            runs.read_checkpoint(path)


def test_format_1_checkpoints_still_load(tmp_path, original):
    _, arrays, meta = original
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    old = {k: v for k, v in meta.items() if k != "sha256"}
    old.update(format_version=1, params_sha256=checkpoint.params_digest(params))
    loaded = runs.read_checkpoint(craft(tmp_path, arrays, old, "v1.npz", recompute=False))
    assert all(np.array_equal(loaded.params[k], v) for k, v in params.items())


def test_every_command_refuses_a_damaged_checkpoint_in_one_line(tmp_path, original, trained_run):
    data = bytearray(original[0])
    data[len(data) // 2] ^= 0xFF
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.npz").write_bytes(bytes(data))
    text = tmp_path / "text.txt"
    text.write_text(SHAKESPEARE_LIKE)
    for argv in (["sample", run], ["eval", run, text], ["train", "--out", run, "--resume", "--quiet"]):
        result = CliRunner().invoke(cli, [str(a) for a in argv])
        assert_one_line_failure(result.exit_code, result.stderr, "not a valid charrnn checkpoint")
