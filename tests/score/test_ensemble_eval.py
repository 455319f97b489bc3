"""`charrnn eval` and `charrnn sample` of an ensemble: each member scores the text alone, the
ensemble scores the mean of their probabilities, and text is drawn from that mean."""

import json
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.data.splits import Prepared
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


def adapted_members(ensemble, monkeypatch, cores: int):
    """Every member adapting to the val split through `score_ensemble` on `cores` cores -> (the
    ensemble's score, the members', its NLL per position, the threads that scored)."""
    from charrnn.runs.run import load_models
    from charrnn.score import ensemble as scoring
    from charrnn.score.dynamic import DynamicSettings, make_adapter
    from charrnn.score.evaluate import training_tokens

    threads = []

    def noting_thread(*args):
        threads.append(threading.current_thread().name)
        return score_ids(*args)

    monkeypatch.setattr(scoring, "resolve_threads", lambda threads: cores)
    monkeypatch.setattr(scoring, "score_ids", noting_thread)
    model, params, vocab, meta = load_models(ensemble)
    ids = np.asarray(Prepared.open(Path(meta["data"])).splits["val"])
    adapters = [make_adapter(DynamicSettings(), m, p, training_tokens(meta)) for m, p in zip(model.models, params)]
    with tempfile.TemporaryDirectory() as scratch:
        into = np.full(len(ids), np.nan, np.float32)
        score, members = scoring.score_ensemble(model.models, params, ids, Method(), 20, adapters, scratch, into)
    return score, members, into, threads


def test_members_adapt_side_by_side_one_per_core_each_exactly_as_alone(trained_ensemble, monkeypatch):
    one_core = adapted_members(trained_ensemble, monkeypatch, cores=1)
    two_cores = adapted_members(trained_ensemble, monkeypatch, cores=2)
    assert one_core[3] == ["MainThread"] * 2 and all(name.startswith("charrnn-member") for name in two_cores[3])
    assert two_cores[0] == one_core[0] and two_cores[1] == one_core[1]  # bit for bit
    assert np.array_equal(two_cores[2], one_core[2], equal_nan=True)


def test_a_member_that_fails_side_by_side_stops_the_others_and_its_error_goes_on():
    from charrnn.compute.blas import OpenBLAS
    from charrnn.errors import UserError
    from charrnn.score.ensemble import adapt_side_by_side

    blas = OpenBLAS.find()
    if blas is None:
        pytest.skip("members adapt side by side only where NumPy's BLAS is OpenBLAS")
    started, stopped, reading = [], [], threading.Event()

    def member(k, cancelled):
        if k == 0:
            reading.wait(10)  # fails once member 1 reads beside it
            raise UserError("dynamic evaluation diverged")
        started.append(k)
        reading.set()
        while not cancelled.wait(0.01):  # a long read, looking at `cancelled` between blocks
            pass
        stopped.append(k)

    with pytest.raises(UserError, match="diverged"):
        adapt_side_by_side(member, 3, 2, blas)
    assert 1 in stopped and sorted(stopped) == sorted(started)  # (member 2 may be cancelled before it starts)


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
