"""Sampling: the tempered, truncated distribution, seeding, priming and the command."""

import json
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.config import ModelConfig
from charrnn.data.vocab import Vocabulary, tokenize
from charrnn.generate.sample import SamplingSettings, encode_prime, generate, next_token_probabilities
from charrnn.nn.model import RNNLM

LOGITS = np.array([2.0, 1.0, 0.5, 0.0, -1.0])
# chi-square critical values at p = 0.001 by degrees of freedom
CRITICAL = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47}


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def toy_model():
    """A model whose next-token distribution is softmax(LOGITS) whatever the input."""
    model = RNNLM(ModelConfig(cell="rnn", hidden_size=3, num_layers=1, dtype="float64"), len(LOGITS))
    params = {k: np.zeros(s) for k, s in model.param_shapes().items()}
    params["head.bias"] = LOGITS.copy()
    return model, params


def chi_square(counts, expected_probs):
    keep = expected_probs > 0
    expected = counts.sum() * expected_probs[keep]
    return float(((counts[keep] - expected) ** 2 / expected).sum()), int(keep.sum() - 1)


@pytest.mark.parametrize("settings, expected", [
    (SamplingSettings(1.0), softmax(LOGITS)),
    (SamplingSettings(0.5), softmax(LOGITS / 0.5)),
    (SamplingSettings(2.0, top_k=3), np.r_[softmax(LOGITS[:3] / 2.0), 0, 0]),
    (SamplingSettings(1.0, top_p=0.8), np.r_[softmax(LOGITS[:3]), 0, 0]),
])
def test_sample_frequencies_match_the_tempered_truncated_distribution(settings, expected):
    model, params = toy_model()
    tokens = generate(model, params, np.array([0]), 2, 20000, settings, np.random.default_rng(0))
    counts = np.bincount(tokens.ravel(), minlength=len(LOGITS)).astype(float)
    assert counts[expected == 0].sum() == 0
    statistic, df = chi_square(counts, expected)
    assert statistic < CRITICAL[df]
    wrong, wrong_df = chi_square(counts, softmax(LOGITS * 0.8))  # a slightly wrong temperature is caught
    assert wrong > CRITICAL[wrong_df]


def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p():
    probs = softmax(LOGITS)  # about 0.53, 0.20, 0.12, 0.07, 0.03
    kept = next_token_probabilities(LOGITS[None], SamplingSettings(1.0, top_p=0.5))[0]
    assert (kept > 0).tolist() == [True, False, False, False, False]
    kept = next_token_probabilities(LOGITS[None], SamplingSettings(1.0, top_p=probs[0] + 0.01))[0]
    assert (kept > 0).sum() == 2


def test_greedy_settings_agree_and_extremes_stay_finite():
    z = np.array([[3.0, 1e4, -1e4, 2.0]])
    greedy = next_token_probabilities(z, SamplingSettings(0.0))
    assert greedy.tolist() == next_token_probabilities(z, SamplingSettings(1.0, top_k=1)).tolist() == [[0, 1, 0, 0]]
    for temperature in (1e-9, 1e9):
        probs = next_token_probabilities(z, SamplingSettings(temperature))
        assert np.isfinite(probs).all() and probs.sum() == pytest.approx(1.0)


def run(*args):
    return CliRunner().invoke(cli, ["sample", *map(str, args)])


def test_same_seed_gives_the_same_text_and_another_seed_another(trained_run):
    a, b, c = (run(trained_run, "--seed", s, "-n", 80).stdout for s in (5, 5, 6))
    assert a == b and a != c


def test_prime_is_printed_before_the_continuation(trained_run):
    result = run(trained_run, "--prime", "ROMEO:", "--seed", 1, "-n", 40)
    assert result.exit_code == 0 and result.stdout.startswith("ROMEO:")
    assert len(result.stdout.rstrip("\n")) >= len("ROMEO:") + 30


def test_prime_with_unknown_characters_is_refused_naming_them(trained_run):
    result = run(trained_run, "--prime", "ROMEO: 7€")
    assert result.exit_code == 1
    assert "'7' '€'" in result.output and "Traceback" not in result.output


def test_temperature_zero_and_top_k_one_both_give_the_argmax_continuation(trained_run):
    a = run(trained_run, "--temperature", 0, "--seed", 1, "-n", 60, "--prime", "JULIET:").stdout
    b = run(trained_run, "--top-k", 1, "--seed", 2, "-n", 60, "--prime", "JULIET:").stdout
    assert a == b


def test_json_lists_every_sample_with_settings_and_mean_log_probability(trained_run):
    result = run(trained_run, "--json", "--num-samples", 3, "-n", 25, "--seed", 4, "--top-p", 0.9)
    data = json.loads(result.stdout)
    assert data["settings"]["seed"] == 4 and data["settings"]["top_p"] == 0.9
    assert len(data["samples"]) == 3 and all(s["mean_logprob"] < 0 for s in data["samples"])


def test_bad_sampling_settings_are_one_line_errors(trained_run, tmp_path):
    assert "--temperature must be" in run(trained_run, "--temperature", -1).output
    assert "--top-p must be in (0, 1]" in run(trained_run, "--top-p", 1.5).output
    missing = run(tmp_path / "nowhere")
    assert missing.exit_code == 1 and "no such run directory or checkpoint" in missing.output


def test_word_level_prime_maps_unknown_words_to_unk_and_says_which():
    vocab = Vocabulary.from_counts(Counter(tokenize("the cat sat on the mat " * 3 + "dog", "word")), "word",
                                   min_count=2)
    ids, shown, mapped = encode_prime("the zebra sat", vocab)
    assert mapped == ["zebra"] and shown == "the zebra sat"
    assert vocab.decode(ids) == "the <unk> sat"


def test_without_a_prime_generation_starts_after_an_unshown_newline():
    vocab = Vocabulary.from_counts(Counter("ab\nab"), "char")
    ids, shown, mapped = encode_prime("", vocab)
    assert vocab.tokens[ids[0]] == "\n" and shown == "" and mapped == []
