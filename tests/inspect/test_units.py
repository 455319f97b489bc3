"""Finding the units that track a feature, on a model where the answer is known.

The synthetic text is random letters a, b, c with double quotes opened and closed at random; inside
quotes, and only there, the letter d appears. Nothing near a character says whether it is quoted,
so predicting d needs one bit carried from the last quote: a model that learns the text must hold
it, and the unit finder must find a unit that follows it closely.
"""

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.inspect.report import Settings, inspect
from charrnn.inspect.units import Correlations
from charrnn.runs.run import load_model


def quoted_text(length=30_000, seed=0):
    rng = random.Random(seed)
    out, quoted = [], False
    for _ in range(length):
        if rng.random() < 0.05:
            quoted = not quoted
            out.append('"')
        elif quoted and rng.random() < 0.3:
            out.append("d")
        else:
            out.append(rng.choice("abc"))
    return "".join(out)


@pytest.fixture(scope="module")
def quotes_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("quotes")
    (root / "quotes.txt").write_text(quoted_text())
    result = CliRunner().invoke(cli, ["train", str(root / "quotes.txt"), "--out", str(root / "run"), "--cell", "lstm",
                                      "--layers", "1", "--hidden-size", "8", "--seq-len", "64", "--batch-size", "16",
                                      "--max-steps", "1500", "--quiet", "--set", "train.lr=0.03",
                                      "--set", "train.seed=1"])
    assert result.exit_code == 0, result.output
    return root


def test_a_unit_that_tracks_the_quote_state_is_found(quotes_run):
    model, params, vocab, _ = load_model(quotes_run / "run")
    text = quoted_text(5000, seed=1)
    report = inspect(model, params, vocab, vocab.encode(text), Settings(top=3))
    best = report.found["in quotes"][0]
    assert abs(best.r) > 0.85, report.found["in quotes"]
    assert {"bracket depth", "digit", "upper case"} <= set(report.constant)
    curve = dict(report.memory)
    assert curve[1] > curve["full"] + 0.05  # the quote bit is worth something ...
    assert curve[128] == pytest.approx(curve["full"], abs=0.01)  # ... and 128 characters almost always hold it


def test_the_table_and_the_json_name_the_same_units(quotes_run):
    (quotes_run / "held_out.txt").write_text(quoted_text(3000, seed=2))
    argv = ["inspect", str(quotes_run / "run"), str(quotes_run / "held_out.txt"), "-q", "--top", "2",
            "--feature", "the letter d=d"]
    table, as_json = CliRunner().invoke(cli, argv), CliRunner().invoke(cli, [*argv, "--json"])
    assert table.exit_code == 0 and as_json.exit_code == 0, table.output
    found = json.loads(as_json.stdout)
    assert set(found) >= {"units", "saturation", "memory", "gradient_decay", "exact_nats", "tokens", "model"}
    for name in ("in quotes", "the letter d"):
        first = found["units"][name][0]
        line = next(line for line in table.stdout.splitlines() if line.strip().startswith(name))
        assert f"{first['layer']} {first['kind']} {first['unit']} {first['r']:+.2f}" in line
    assert found["units"]["digit"] == [] and "digit" in found["constant_features"]
    assert [row["gate"] for row in found["saturation"]] == ["f", "i", "o"]
    assert all(0 <= row["left"] <= 1 and 0 <= row["right"] <= 1 for row in found["saturation"])
    assert [p["context"] for p in found["memory"]] == [2 ** i for i in range(11)] + ["full"]
    assert [p["lag"] for p in found["gradient_decay"]] == [2 ** i for i in range(11)]


def test_pearsons_r_accumulated_chunk_by_chunk_is_numpys():
    rng = np.random.default_rng(0)
    x, f = rng.standard_normal((500, 4)), rng.standard_normal(500)
    correlations = Correlations(["f", "constant"])
    for begin in range(0, 500, 37):
        part = slice(begin, begin + 37)
        correlations.add({(0, "h"): x[part]}, {"f": f[part], "constant": np.ones(len(x[part]))})
    r = correlations.r()[(0, "h")]
    np.testing.assert_allclose(r[:, 0], [np.corrcoef(x[:, u], f)[0, 1] for u in range(4)], atol=1e-12)
    assert np.isnan(r[:, 1]).all() and correlations.constant() == ["constant"]
    assert correlations.ranked(2)["constant"] == []
