"""Shared fixtures: small corpora written to temporary directories."""

import pytest

SHAKESPEARE_LIKE = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n\n"
    "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n\n"
) * 40


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(SHAKESPEARE_LIKE, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny model trained for a few steps on the small corpus (shared by the sample/eval tests)."""
    from click.testing import CliRunner

    from charrnn.cli import cli

    root = tmp_path_factory.mktemp("trained")
    corpus = root / "corpus.txt"
    corpus.write_text(SHAKESPEARE_LIKE, encoding="utf-8")
    result = CliRunner().invoke(cli, ["train", str(corpus), "--out", str(root / "run"), "--hidden-size", "24",
                                      "--seq-len", "16", "--batch-size", "4", "--max-steps", "30", "--quiet",
                                      "--set", "train.eval_every=15", "--set", "train.lr=0.01"])
    assert result.exit_code == 0, result.output
    return root / "run"
