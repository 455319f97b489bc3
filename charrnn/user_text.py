"""Text that comes from a user, checked at the edge: valid Unicode, or one line that says where not.

Text reaches charrnn as bytes (files, standard input, the prompt) or as str that Python already
decoded leniently: on Linux, command-line arguments and a terminal's input carry invalid UTF-8
as lone surrogates (U+DC80..U+DCFF, "surrogateescape"), and JSON's `\\ud800` escapes decode to
lone surrogates too. Such a str cannot be encoded again, so it would fail only later, when it is
printed or written. `check_text` refuses it where it comes in, naming the byte (or, for JSON, the
character) where it goes wrong.
"""

from __future__ import annotations

import re

from charrnn.errors import UserError

LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def decode_utf8(raw: bytes, what: str) -> str:
    """Bytes a user gave as text -> str; refused in one line if not UTF-8 or if binary (NUL bytes)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{what} is not UTF-8 text (byte {error.start})") from None
    if "\0" in text:
        raise UserError(f"{what} holds NUL bytes, so it is not text")
    return text


def invalid_at(text: str) -> str | None:
    """Where `text` stops being valid Unicode ('byte N' of the bytes it came from, or 'character N'
    for a surrogate that no byte gave), or None if it is valid."""
    found = LONE_SURROGATE.search(text)
    if found is None:
        return None
    if "\udc80" <= found.group() <= "\udcff":  # an undecodable byte carried by surrogateescape
        return f"byte {len(text[:found.start()].encode('utf-8', 'surrogateescape'))}"
    return f"character {found.start()}"


def check_text(text: str, what: str) -> str:
    """`text`, or a `UserError` saying that `what` is not valid UTF-8 text and where."""
    where = invalid_at(text)
    if where is not None:
        raise UserError(f"{what} is not valid UTF-8 text ({where})")
    return text
