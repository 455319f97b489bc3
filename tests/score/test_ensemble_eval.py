"""`charrnn eval` and `charrnn sample` of an ensemble: each member scores the text alone, the
ensemble scores the mean of their probabilities, and text is drawn from that mean."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.nn.ensemble import mean_nll
from charrnn.runs.run import load_model
from charrnn.score.eval_text import score_ids
from charrnn.score.pieces import Method

TEXT = "JULIET:\nBut soft! wherefore art thou, Romeo?\n\nROMEO:\nO light, what window breaks?\n" * 3


def invoke(*args, **kwargs):
    return CliRunner().invoke(cli, [*map(str, args)], **kwargs)


def figures(*args):
    result = invoke("eval", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("method", [["--exact"], []])  # one stream, and pieces side by side
def test_the_ensemble_scores_the_mean_of_its_members_probabilities(trained_ensemble, tmp_path, method):
    (tmp_path / "held_out.txt").write_text(TEXT)
    together = figures(trained_ensemble, tmp_path / "held_out.txt", *method)
    alone = [figures(trained_ensemble / f"member-{k}", tmp_path / "held_out.txt", *method)["nats_per_token"]
             for k in (1, 2)]
    assert together["members_nats_per_token"] == pytest.approx(alone, abs=1e-9)
    assert together["nats_per_token"] < sum(alone) / 2  # the mean of probabilities beats the mean of their logs
    if method:
        nll = []
        for k in (1, 2):
            model, params, vocab, _ = load_model(trained_ensemble / f"member-{k}")
            into = np.full(len(TEXT), np.nan, np.float32)
            score_ids(model, params, np.array(vocab.lookup(TEXT)[0]), Method(), 512, None, into)
            nll.append(into[1:])
        assert together["nats_per_token"] == pytest.approx(mean_nll(np.array(nll)).mean(), abs=1e-6)


def test_an_ensemble_adapts_each_member_and_mixes_with_an_ngram_model(trained_ensemble):
    adapted = figures(trained_ensemble, "--split", "val", "--dynamic", "--ngram", "3")
    alone = [figures(trained_ensemble / f"member-{k}", "--split", "val", "--dynamic")["nats_per_token"] for k in (1, 2)]
    assert adapted["members_nats_per_token"] == pytest.approx(alone, abs=1e-9)  # each adapts as it would alone
    assert adapted["ngram"]["order"] == 3 and adapted["ngram"]["network_nats_per_token"] < sum(alone) / 2
    table = invoke("eval", trained_ensemble, "--split", "val", "--exact")
    assert "ensemble           the mean of 2 networks' probabilities; alone" in table.stdout


def test_an_ensemble_samples_from_its_mean_prediction_reproducibly(trained_ensemble):
    first, again = (invoke("sample", trained_ensemble, "--length", 60, "--seed", 3, "--prime", "ROMEO:")
                    for _ in range(2))
    assert first.exit_code == 0, first.output
    assert first.stdout == again.stdout and first.stdout.startswith("ROMEO:") and len(first.stdout) == 6 + 60 + 1
    beam = invoke("sample", trained_ensemble, "--length", 20, "--beam", 3, "--prime", "JULIET:")
    assert beam.exit_code == 0 and beam.stdout.startswith("JULIET:")
    chat = invoke("sample", trained_ensemble, "--interactive", "--length", 10, input="O Romeo\n")
    continuation = chat.output.split("> ", 1)[1].rsplit("\n> ", 1)[0]
    assert chat.exit_code == 0 and len(continuation) == 10, chat.output


def test_plot_draws_each_member_of_an_ensemble(trained_ensemble, tmp_path):
    pytest.importorskip("matplotlib")
    result = invoke("plot", trained_ensemble, "-o", tmp_path / "curve.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "curve.png").stat().st_size > 0
