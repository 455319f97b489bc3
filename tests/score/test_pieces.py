"""The fast scoring method: pieces side by side, each warmed up on the text before it."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn.cli import cli
from charrnn.config import ModelConfig
from charrnn.nn.model import RNNLM
from charrnn.nn.products import available_layouts
from charrnn.runs.run import load_model
from charrnn.score.evaluate import StreamScorer
from charrnn.score.pieces import DEFAULT_WARMUP, EXACT_BELOW, MAX_STREAMS, Method, piece_nll, score_tokens
from conftest import SHAKESPEARE_LIKE


def toy(dtype="float64"):
    model = RNNLM(ModelConfig(cell="gru", hidden_size=8, num_layers=2, dtype=dtype), 6)
    return model, model.init_params(np.random.default_rng(0))


def exact(model, params, ids) -> float:
    scorer = StreamScorer(model, params)
    scorer.feed(ids)
    return scorer.score.nats


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 300), st.integers(1, 40), st.integers(0, 50), st.integers(1, 64))
def test_every_prediction_is_scored_exactly_once(n, streams, warmup, chunk):
    model, params = toy()
    ids = np.random.default_rng(n).integers(0, 6, n)
    positions = np.concatenate([p for p, _ in piece_nll(model, params, ids, Method(streams, warmup), chunk)])
    assert sorted(positions.tolist()) == list(range(1, n))


def test_one_stream_is_the_exact_method():
    model, params = toy()
    ids = np.random.default_rng(1).integers(0, 6, 500)
    nats, count = score_tokens(model, params, ids, Method(), chunk=37)
    assert count == 499 and nats == pytest.approx(exact(model, params, ids), rel=1e-12)


def test_a_warm_up_reaching_the_beginning_gives_the_exact_figure():
    model, params = toy()
    ids = np.random.default_rng(2).integers(0, 6, 400)
    nats, _ = score_tokens(model, params, ids, Method(streams=5, warmup=400))
    assert nats == pytest.approx(exact(model, params, ids), rel=1e-12)


def test_pieces_agree_with_the_exact_score_of_a_trained_model(trained_run):
    model, params, vocab, _ = load_model(trained_run)
    ids = vocab.lookup(SHAKESPEARE_LIKE * 3)[0]
    whole = exact(model, params, ids) / (len(ids) - 1)
    nats, count = score_tokens(model, params, ids, Method(streams=8, warmup=64))
    assert count == len(ids) - 1 and abs(nats / count - whole) < 1e-3
    cold, _ = score_tokens(model, params, ids, Method(streams=64, warmup=0))  # no warm-up: worse
    assert cold / count > nats / count


@pytest.mark.parametrize("layout", available_layouts())
def test_pieces_on_worker_threads_score_as_on_one(tmp_path, monkeypatch, layout):
    from charrnn.score import eval_text
    from charrnn.score.eval_text import nll_file, score_ids

    monkeypatch.setattr(eval_text, "reading_layout", lambda: layout)  # packed where MKL is, else batch-major
    model, params = toy()
    ids = np.random.default_rng(3).integers(0, 6, 900)
    method = Method(streams=7, warmup=16)
    into = nll_file(tmp_path, len(ids))
    score = score_ids(model, params, ids, method, chunk=32, into=into)
    nats, count = score_tokens(model, params, ids, method, chunk=32)
    assert score.tokens == count and score.nats == pytest.approx(nats, rel=1e-12)
    assert float(np.nansum(into[1:], dtype=np.float64)) == pytest.approx(nats, rel=1e-6)  # stored as float32


@pytest.mark.skipif("packed" not in available_layouts(), reason="bfloat16 products need the mkl extra")
def test_pieces_with_bfloat16_products_stay_within_the_goal_of_the_exact_score(trained_run):
    from charrnn.score.eval_text import score_ids

    model, params, vocab, _ = load_model(trained_run)
    ids = vocab.lookup(SHAKESPEARE_LIKE * 3)[0]
    whole = exact(model, params, ids) / (len(ids) - 1)
    float32 = score_ids(model, params, ids, Method(8, 64), chunk=64)
    bfloat16 = score_ids(model, params, ids, Method(8, 64, "bfloat16"), chunk=64)
    assert bfloat16.tokens == float32.tokens == len(ids) - 1
    assert bfloat16.nats != float32.nats and abs(bfloat16.nats_per_token - whole) < 1e-3


def test_bfloat16_is_chosen_only_for_a_float32_model_on_a_cpu_with_amx(monkeypatch):
    from charrnn.score import eval_text

    float32_model, float64_model = toy("float32")[0], toy("float64")[0]
    monkeypatch.setattr(eval_text, "mkl_runs_amx", lambda: False)
    assert eval_text.streams_products(float32_model) == "float32"
    monkeypatch.setattr(eval_text, "mkl_runs_amx", lambda: True)
    assert eval_text.streams_products(float64_model) == "float64"
    with_mkl = "packed" in available_layouts()
    assert eval_text.streams_products(float32_model) == ("bfloat16" if with_mkl else "float32")


@pytest.mark.parametrize("environ, amx", [({}, True), ({"MKL_ENABLE_INSTRUCTIONS": "AVX512_E4"}, True),
                                           ({"MKL_CBWR": "AUTO"}, True),
                                           ({"MKL_ENABLE_INSTRUCTIONS": "AVX2"}, False),
                                           ({"MKL_ENABLE_INSTRUCTIONS": "avx512_e3"}, False),
                                           ({"MKL_CBWR": "AVX2,STRICT"}, False)])
def test_mkl_runs_amx_only_where_no_setting_holds_it_below_amx(monkeypatch, environ, amx):
    from charrnn.compute import mkl

    monkeypatch.setattr(mkl, "cpu_has_amx", lambda: True)
    assert mkl.mkl_runs_amx(environ) is amx
    monkeypatch.setattr(mkl, "cpu_has_amx", lambda: False)
    assert mkl.mkl_runs_amx(environ) is False


def test_the_method_is_chosen_by_length():
    assert Method.automatic(10_000, 512).exact
    assert Method.automatic(2 * EXACT_BELOW * 512, 512) == Method(2, 512)
    assert Method.automatic(10 ** 9, 512) == Method(MAX_STREAMS, 512)


def test_eval_says_which_method_it_used(trained_run, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(SHAKESPEARE_LIKE)

    def figures(*args):
        result = CliRunner().invoke(cli, ["eval", str(trained_run), str(text), "--json", *map(str, args)])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    auto, exact_figures = figures(), figures("--exact")
    assert auto["method"] == exact_figures["method"] == "exact" and auto == exact_figures  # a short text
    fast = figures("--streams", 4, "--warmup", 32)
    assert (fast["method"], fast["streams"], fast["warmup"]) == ("streams", 4, 32)
    assert fast["tokens"] == exact_figures["tokens"] and fast["products"] in ("float32", "bfloat16")
    assert figures("--streams", 4, "--warmup", 32, "--no-bfloat16")["products"] == "float32"
    assert abs(fast["nats_per_token"] - exact_figures["nats_per_token"]) < 2e-3
    page = tmp_path / "page.html"
    assert CliRunner().invoke(cli, ["eval", str(trained_run), str(text), "--streams", 4, "--html",
                                    str(page)]).exit_code == 0
    assert page.read_text().count(' bits">') == exact_figures["tokens"]


def test_eval_help_states_the_default_warmup():
    result = CliRunner().invoke(cli, ["eval", "--help"])
    assert f"[default: {DEFAULT_WARMUP}]" in " ".join(result.output.split())


@pytest.mark.parametrize("args,message", [(["--exact", "--streams", "4"], "leave out --streams"),
                                          (["--dynamic", "--streams", "4"], "leave out --streams")])
def test_contradictory_methods_are_refused(trained_run, tmp_path, args, message):
    text = tmp_path / "text.txt"
    text.write_text(SHAKESPEARE_LIKE)
    result = CliRunner().invoke(cli, ["eval", str(trained_run), str(text), *args])
    assert result.exit_code == 2 and message in result.stderr
