"""`python -m charrnn.bench.nanogpt` (make bench-nanogpt): nanoGPT's own data layout and a budget of
iterations that fits the minutes. Its training needs torch, which only the bench venv has; what
is checked here is what charrnn writes and decides for it."""

import pickle

import numpy as np

from charrnn.bench.nanogpt import EVAL_INTERVAL, fitted, write_split


def test_the_split_is_the_one_nanogpts_prepare_writes(tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20
    corpus = tmp_path / "input.txt"
    corpus.write_text(text)
    val, meta = write_split(corpus, tmp_path / "data" / "shakespeare_char")
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text], dtype=np.uint16)
    cut = int(len(text) * 0.9)
    folder = tmp_path / "data" / "shakespeare_char"
    np.testing.assert_array_equal(np.fromfile(folder / "train.bin", dtype=np.uint16), ids[:cut])
    np.testing.assert_array_equal(np.fromfile(folder / "val.bin", dtype=np.uint16), ids[cut:])
    np.testing.assert_array_equal(val, ids[cut:])
    with open(folder / "meta.pkl", "rb") as handle:
        saved = pickle.load(handle)
    assert saved == meta == {"vocab_size": len(chars), "itos": dict(enumerate(chars)),
                             "stoi": {c: i for i, c in enumerate(chars)}}


def test_the_iterations_fit_the_minutes_with_their_estimates():
    iters, interval = fitted(30 * 60, 0.032)  # the README's CPU settings: ~32 ms an iteration here
    assert interval == EVAL_INTERVAL and iters % interval == 0
    estimates = iters // interval + 1
    assert 0.9 * 30 * 60 < (iters + estimates * 2 * 20 / 3) * 0.032 <= 30 * 60
    iters, interval = fitted(30 * 60, 6.0)  # the GPU config on a CPU: a few hundred iterations
    assert interval == 300 // 4 and iters % interval == 0 and iters * 6.0 <= 30 * 60
    assert fitted(10, 60.0) == (1, 1)  # less than an iteration's time still trains one
