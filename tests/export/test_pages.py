"""The pages charrnn writes, loaded in a real headless Chromium (installed by .ci/run).

The surprisal page of `charrnn eval --html` must show the whole text, unknown characters included
and marked, coloured by surprisal, and stay readable on the darkest colours.
"""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.runs.run import load_model
from charrnn.score.report import SCALE_BITS, span

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (.ci/run installs it)")


def chromium(*args, timeout=60):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def page(tmp_path, trained_run):
    text = "ROMEO:\nBut soft, what light through runs/corpus breaks? ~ JULIET!\n"
    (tmp_path / "text.txt").write_text(text)
    result = CliRunner().invoke(cli, ["eval", str(trained_run), str(tmp_path / "text.txt"),
                                      "--html", str(tmp_path / "page.html")])
    assert result.exit_code == 0, result.output
    return tmp_path / "page.html", text


@needs_browser
def test_the_surprisal_page_shows_the_whole_text_with_unknown_characters_marked(page, trained_run):
    path, text = page
    vocab = load_model(trained_run)[2]
    dom = chromium("--dump-dom", path.as_uri()).stdout
    shown = re.search(r'<div class="text">(.*?)</div>', dom, re.S)[1]
    plain = re.sub(r"<[^>]+>", "", shown).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    assert plain == text
    unknown = [c for c in text if c not in vocab.index]
    assert "/" in unknown and "~" in unknown
    assert re.findall(r'<span class="unknown"[^>]*>(.*?)</span>', shown) == unknown


@needs_browser
def test_the_surprisal_page_renders_colours_and_marks(page, tmp_path):
    image = pytest.importorskip("matplotlib.image")
    path, _ = page
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=900,500", path.as_uri())
    pixels = (image.imread(shot)[..., :3] * 255).round().astype(int)
    grey = np.all(pixels == 187, axis=-1).sum()  # the unknown-token background, #bbb
    warm = ((pixels[..., 0] > 200) & (pixels[..., 2] < 150)).sum()  # yellow to red surprisal backgrounds
    assert grey > 50 and warm > 500


def test_text_on_the_darkest_colours_is_white():
    assert "color:#fff" in span("x", SCALE_BITS, False)
    assert "color:#fff" not in span("x", 1.0, False)
    assert 'class="unknown"' in span("~", float("nan"), True)


@needs_browser
def test_an_ensembles_surprisal_page_lists_each_networks_figure(trained_ensemble, tmp_path):
    text = "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n"
    (tmp_path / "text.txt").write_text(text)
    result = CliRunner().invoke(cli, ["eval", str(trained_ensemble), str(tmp_path / "text.txt"), "--json",
                                      "--html", str(tmp_path / "page.html")])
    assert result.exit_code == 0, result.output
    alone = ", ".join(f"{figure:.4f}" for figure in json.loads(result.stdout)["members_nats_per_token"])
    dom = chromium("--dump-dom", (tmp_path / "page.html").as_uri()).stdout
    assert alone in dom and "members_nats_per_token" in dom
    plain = re.sub(r"<[^>]+>", "", re.search(r'<div class="text">(.*?)</div>', dom, re.S)[1])
    assert plain == text
