"""Features of a text, one value per token, to find the units that track them.

Built in, as Karpathy, Johnson and Fei-Fei looked for them ("Visualizing and Understanding
Recurrent Networks", 2016): inside double quotes, bracket depth (round, square and curly),
position in the line, the start of a word, an upper-case letter, a digit, just after a
newline, and, for code, inside a comment (from `#` or `//` to the end of the line) or a string
(single or double quotes on one line). A user's feature is a regular expression: 1 on the
characters of a match, 0 elsewhere. A token (a word token of a word-level model) takes the
value of its first character. Each value is the text's as it stands once the character is read
(the state the model holds then): an opening quote or bracket is inside, a closing one outside.
"""

from __future__ import annotations

import re

import numpy as np

from charrnn.errors import UserError

BUILT_IN = ("in quotes", "bracket depth", "line position", "word start", "upper case", "digit", "after newline",
            "in comment or string")
CODE_SPANS = re.compile(r"#[^\n]*|//[^\n]*|\"(?:[^\"\\\n]|\\.)*\"?|'(?:[^'\\\n]|\\.)*'?")
OPENING, CLOSING = "([{", ")]}"


def user_feature(spec: str) -> tuple[str, re.Pattern]:
    """'NAME=REGEX' -> (name, compiled pattern), or a UserError that says what is wrong."""
    name, equals, pattern = spec.partition("=")
    if not equals or not name.strip() or not pattern:
        raise UserError(f"--feature {spec!r} must look like NAME=REGEX, e.g. vowel=[aeiou]")
    try:
        return name.strip(), re.compile(pattern)
    except re.error as error:
        raise UserError(f"--feature {name.strip()}: the regular expression {pattern!r} does not compile "
                        f"({error})") from None


def character_features(text: str, extra: list[tuple[str, re.Pattern]]) -> dict[str, np.ndarray]:
    """text -> {feature name: a value per character (len(text),) float32}."""
    n = len(text)
    quotes, depth, column = np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32)
    inside, level, at = False, 0, 0
    for i, char in enumerate(text):  # each value as it stands once the character is read
        if char == '"':
            inside = not inside  # an opening quote is inside, a closing one outside
        quotes[i] = inside
        if char in OPENING:
            level += 1
        elif char in CLOSING:
            level = max(0, level - 1)
        depth[i] = level
        column[i] = at
        at = 0 if char == "\n" else at + 1
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) if n else np.zeros(0, np.uint32)
    letters = np.array([c.isalpha() for c in text], dtype=bool)
    found = {"in quotes": quotes, "bracket depth": depth, "line position": column,
             "word start": (letters & ~np.concatenate([[False], letters[:-1]])).astype(np.float32),
             "upper case": np.array([c.isupper() for c in text], dtype=np.float32),
             "digit": ((codes >= ord("0")) & (codes <= ord("9"))).astype(np.float32),
             "after newline": np.concatenate([[0.0], (codes[:-1] == ord("\n"))]).astype(np.float32)
             if n else np.zeros(0, np.float32),
             "in comment or string": spans(text, CODE_SPANS)}
    for name, pattern in extra:
        found[name] = spans(text, pattern)
    return found


def spans(text: str, pattern: re.Pattern) -> np.ndarray:
    """1 on the characters of each match of `pattern`, 0 elsewhere."""
    marked = np.zeros(len(text), np.float32)
    for match in pattern.finditer(text):
        marked[match.start():match.end()] = 1.0
    return marked


def token_features(tokens: list[str], extra: list[tuple[str, re.Pattern]]) -> dict[str, np.ndarray]:
    """Tokens (their texts, in order) -> {feature name: a value per token}, each token valued at
    its first character."""
    text = "".join(tokens)
    starts = np.cumsum([0, *map(len, tokens[:-1])]) if tokens else np.zeros(0, np.int64)
    return {name: values[starts] for name, values in character_features(text, extra).items()}
