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
