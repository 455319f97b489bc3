"""Layout choices are remembered per machine, model shape and library versions, so that a second
`charrnn train` of the same shape starts training at once; the first says what it is timing."""

import json

import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.runs import layouts
from charrnn.training import loop
from charrnn.training.layout import LayoutChoice

SHAPE = ["--hidden-size", "24", "--seq-len", "8", "--batch-size", "4", "--max-steps", "2", "--quiet",
         "--set", "train.eval_tokens=100"]


@pytest.fixture
def timings(monkeypatch):
    """Each call of the layout timing, counted."""
    calls = []
    real = loop.choose_layout

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "choose_layout", counted)
    return calls


def train(corpus, out, *extra):
    result = CliRunner().invoke(cli, ["train", str(corpus), "--out", str(out), *SHAPE, *map(str, extra)])
    assert result.exit_code == 0, result.output
    return result


def test_a_second_run_of_the_same_shape_uses_the_choice_and_says_nothing_of_timing(tmp_path, corpus_file, timings):
    first = train(corpus_file, tmp_path / "a")
    assert len(timings) == 1 and "timing how to lay out a training step" in first.stderr
    assert str(layouts.cache_file()) in first.stderr and layouts.cache_file().is_file()
    second = train(corpus_file, tmp_path / "b")
    assert len(timings) == 1 and "timing" not in second.stderr
    chosen = [(tmp_path / run / "config.yaml").read_text() for run in ("a", "b")]
    assert chosen[0] == chosen[1] and "step_products: auto" not in chosen[1]


def test_retime_and_another_shape_time_again(tmp_path, corpus_file, timings):
    train(corpus_file, tmp_path / "a")
    assert "timing" in train(corpus_file, tmp_path / "b", "--retime").stderr and len(timings) == 2
    train(corpus_file, tmp_path / "c", "--hidden-size", 32)
    assert len(timings) == 3


def test_the_cache_lives_under_xdg_cache_home_or_home(tmp_path, monkeypatch):
    assert layouts.cache_file({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "charrnn" / "layouts.json"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert layouts.cache_file({"XDG_CACHE_HOME": "relative/ignored"}) == tmp_path / "home" / ".cache" / "charrnn" / \
        "layouts.json"


@pytest.mark.parametrize("damage", ["not json", "a list", "a bad entry"])
def test_a_damaged_cache_is_passed_over_and_rewritten(tmp_path, corpus_file, timings, damage):
    facts = {"any": "thing"}
    path = layouts.cache_file()
    path.parent.mkdir(parents=True)
    content = {"not json": "{oops", "a list": "[1, 2]",
               "a bad entry": json.dumps({layouts.key_of(facts): {"choice": {"workers": "two"}}})}[damage]
    path.write_text(content)
    assert layouts.recall(facts) is None
    train(corpus_file, tmp_path / "a")
    assert len(timings) == 1 and isinstance(json.loads(path.read_text()), dict)
    assert layouts.remember(facts, LayoutChoice(2, False, "gate_major")) and \
        layouts.recall(facts) == LayoutChoice(2, False, "gate_major")


def test_a_cache_that_cannot_be_written_only_costs_time(tmp_path, corpus_file, timings, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # charrnn/ cannot be made inside a file
    train(corpus_file, tmp_path / "a")
    train(corpus_file, tmp_path / "b")
    assert len(timings) == 2 and blocker.read_text() == ""


def test_the_key_changes_with_the_machine_the_libraries_and_the_shape():
    from charrnn.config import Config

    config = Config()
    facts = layouts.fingerprint(config, 65)
    assert layouts.key_of(facts) == layouts.key_of(layouts.fingerprint(Config(), 65))
    for change in ({"cpu": "another CPU"}, {"numpy": "3.0"}, {"blas": "MKL"}, {"vocab_size": 66}):
        assert layouts.key_of({**facts, **change}) != layouts.key_of(facts)
    config.train.batch_size = 64
    assert layouts.key_of(layouts.fingerprint(config, 65)) != layouts.key_of(facts)
