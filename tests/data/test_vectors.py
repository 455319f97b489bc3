"""Pretrained word vectors (`model.pretrained_embeddings`): read, mapped onto the vocabulary,
optionally frozen; every malformed file refused in one line."""

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.runs.run import load_model
from conftest import assert_one_line_failure

WORDS = ("the cat sat on the mat and the dog sat on the log while the bird sang " * 40).strip()


@pytest.fixture
def words(tmp_path):
    text = tmp_path / "words.txt"
    text.write_text(WORDS)
    result = CliRunner().invoke(cli, ["prepare", str(text), "--level", "word", "--out", str(tmp_path / "data"), "-q"])
    assert result.exit_code == 0, result.output
    return tmp_path / "data"


def vectors_file(path, rows, header=True, dim=5):
    lines = [f"{len(rows)} {dim}"] if header else []
    lines += [f"{word} " + " ".join(f"{v:.6f}" for v in values) for word, values in rows.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train(*args):
    return CliRunner().invoke(cli, ["train", *map(str, args), "--quiet", "--batch-size", "2", "--seq-len", "8",
                                    "--set", "model.encoding=embedding", "--hidden-size", "8", "--layers", "1"])


@pytest.mark.parametrize("freeze", [False, True])
def test_vectors_start_the_embedding_table_and_freezing_keeps_them(tmp_path, words, freeze):
    rng = np.random.default_rng(0)
    rows = {w: rng.standard_normal(5) for w in ("cat", "dog", "bird", "unicorn")}
    path = vectors_file(tmp_path / "vectors.txt", rows)
    out = tmp_path / "run"
    result = train(words, "--out", out, "--max-steps", 10, "--lr", "0.05", "--set", f"model.pretrained_embeddings={path}",
                   "--set", f"model.freeze_embeddings={str(freeze).lower()}")
    assert result.exit_code == 0, result.output
    assert "3 of" in result.stderr and "dim 5" in result.stderr and (", frozen" in result.stderr) == freeze
    model, params, vocab, _ = load_model(out / "last.npz")
    assert model.config.embedding_dim == 5
    for word in ("cat", "dog", "bird"):
        row = params["embedding.weight"][vocab.index[word]]
        assert np.allclose(row, rows[word], atol=1e-6) == freeze


def test_a_file_without_a_header_works_too(tmp_path, words):
    path = vectors_file(tmp_path / "plain.txt", {"cat": np.ones(3), "mat": np.zeros(3)}, header=False, dim=3)
    result = train(words, "--out", tmp_path / "run", "--max-steps", 2, "--set", f"model.pretrained_embeddings={path}")
    assert result.exit_code == 0, result.output
    assert "2 of" in result.stderr and "dim 3" in result.stderr


BAD = {
    "ragged": (b"cat 1 2 3\ndog 1 2\n", "line 2 has 2 numbers where 3"),
    "header disagrees": (b"2 4\ncat 1 2 3\n", "line 2 has 3 numbers where 4"),
    "not a number": (b"cat 1 2 x3\n", "'x3' is not a number"),
    "not finite": (b"cat 1 nan 3\n", "not finite"),
    "not utf-8": (b"caf\xe9 1 2 3\n", "line 1 is not UTF-8"),
    "empty": (b"", "holds no word vectors"),
    "a word without numbers": (b"cat\n", "line 1 holds a word but no numbers"),
    "no line breaks": (b"cat " + b"0.5 " * 400_000, "line 1 is longer than 1 MiB"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_malformed_vectors_file_is_one_line(tmp_path, words, case):
    content, fragment = BAD[case]
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    result = train(words, "--out", tmp_path / "run", "--max-steps", 2, "--set", f"model.pretrained_embeddings={path}")
    assert_one_line_failure(result.exit_code, result.stderr, fragment)
    assert not (tmp_path / "run").exists()


def test_tab_separated_vectors_are_read_and_a_word_with_spaces_keeps_them(tmp_path, words):
    path = tmp_path / "tabs.tsv"
    path.write_text("cat\t1\t2\t3\nthe dog 4 5 6\nmat 7 8 9\n", encoding="utf-8")
    from charrnn.data.splits import Prepared
    from charrnn.data.vectors import read_vectors

    vocab = Prepared.open(words).vocab
    found = read_vectors(path, vocab)
    assert found.dim == 3 and [vocab.tokens[i] for i in found.ids] == sorted(["cat", "mat"], key=vocab.index.get)
    assert np.array_equal(found.rows[list(found.ids).index(vocab.index["cat"])], [1, 2, 3])


def test_vectors_need_the_embedding_encoding_and_an_existing_file(tmp_path, words):
    result = CliRunner().invoke(cli, ["train", str(words), "--out", str(tmp_path / "run"),
                                      "--set", f"model.pretrained_embeddings={tmp_path / 'v.txt'}"])
    assert_one_line_failure(result.exit_code, result.stderr, "need model.encoding: embedding")
    result = train(words, "--out", tmp_path / "run", "--set", f"model.pretrained_embeddings={tmp_path / 'missing.txt'}")
    assert_one_line_failure(result.exit_code, result.stderr, "is not a file")
