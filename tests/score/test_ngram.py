"""The adaptive n-gram model: interpolated Witten-Bell counts, read in blocks of any size exactly
as if token by token, never scoring a token after learning it."""

from collections import defaultdict

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn.score.ngram import AdaptiveNGram, CountTable, earlier_flagged, earlier_occurrences


class TokenByToken:
    """The definition, in dictionaries: each token scored from counts of everything read before it."""

    def __init__(self, order, vocab_size):
        self.order, self.vocab_size = order, vocab_size
        self.seen = defaultdict(int)
        self.pairs = defaultdict(int)
        self.followers = defaultdict(set)
        self.history = []

    def probability(self, token):
        p = 1.0 / self.vocab_size
        for k in range(self.order + 1):
            if len(self.history) < k:
                break
            context = tuple(self.history[len(self.history) - k:])
            total = self.seen[context]
            if total:
                distinct = len(self.followers[context])
                p = (self.pairs[context, token] + distinct * p) / (total + distinct)
        return p

    def learn(self, token):
        for k in range(min(self.order, len(self.history)) + 1):
            context = tuple(self.history[len(self.history) - k:])
            self.seen[context] += 1
            self.pairs[context, token] += 1
            self.followers[context].add(token)
        self.history.append(token)

    def read(self, tokens):
        out = []
        for token in tokens:
            out.append(self.probability(token))
            self.learn(token)
        return np.array(out)


streams = st.integers(2, 5).flatmap(lambda v: st.tuples(
    st.just(v), st.lists(st.integers(0, v - 1), max_size=40), st.lists(st.integers(0, v - 1), min_size=1, max_size=60),
    st.lists(st.integers(1, 12), min_size=1, max_size=8)))


@settings(max_examples=60, deadline=None)
@given(streams, st.integers(0, 4))
def test_blocks_of_any_size_score_what_token_by_token_reading_scores(case, order):
    vocab_size, primer, text, block_sizes = case
    references = [TokenByToken(k, vocab_size) for k in range(order + 1)]  # row k of `read` is order k's model
    for reference in references:
        reference.read(primer)
        reference.history = []
    model = AdaptiveNGram(order, vocab_size)
    model.prime(np.array(primer, np.int64), block=5)
    got, begin, i = [], 0, 0
    while begin < len(text):
        size = block_sizes[i % len(block_sizes)]
        probabilities, _ = model.read(np.array(text[begin: begin + size]))
        got.append(probabilities)
        begin, i = begin + size, i + 1
    expected = np.array([reference.read(text) for reference in references])
    np.testing.assert_allclose(np.concatenate(got, axis=1), expected, rtol=1e-12)


def test_the_probabilities_of_every_possible_next_token_sum_to_one():
    history = np.random.default_rng(3).integers(0, 6, 300)
    for order in (0, 2, 5):
        model = AdaptiveNGram(order, 6)
        model.prime(history)
        model.read(history[-order:] if order else history[:0])  # a context that has been seen
        total = sum(clone(model).read(np.array([token]))[0][-1, 0] for token in range(6))
        assert abs(total - 1) < 1e-12


def clone(model):
    copy = AdaptiveNGram(model.order, model.vocab_size)
    for name in ("seen", "distinct", "pairs"):
        setattr(copy, name, [table_copy(t) for t in getattr(model, name)])
    copy.history = model.history.copy()
    return copy


def table_copy(table):
    copy = CountTable()
    copy.keys, copy.counts = table.keys.copy(), table.counts.copy()
    return copy


def test_a_text_seen_in_training_is_predicted_far_better_than_a_uniform_guess():
    text = np.array([ord(c) - 97 for c in "thequickbrownfoxjumpsoverthelazydog" * 20])
    model = AdaptiveNGram(4, 26)
    model.prime(text)
    probability, longest = model.read(text[:100])
    assert -np.log(probability[-1, 4:]).mean() < 0.05 < np.log(26)
    assert (longest[4:] == 4).all() and longest[0] == 0


def test_the_first_tokens_of_a_stream_have_only_the_short_contexts():
    model = AdaptiveNGram(3, 4)
    model.prime(np.array([0, 1, 2, 3] * 10))
    _, longest = model.read(np.array([0, 1, 2, 3]))
    assert list(longest) == [0, 1, 2, 3]


def test_count_table_adds_repeated_keys_and_finds_missing_ones_as_zero():
    table = CountTable()
    table.add(np.array([5, 3, 5], np.uint64), np.array([1, 2, 4]))
    table.add(np.array([9, 3], np.uint64), np.array([1, 1]))
    assert list(table.lookup(np.array([3, 5, 9, 7, 0, 2 ** 63], np.uint64))) == [3, 5, 1, 0, 0, 0]


def test_earlier_occurrences_and_flags_count_only_positions_before():
    keys = np.array([4, 1, 4, 4, 1, 7], np.uint64)
    assert list(earlier_occurrences(keys)) == [0, 0, 1, 2, 1, 0]
    flags = np.array([True, False, False, True, True, True])
    assert list(earlier_flagged(keys, flags)) == [0, 0, 1, 1, 0, 0]
