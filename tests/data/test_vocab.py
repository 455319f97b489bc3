"""Vocabulary: deterministic order, exact round trips, strict unknowns."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from charrnn.data.vocab import UNK, UnknownTokensError, Vocabulary, dtype_for, tokenize


def char_vocab(text):
    return Vocabulary.from_counts(Counter(text), "char")


def test_char_ids_follow_code_point_order_like_sorted_set():
    vocab = char_vocab("hello world")
    assert list(vocab.tokens) == sorted(set("hello world"))
    assert vocab.unk_id is None


@given(st.text(min_size=1))
def test_char_decode_inverts_encode(text):
    vocab = char_vocab(text)
    assert vocab.decode(vocab.encode(text)) == text


@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1))
def test_word_level_decode_inverts_encode(text):
    vocab = Vocabulary.from_counts(Counter(tokenize(text, "word")), "word")
    assert vocab.decode(vocab.encode(text)) == text


def test_unknown_character_is_an_error_naming_it():
    vocab = char_vocab("abc")
    with pytest.raises(UnknownTokensError, match="'z'"):
        vocab.encode("abz")


def test_rare_words_map_to_unk_which_comes_first():
    counts = Counter(tokenize("the cat the dog the end", "word"))
    vocab = Vocabulary.from_counts(counts, "word", min_count=2)
    assert vocab.tokens[0] == UNK
    assert vocab.unk_id == 0
    assert set(vocab.tokens) == {UNK, "the", " "}
    ids = vocab.encode("the zebra")
    assert vocab.decode(ids) == f"the {UNK}"


def test_max_vocab_keeps_the_most_frequent_and_counts_what_unk_replaced():
    vocab = Vocabulary.from_counts(Counter("aaaabbbcc d"), "char", max_vocab=3)
    assert vocab.tokens == (UNK, "a", "b")
    assert vocab.counts == (4, 4, 3)


def test_json_round_trip_preserves_everything():
    vocab = Vocabulary.from_counts(Counter("abcab\n"), "char", max_vocab=3)
    again = Vocabulary.from_json(vocab.to_json())
    assert again == vocab and again.unk_id == vocab.unk_id


@pytest.mark.parametrize("size, dtype", [(65, "<u1"), (256, "<u1"), (257, "<u2"), (70000, "<u4")])
def test_id_dtype_is_the_smallest_that_fits(size, dtype):
    assert dtype_for(size) == np.dtype(dtype)
