"""The features a unit may track: each value is the text's as it stands once the character is read."""

import re

import numpy as np
import pytest

from charrnn.errors import UserError
from charrnn.inspect.features import character_features, token_features, user_feature


def test_quotes_and_brackets_count_what_the_reader_is_inside_once_the_character_is_read():
    text = 'a "b" (c [d]) e'
    found = character_features(text, [])
    assert "".join(str(int(v)) for v in found["in quotes"]) == "001100000000000"
    assert "".join(str(int(v)) for v in found["bracket depth"]) == "000000111221000"


def test_line_position_word_start_case_digits_and_newlines():
    text = "Ab 1\ncd"
    found = character_features(text, [])
    assert found["line position"].tolist() == [0, 1, 2, 3, 4, 0, 1]
    assert found["word start"].tolist() == [1, 0, 0, 0, 0, 1, 0]
    assert found["upper case"].tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert found["digit"].tolist() == [0, 0, 0, 1, 0, 0, 0]
    assert found["after newline"].tolist() == [0, 0, 0, 0, 0, 1, 0]


def test_comments_and_strings_of_code_are_marked_to_the_end_of_the_line():
    text = 'x = "a#b"  # note\ny // c'
    marked = "".join(str(int(v)) for v in character_features(text, [])["in comment or string"])
    assert marked == "0000111110011111100011110"[:len(text)]


def test_a_users_feature_is_one_on_the_characters_a_regular_expression_matches():
    name, pattern = user_feature("vowel=[aeiou]")
    assert name == "vowel" and pattern.pattern == "[aeiou]"
    assert character_features("bead", [(name, pattern)])["vowel"].tolist() == [0, 1, 1, 0]


def test_a_word_token_takes_the_value_of_its_first_character():
    found = token_features(["The", " ", "(cat", ")", "\n", "Sat"], [("cat", re.compile("cat"))])
    assert found["upper case"].tolist() == [1, 0, 0, 0, 0, 1]
    assert found["bracket depth"].tolist() == [0, 0, 1, 0, 0, 0]
    assert found["cat"].tolist() == [0, 0, 0, 0, 0, 0]  # "(cat" is valued at "("
    assert all(len(v) == 6 for v in found.values())


@pytest.mark.parametrize("spec, fragment", [("open=[ab", "does not compile"), ("vowel", "NAME=REGEX"),
                                            ("=[ab]", "NAME=REGEX"), ("v=", "NAME=REGEX")])
def test_a_bad_feature_is_one_clear_error(spec, fragment):
    with pytest.raises(UserError, match=re.escape(fragment)):
        user_feature(spec)


def test_no_text_no_values():
    assert all(len(v) == 0 for v in character_features("", []).values())
    assert all(isinstance(v, np.ndarray) for v in token_features([], []).values())
