"""The run directory: a run replaced with --force starts clean, keeping only the data it reads."""

import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from conftest import SHAKESPEARE_LIKE

TINY = ["--hidden-size", "8", "--max-steps", "2", "--quiet", "--seq-len", "8", "--batch-size", "4"]


def invoke(*argv):
    result = CliRunner().invoke(cli, list(map(str, argv)))
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("source", ["a text", "a prepared directory"])
def test_a_replaced_run_starts_clean(tmp_path, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(SHAKESPEARE_LIKE)
    invoke("train", "corpus.txt", "--out", "run", *TINY, "--set", "train.keep_checkpoints=2",
           "--set", "train.checkpoint_every=1")
    invoke("export", "run", "-f", "html")
    invoke("eval", "run", "corpus.txt", "--html", "run/surprisal.html", "-q")
    (tmp_path / "run" / "sample.txt").write_text("what make sample wrote of the old model")
    if source == "a text":
        invoke("train", "corpus.txt", "--out", "run", *TINY, "--force")
        expected = {"best.npz", "last.npz", "config.yaml", "vocab.json", "metrics.jsonl", "summary.json", "data"}
    else:
        invoke("prepare", "corpus.txt", "--out", "prepared", "-q")
        invoke("train", "prepared", "--out", "run", *TINY, "--force")
        expected = {"best.npz", "last.npz", "config.yaml", "vocab.json", "metrics.jsonl", "summary.json"}
    assert {p.name for p in (tmp_path / "run").iterdir()} == expected
