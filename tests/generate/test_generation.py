"""Stop strings, best-of-N, beam search and the interactive prompt, through `charrnn sample`."""

import json
import subprocess
import sys

from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from charrnn.cli import cli
from charrnn.generate.stops import StopScanner


def sample(run, *args) -> dict:
    result = CliRunner().invoke(cli, ["sample", str(run), "--json", *map(str, args)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@given(st.lists(st.text("ab\n", max_size=3), max_size=12), st.lists(st.text("ab\n", min_size=1, max_size=3),
                                                                     min_size=1, max_size=3))
def test_a_stop_string_cuts_the_text_and_is_never_shown_in_part(pieces, stops):
    scanner = StopScanner(tuple(stops))
    shown = "".join(scanner.feed(piece) for piece in pieces) + scanner.release()
    expected, stopped = "", False
    for piece in pieces:  # generation ends with the token that completes a stop string
        expected += piece
        cuts = [i for i in (expected.find(s) for s in stops) if i >= 0]
        if cuts:
            expected, stopped = expected[: min(cuts)], True
            break
    assert shown == scanner.text == expected
    assert scanner.stopped == stopped


def test_sampling_stops_at_a_stop_string_and_leaves_it_out(trained_run):
    free = sample(trained_run, "--prime", "ROMEO:", "--length", 300, "--seed", 4)["samples"][0]
    stopped = sample(trained_run, "--prime", "ROMEO:", "--length", 300, "--seed", 4, "--stop", "e", "--stop", "xyz")
    text = stopped["samples"][0]
    assert text["finish_reason"] == "stop" and "e" not in text["text"][len("ROMEO:"):]
    assert free["text"].startswith(text["text"] + "e")
    assert stopped["settings"]["stop"] == ["e", "xyz"]


def test_best_of_keeps_the_most_likely_of_the_same_draws(trained_run):
    drawn = sample(trained_run, "--length", 40, "--seed", 9, "--num-samples", 5)["samples"]
    best = sample(trained_run, "--length", 40, "--seed", 9, "--best-of", 5)["samples"]
    assert len(best) == 1 and best[0] == max(drawn, key=lambda s: s["mean_logprob"])


def test_beam_1_is_greedy_and_wider_beams_are_never_less_likely(trained_run):
    greedy = sample(trained_run, "--prime", "JULIET:", "--length", 30, "--temperature", 0)["samples"][0]
    assert sample(trained_run, "--prime", "JULIET:", "--length", 30, "--beam", 1)["samples"][0]["text"] == greedy["text"]
    for width in (2, 4, 8):
        found = sample(trained_run, "--prime", "JULIET:", "--length", 30, "--beam", width)["samples"][0]
        # (the beam's batched products round differently from a single stream's, in float32)
        assert found["tokens"] == 30 and found["mean_logprob"] >= greedy["mean_logprob"] - 1e-6


def test_beam_search_takes_one_continuation(trained_run):
    result = CliRunner().invoke(cli, ["sample", str(trained_run), "--beam", "4", "--num-samples", "2"])
    assert result.exit_code == 1 and "--beam search gives one continuation" in result.stderr


def test_the_interactive_prompt_remembers_everything_said(trained_run):
    session = "ROMEO:\n/temperature 0\n/length 20\nJULIET:\n/bogus\n"
    result = subprocess.run([sys.executable, "-m", "charrnn", "sample", str(trained_run), "--interactive",
                             "--length", "25", "--seed", "3"], input=session, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "unknown command /bogus" in result.stderr
    # the first turn is `charrnn sample` after a newline (where a text begins); the second continues all of it
    opening = sample(trained_run, "--prime", "\nROMEO:", "--length", 25, "--seed", 3)["samples"][0]["completion"]
    assert result.stdout.startswith(opening + "\n")
    said = "\nROMEO:" + opening + "JULIET:"
    following = sample(trained_run, "--prime", said, "--length", 20, "--temperature", 0)["samples"][0]["completion"]
    assert result.stdout == opening + "\n" + following + "\n"
