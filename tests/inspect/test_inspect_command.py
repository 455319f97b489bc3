"""`charrnn inspect` end to end: the states file other tools read, word-level runs, a split."""

import json

import numpy as np
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.inspect.values import KINDS
from charrnn.runs.run import load_model
from conftest import SHAKESPEARE_LIKE

TEXT = SHAKESPEARE_LIKE[:1500]


def invoke(*argv):
    return CliRunner().invoke(cli, [str(a) for a in argv])


def test_the_states_file_holds_every_value_with_the_token_ids_and_the_vocabulary(trained_run, tmp_path):
    (tmp_path / "text.txt").write_text(TEXT)
    result = invoke("inspect", trained_run, tmp_path / "text.txt", "--states", tmp_path / "states.npz", "-q")
    assert result.exit_code == 0, result.output
    model, params, vocab, _ = load_model(trained_run)
    with np.load(tmp_path / "states.npz", allow_pickle=False) as states:
        assert sorted(states.files) == sorted([f"layer{n}_{kind}" for n in (1, 2) for kind in KINDS["lstm"]]
                                              + ["token_ids", "vocabulary"])
        ids = vocab.encode(TEXT)
        assert states["token_ids"].tolist() == ids.tolist() and tuple(states["vocabulary"]) == vocab.tokens
        assert states["layer1_f"].shape == (len(TEXT), 24) and states["layer1_f"].dtype == np.float16
        top = states["layer2_h"].astype(np.float32)
        logits, _, _ = model.forward(params, ids[:, None], model.initial_state(1))
        # the top layer's h, through the head, gives the model's logits (to float16's precision)
        np.testing.assert_allclose(top @ params["head.weight"].T + params["head.bias"], logits[:, 0], atol=0.02)
        c, tanh_c = states["layer1_c"].astype(np.float32), states["layer1_tanh_c"].astype(np.float32)
        np.testing.assert_allclose(np.tanh(c), tanh_c, atol=2e-3)


def test_a_word_level_run_is_inspected_a_word_per_token(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("the cat sat on the mat . " * 300)
    assert invoke("prepare", words, "--level", "word", "--out", tmp_path / "data", "-q").exit_code == 0
    trained = invoke("train", tmp_path / "data", "--out", tmp_path / "run", "--hidden-size", "8", "--max-steps", "5",
                     "-q")
    assert trained.exit_code == 0, trained.output
    (tmp_path / "text.txt").write_text("the cat sat on the mat . the mat sat on the cat .")
    result = invoke("inspect", tmp_path / "run", tmp_path / "text.txt", "--json", "-q", "--html", tmp_path / "p.html")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tokens"] == len(load_model(tmp_path / "run")[2].encode(
        "the cat sat on the mat . the mat sat on the cat ."))
    page = (tmp_path / "p.html").read_text()
    assert '"tokens": ["the", " ", "cat", " ", "sat"' in page


def test_a_split_of_the_training_corpus_is_inspected(trained_run):
    result = invoke("inspect", trained_run, "--split", "val", "--json", "-q", "--max-chars", "100")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["tokens"] == 100 and "val" in found["model"]


def test_a_page_of_a_long_text_says_how_much_of_it_it_shows(trained_run, tmp_path, monkeypatch):
    from charrnn.cli import inspect

    monkeypatch.setattr(inspect, "PAGE_TOKENS", 100)
    (tmp_path / "text.txt").write_text(TEXT)
    result = invoke("inspect", trained_run, tmp_path / "text.txt", "--html", tmp_path / "p.html", "-q")
    assert result.exit_code == 0, result.output
    assert "(the page shows the first 100)" in (tmp_path / "p.html").read_text()

