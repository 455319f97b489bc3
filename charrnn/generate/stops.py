"""Stop strings: a stream's text, cut at the first stop string, released as it becomes safe to show.

While the end of the text could be the start of a stop string, that part is held back, so a
streamed sample never shows part of one; the stop string itself and anything after it are cut.
"""

from __future__ import annotations


class StopScanner:
    """The text of one stream, cut at the first stop string; `feed` returns what is safe to show."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops, self.text, self.shown, self.stopped = stops, "", 0, False

    def feed(self, piece: str) -> str:
        """Add a token's text -> the text that can now be shown (held back while a stop may be starting)."""
        if self.stopped:
            return ""
        self.text += piece
        begin = max(0, self.shown - max((len(s) for s in self.stops), default=0))
        found = [i for i in (self.text.find(s, begin) for s in self.stops) if i >= 0]
        if found:
            self.text, self.stopped = self.text[: min(found)], True
            return self.release()
        held = max((k for s in self.stops for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        new = self.text[self.shown: len(self.text) - held]
        self.shown += len(new)
        return new

    def release(self) -> str:
        """Whatever is still held back (at the end of the stream)."""
        new = self.text[self.shown:]
        self.shown = len(self.text)
        return new
