"""What `charrnn train` starts from: a text SOURCE that `charrnn prepare` already prepared into
data/NAME is read from there, not prepared again into the run directory."""

import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from conftest import SHAKESPEARE_LIKE

TINY = ["--hidden-size", "8", "--max-steps", "2", "--quiet", "--seq-len", "8", "--batch-size", "4"]


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(SHAKESPEARE_LIKE)
    return tmp_path


def invoke(*argv):
    result = CliRunner().invoke(cli, list(map(str, argv)))
    assert result.exit_code == 0, result.output
    return result


def test_train_reuses_the_preparation_that_prepare_just_made(here):
    invoke("prepare", "corpus.txt", "-q")
    result = invoke("train", "corpus.txt", *TINY)
    assert "data data/corpus (already prepared" in result.stderr
    assert not (here / "runs" / "corpus" / "data").exists()


@pytest.mark.parametrize("difference", ["the text changed", "other options"])
def test_a_preparation_of_other_text_or_options_is_not_reused(here, difference):
    invoke("prepare", "corpus.txt", "-q", *(["--val-frac", "0.2"] if difference == "other options" else []))
    if difference == "the text changed":
        (here / "corpus.txt").write_text(SHAKESPEARE_LIKE + "more text")
    result = invoke("train", "corpus.txt", *TINY)
    assert "data runs/corpus/data (prepared now" in result.stderr
