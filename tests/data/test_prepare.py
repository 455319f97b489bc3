"""`charrnn prepare`: splits, formats, streaming and every bad input."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.data.corpus import file_source, read_text
from charrnn.data.prepare import PrepareOptions, prepare, split_sizes
from charrnn.data.vocab import Vocabulary, tokenize


def run(*args):
    return CliRunner().invoke(cli, ["prepare", *map(str, args)])


def test_splits_are_contiguous_and_decode_to_the_corpus(corpus_file, tmp_path):
    out = tmp_path / "prep"
    result = run(corpus_file, "--out", out)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    vocab = Vocabulary.from_json((out / "vocab.json").read_text())
    parts = [np.memmap(out / f"{name}.bin", dtype=meta["dtype"], mode="r") for name in ("train", "val", "test")]
    assert [len(p) for p in parts] == [meta["tokens"][n] for n in ("train", "val", "test")]
    assert vocab.decode(np.concatenate(parts)) == corpus_file.read_text()
    assert meta["sources"][0]["sha256"] and meta["format_version"] == 1 and meta["dtype"] == "|u1"


def test_nanogpt_split_of_a_million_tokens():
    assert split_sizes(1115394, 0.1, 0.0) == {"train": 1003854, "val": 111540, "test": 0}
    assert sum(split_sizes(1000, 0.05, 0.05).values()) == 1000


def test_chunk_boundaries_do_not_change_the_result(tmp_path):
    text = "héllo wörld, ünïcode — words and more words.\n" * 50
    path = tmp_path / "u.txt"
    path.write_text(text, encoding="utf-8")
    assert "".join(read_text(file_source(path), "utf-8", "strict", chunk_bytes=7)) == text
    small = prepare([file_source(path)], tmp_path / "w", PrepareOptions(level="word"))
    assert sum(small["tokens"].values()) == len(tokenize(text, "word"))


def test_directory_corpus_reads_text_files_in_sorted_order_and_skips_binaries(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "b.txt").write_text("second part\n" * 30)
    (folder / "a.txt").write_text("first part\n" * 30)
    (folder / "image.png").write_bytes(b"\x89PNG\0\0\0")
    out = tmp_path / "prep"
    assert run(folder, "--out", out, "--val-frac", "0.1", "--test-frac", "0").exit_code == 0
    meta = json.loads((out / "meta.json").read_text())
    assert [s["path"].rsplit("/", 1)[1] for s in meta["sources"]] == ["a.txt", "b.txt"]


def test_preparing_again_is_a_no_op_and_a_different_one_needs_force(corpus_file, tmp_path):
    out = tmp_path / "prep"
    assert run(corpus_file, "--out", out).exit_code == 0
    again = run(corpus_file, "--out", out)
    assert again.exit_code == 0 and "already up to date" in again.output
    different = run(corpus_file, "--out", out, "--val-frac", "0.2")
    assert different.exit_code == 1 and "--force" in different.output
    assert run(corpus_file, "--out", out, "--val-frac", "0.2", "--force").exit_code == 0
    assert json.loads((out / "meta.json").read_text())["options"]["val_frac"] == 0.2


@pytest.mark.parametrize("content, args, message", [
    (None, [], "no such file or directory"),
    (b"", [], "the corpus is empty"),
    (b"text\0with a NUL", [], "NUL bytes"),
    (b"valid then \xff invalid", [], "byte 11 is not valid utf-8"),
    (b"abc", ["--val-frac", "0.1"], "val split would be empty"),
    (b"abc", ["--val-frac", "0.7", "--test-frac", "0.5"], "sum to less than 1"),
])
def test_bad_input_is_one_clear_line_and_leaves_nothing_behind(tmp_path, content, args, message):
    path = tmp_path / "input.txt"
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "prep"
    result = run(path, "--out", out, *args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == (["input.txt"] if content is not None else [])


def test_errors_replace_accepts_invalid_bytes(tmp_path):
    path = tmp_path / "input.txt"
    path.write_bytes(b"valid then \xff invalid\n" * 20)
    out = tmp_path / "prep"
    assert run(path, "--out", out, "--errors", "replace").exit_code == 0
    assert "\ufffd" in Vocabulary.from_json((out / "vocab.json").read_text()).tokens


def test_large_vocabulary_uses_wider_ids(tmp_path):
    path = tmp_path / "cjk.txt"
    path.write_text("".join(chr(0x4E00 + i) for i in range(600)) * 3, encoding="utf-8")
    meta = prepare([file_source(path)], tmp_path / "p", PrepareOptions())
    assert meta["dtype"] == "<u2"
