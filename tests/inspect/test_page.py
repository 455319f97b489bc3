"""The page of `charrnn inspect --html`, in a real headless Chromium (installed by .ci/run): the text
coloured by the unit picked, the buttons that jump to a found unit, and on hover the model's five
likeliest next tokens, which must be those NumPy computes."""

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.nn.head import log_softmax
from charrnn.runs.run import load_model
from conftest import SHAKESPEARE_LIKE, needs_browser

TEXT = SHAKESPEARE_LIKE[:700]


@needs_browser
def test_a_unit_is_picked_a_found_unit_is_jumped_to_and_a_hover_shows_the_top_five(trained_run, tmp_path, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    (tmp_path / "text.txt").write_text(TEXT)
    result = CliRunner().invoke(cli, ["inspect", str(trained_run), str(tmp_path / "text.txt"), "-q",
                                      "--html", str(tmp_path / "cells.html"), "--page-kinds", "h,c,f",
                                      "--unit", "1:h:3", "--feature", "vowel=[aeiou]"])
    assert result.exit_code == 0, result.output
    browser.set_window_size(1100, 800)
    browser.get((tmp_path / "cells.html").as_uri())
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    body = browser.find_element(By.TAG_NAME, "body")
    assert body.get_attribute("data-shown") == "1/h/3"
    spans = browser.find_elements(By.CSS_SELECTOR, "#text span")
    assert browser.execute_script("return document.getElementById('text').textContent") == TEXT

    Select(browser.find_element(By.ID, "layer")).select_by_value("2")
    Select(browser.find_element(By.ID, "kind")).select_by_value("f")
    unit = browser.find_element(By.ID, "unit")
    unit.clear()
    unit.send_keys("7")
    WebDriverWait(browser, 10).until(lambda b: body.get_attribute("data-shown") == "2/f/7")
    colours = browser.execute_script("return [...document.querySelectorAll('#text span')].map("
                                     "s => s.style.backgroundColor)")
    assert len(set(colours)) > 10  # coloured by the forget gate's value

    buttons = browser.find_elements(By.CSS_SELECTOR, "#found button")
    vowel = next(b for b in buttons if b.text.startswith("vowel:"))
    vowel.click()
    layer, kind, number = body.get_attribute("data-shown").split("/")
    assert f"layer {layer} " in vowel.text and vowel.text.split(",")[0].endswith(f" {number}")

    model, params, vocab, _ = load_model(trained_run)
    ids = vocab.encode(TEXT)
    logits, _, _ = model.forward(params, ids[:, None], model.initial_state(1))
    t = 60
    ActionChains(browser).move_to_element(spans[t]).perform()
    tip = browser.find_element(By.ID, "tip")
    WebDriverWait(browser, 10).until(lambda b: tip.is_displayed() and tip.get_attribute("data-t") == str(t))
    rows = [row.find_elements(By.TAG_NAME, "td") for row in tip.find_elements(By.TAG_NAME, "tr")]
    probabilities = np.exp(log_softmax(logits[t, 0].astype(np.float64)))
    expected = np.argsort(-probabilities, kind="stable")[:5]
    assert [cells[0].get_attribute("textContent") for cells in rows] == [
        json.dumps(vocab.tokens[i])[1:-1].replace(" ", "\u2423") for i in expected]  # a space shown as ␣
    for cells, i in zip(rows, expected):
        assert float(cells[1].text.rstrip("%")) == pytest.approx(100 * probabilities[i], abs=0.25)
    assert browser.save_screenshot(str(tmp_path / "inspect.png"))
    if shot := os.environ.get("CHARRNN_SCREENSHOT_INSPECT"):  # to look at it
        shutil.copy(tmp_path / "inspect.png", shot)
