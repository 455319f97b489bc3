"""`charrnn eval`: exact stream scoring, unknown characters, output formats."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.config import ModelConfig
from charrnn.nn.model import RNNLM
from charrnn.runs.run import load_model
from charrnn.score.evaluate import StreamScorer

TEXT = "JULIET:\nBut soft! wherefore art thou, Romeo?\n\nROMEO:\nO light, what window breaks?\n" * 3


def run(*args):
    return CliRunner().invoke(cli, ["eval", *map(str, args)])


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "held_out.txt"
    path.write_text(TEXT)
    return path


def test_the_score_does_not_depend_on_chunk_or_piece_size():
    model = RNNLM(ModelConfig(cell="lstm", hidden_size=8, num_layers=2, encoding="bow", dtype="float64"), 6)
    params = model.init_params(np.random.default_rng(0))
    ids = np.random.default_rng(1).integers(0, 6, 300)
    results = []
    for chunk, piece in [(512, 300), (7, 300), (1, 300), (64, 13)]:
        scorer = StreamScorer(model, params, chunk)
        for begin in range(0, len(ids), piece):
            scorer.feed(ids[begin: begin + piece])
        results.append((scorer.score.nats, scorer.score.tokens))
    assert all(tokens == 299 for _, tokens in results)
    np.testing.assert_allclose([nats for nats, _ in results], results[0][0], rtol=1e-12)


def test_cli_figures_agree_with_a_direct_forward_over_the_whole_text(trained_run, text_file):
    a = json.loads(run(trained_run, text_file, "--json", "--chunk", 5).stdout)
    b = json.loads(run(trained_run, text_file, "--json").stdout)
    model, params, vocab, _ = load_model(trained_run)
    ids = vocab.encode(TEXT)
    nll, _ = model.token_nll(params, ids[:-1, None], ids[1:, None], model.initial_state(1))
    direct = float(nll.astype(np.float64).mean())
    assert a["tokens"] == b["tokens"] == len(TEXT) - 1 and a["unknown"] == 0
    assert a["nats_per_token"] == pytest.approx(direct, rel=1e-5)
    assert b["nats_per_token"] == pytest.approx(direct, rel=1e-5)
    assert b["bits_per_token"] == pytest.approx(direct / math.log(2), rel=1e-5)
    assert b["perplexity"] == pytest.approx(math.exp(direct), rel=1e-5)


def test_unknown_characters_are_counted_and_skipped_or_refused_with_strict(trained_run, tmp_path):
    path = tmp_path / "odd.txt"
    path.write_text(TEXT + "7€7")
    plain = json.loads(run(trained_run, path, "--json").stdout)
    assert plain["unknown"] == 3 and plain["unknown_handling"] == "skipped"
    assert plain["tokens"] == len(TEXT) - 1
    strict = run(trained_run, path, "--strict")
    assert strict.exit_code == 1 and "'7' '€'" in strict.output


def test_word_level_unknowns_map_to_unk(tmp_path):
    corpus = tmp_path / "words.txt"
    corpus.write_text("the cat sat on the mat. " * 60 + "rare words here. ")
    runner = CliRunner()
    assert runner.invoke(cli, ["prepare", str(corpus), "--out", str(tmp_path / "w"), "--level", "word",
                               "--min-count", "2"]).exit_code == 0
    trained = runner.invoke(cli, ["train", str(tmp_path / "w"), "--out", str(tmp_path / "r"), "--hidden-size", "8",
                                  "--seq-len", "8", "--batch-size", "2", "--max-steps", "3", "--quiet"])
    assert trained.exit_code == 0, trained.output
    held = tmp_path / "held.txt"
    held.write_text("the dog sat on the mat.")
    data = json.loads(run(tmp_path / "r", held, "--json").stdout)
    assert data["unknown"] == 1 and data["unknown_handling"] == "mapped to <unk>"
    assert data["tokens"] == 11


def test_plain_output_is_a_short_table(trained_run, text_file):
    result = run(trained_run, text_file)
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["tokens", "nats", "bits", "perplexity", "method"]
    assert "bits per char" in result.stdout


def test_split_scores_the_training_corpus_held_out_part(trained_run):
    data = json.loads(run(trained_run, "--split", "val", "--json").stdout)
    assert data["tokens"] > 0 and 0 < data["nats_per_token"] < 5


def test_html_report_colours_every_predicted_character(trained_run, text_file, tmp_path):
    page = tmp_path / "surprisal.html"
    assert run(trained_run, text_file, "--html", page).exit_code == 0
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "Surprisal, bits" in html and "nats_per_token" in html
    assert html.count(' bits">') == len(TEXT) - 1
    assert "<script" not in html and "http" not in html
    assert "<th>dynamic</th><td>off</td>" in html and "None" not in html
    adapted = tmp_path / "adapted.html"
    assert run(trained_run, text_file, "--html", adapted, "--dynamic", "--dynamic-method", "sgd").exit_code == 0
    assert "<th>dynamic</th><td>method sgd, lr 0.03, decay 0.0, seq 50</td>" in adapted.read_text()


def test_eval_needs_texts_or_a_split(trained_run):
    result = run(trained_run)
    assert result.exit_code == 2 and "--split" in result.output
