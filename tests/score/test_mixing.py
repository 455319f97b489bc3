"""`charrnn eval --ngram`: the network's predictions mixed with an adaptive n-gram model's, causally,
with the network's own figure always reported beside the mixture's."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.score import mixing
from charrnn.score.mixing import NgramSettings, OnlineMixture, mix_scores
from conftest import assert_one_line_failure

REPEATED = "thou art Romeo, wherefore? " * 60


def evaluate(*args):
    result = CliRunner().invoke(cli, ["eval", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_mixture_learns_to_trust_the_better_expert():
    probabilities = np.vstack([np.full(2000, 0.05), np.full(2000, 0.9)])
    mixed = OnlineMixture(2, 1, lr=0.02).mix(probabilities, np.zeros(2000, np.int64))
    assert mixed[0] < 0.5 and mixed[-100:].min() > 0.85


def test_no_token_is_mixed_with_weights_that_learned_from_it():
    rng = np.random.default_rng(0)
    probabilities = rng.uniform(0.01, 1, (3, 400))
    buckets = rng.integers(0, 4, 400)
    later_changed = probabilities.copy()
    later_changed[:, 200:] = rng.uniform(0.01, 1, (3, 200))
    first = OnlineMixture(3, 4, 0.05).mix(probabilities, buckets)
    second = OnlineMixture(3, 4, 0.05).mix(later_changed, buckets)
    assert np.array_equal(first[:200], second[:200]) and not np.array_equal(first[200:], second[200:])
    prior = np.exp([mixing.NETWORK_PRIOR, 0, 0]) / np.exp([mixing.NETWORK_PRIOR, 0, 0]).sum()
    assert first[0] == pytest.approx(prior @ probabilities[:, 0], rel=1e-12)  # the first token: weights untaught


def test_blocks_do_not_change_the_mixture(monkeypatch):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 5, 3000)
    nll = rng.uniform(0.5, 3, 3000).astype(np.float32)
    nll[0] = np.nan
    training = rng.integers(0, 5, 500)
    whole_nll, chunked_nll = nll.copy(), nll.copy()
    whole, _ = mix_scores(ids, whole_nll, NgramSettings(3), 5, training)
    monkeypatch.setattr(mixing, "BLOCK", 257)
    chunked, described = mix_scores(ids, chunked_nll, NgramSettings(3), 5, training)
    assert chunked.nats == pytest.approx(whole.nats, rel=1e-12) and chunked.tokens == whole.tokens == 2999
    np.testing.assert_array_equal(whole_nll, chunked_nll)
    assert described == {"order": 3, "lr": mixing.DEFAULT_LR, "primed_tokens": 500}


def test_on_a_text_the_counts_know_the_mixture_beats_the_network_which_is_reported_beside(tmp_path, trained_run):
    text = tmp_path / "repeated.txt"
    text.write_text(REPEATED)
    plain = evaluate(trained_run, text)
    mixed = evaluate(trained_run, text, "--ngram", 4)
    assert plain["ngram"] is None
    assert mixed["ngram"]["network_nats_per_token"] == plain["nats_per_token"]
    assert mixed["ngram"]["order"] == 4 and mixed["ngram"]["primed_tokens"] > 0
    assert mixed["nats_per_token"] < plain["nats_per_token"] - 0.5 and mixed["tokens"] == plain["tokens"]
    adapted = evaluate(trained_run, text, "--dynamic", "--dynamic-method", "sgd", "--ngram", 4)
    assert adapted["ngram"]["network_nats_per_token"] == evaluate(
        trained_run, text, "--dynamic", "--dynamic-method", "sgd")["nats_per_token"]


def test_the_human_report_and_the_page_say_what_was_mixed(tmp_path, trained_run):
    text = tmp_path / "repeated.txt"
    text.write_text(REPEATED)
    result = CliRunner().invoke(cli, ["eval", str(trained_run), str(text), "--ngram", "3", "--quiet",
                                      "--html", str(tmp_path / "page.html")])
    assert result.exit_code == 0, result.output
    assert "n-gram mix         order 3" in result.stdout and "the network alone" in result.stdout
    page = (tmp_path / "page.html").read_text()
    assert "order 3" in page and "network_nats_per_token" in page


def test_without_the_training_split_the_counts_start_empty(tmp_path, checkpoint_without_its_data):
    text = tmp_path / "text.txt"
    text.write_text(REPEATED)
    assert evaluate(checkpoint_without_its_data, text, "--ngram", 3)["ngram"]["primed_tokens"] == 0


@pytest.mark.parametrize("order, fragment", [("0", "--ngram must be an order from 1 to 16"),
                                             ("17", "--ngram must be an order from 1 to 16"),
                                             ("six", "--ngram")])
def test_a_bad_order_is_one_line(tmp_path, trained_run, order, fragment):
    text = tmp_path / "text.txt"
    text.write_text(REPEATED)
    result = CliRunner().invoke(cli, ["eval", str(trained_run), str(text), "--ngram", order])
    assert_one_line_failure(result.exit_code, result.stderr, fragment)


def test_a_text_too_long_for_the_counts_is_refused_before_scoring(tmp_path, trained_run, monkeypatch):
    monkeypatch.setattr(mixing, "TEXT_LIMIT", 100)
    monkeypatch.setattr(mixing, "mix_scores", None)  # never reached
    text = tmp_path / "text.txt"
    text.write_text(REPEATED)
    result = CliRunner().invoke(cli, ["eval", str(trained_run), str(text), "--ngram", "3"])
    assert_one_line_failure(result.exit_code, result.stderr, "scores at most 100 tokens")
