"""`charrnn sample --interactive`: a prompt where the model continues what the user types.

The state carries on from turn to turn: the model has read everything typed and everything it
wrote. An empty line lets it go on from where it stopped. As in Python's own prompt, Ctrl-C at
the prompt clears the line, Ctrl-C during a continuation stops it (that turn is then forgotten;
a second Ctrl-C leaves at once), and Ctrl-D leaves. On a terminal the line can be edited and the
arrow keys recall earlier lines (Python's `readline`, where the platform has it). Prompts and
messages go to stderr, the model's text to stdout. Settings change with the same rules and the
same limits as `charrnn sample`'s flags; `/settings` prints them as the commands that set them.
"""

from __future__ import annotations

import re
import signal
import sys
from dataclasses import replace

import click

from charrnn import signals
from charrnn.compute import memory
from charrnn.errors import Stopped, UserError
from charrnn.nn.ensemble import network_count
from charrnn.user_text import check_text

HELP = r"""Type text and press Enter: the model continues it. An empty line lets it go on.
  /temperature T   softmax temperature (0: the most likely token)
  /top-k K         sample among the K most likely tokens (0: all)
  /top-p P         sample among the most likely tokens whose mass reaches P (1: all)
  /length N        tokens per continuation
  /stop TEXT       also end a continuation at TEXT, where \n is a newline, \t a tab and \\ a
                   backslash (/stop alone clears them)
  /seed N          fix the random seed (/seed alone: a fresh one each turn)
  /reset           forget everything said so far
  /settings        show the settings, as the commands that set them
  /help            this help
Ctrl-C clears the line or stops a continuation; Ctrl-D leaves."""

NUMBERS = {"temperature": ("temperature", float, "a number"), "top-k": ("top_k", int, "a whole number"),
           "top-p": ("top_p", float, "a number"), "length": ("length", int, "a whole number"),
           "seed": ("seed", int, "a whole number")}
OPTIONAL = {"top_k": 0, "top_p": 1, "seed": None}  # the value that (like no value) turns the setting off
ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def say(text: str):
    click.echo(text, err=True)


def unescape(text: str) -> str:
    r"""`\n`, `\t` and `\\` in what the user typed -> newline, tab, backslash; any other text as it is."""
    return re.sub(r"\\([nt\\])", lambda m: ESCAPES[m.group(1)], text)


def escape(text: str) -> str:
    r"""The inverse of `unescape`: how to type `text` after /stop."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


class Prompt:
    """Reads the user's lines: with line editing and history when standard input and output are a
    terminal and Python has `readline`; otherwise plain lines of standard input, the prompt on stderr."""

    def __init__(self):
        self.editing = sys.stdin.isatty() and sys.stdout.isatty() and self.load_readline()

    @staticmethod
    def load_readline() -> bool:
        try:
            import readline  # noqa: F401  (importing it gives input() line editing and history)
        except ImportError:
            return False
        return True

    def read(self) -> str | None:
        """The next line, without its newline; None at the end of input. Raises `UserError` for a
        line that is not UTF-8 text and `Stopped` for a stop signal."""
        if self.editing:
            try:
                line = input("> ")
            except EOFError:
                return None
            except UnicodeDecodeError as error:
                raise UserError(f"the line is not UTF-8 text (byte {error.start})") from None
            return check_text(line, "the line")
        click.echo("> ", nl=False, err=True)
        raw = sys.stdin.buffer.readline()
        if not raw:
            return None
        try:
            return raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as error:
            raise UserError(f"the line is not UTF-8 text (byte {error.start})") from None


def converse(model, params, vocab, request):
    """The prompt loop, until end of input."""
    from charrnn.generate.generation import Context, Generation
    from charrnn.generate.sample import encode_prime

    start = int(encode_prime("", vocab)[0][-1])  # what a text begins after, as in `charrnn sample`

    def fresh() -> Context:
        return Context(model.initial_state(1), start)

    context, prompt = fresh(), Prompt()
    say("charrnn interactive: type text and press Enter; /help for commands, Ctrl-D to leave")
    first = request.prime
    while True:
        if first:
            line, first = first, ""
        else:
            try:
                line = prompt.read()
            except Stopped as stop:
                if stop.signum != signal.SIGINT:
                    raise
                stop.consume()
                say("")  # Ctrl-C at the prompt clears the line, as in Python's prompt
                continue
            except UserError as error:
                say(f"error: {error}")
                continue
            if line is None:
                say("")
                return
        if line.startswith("/"):
            request, reset = command(line[1:], request, lambda length: fits(model, vocab, length))
            context = fresh() if reset else context
            continue
        try:
            generation = Generation(model, params, vocab, replace(request, prime=line).with_seed(), context)
        except UserError as error:
            say(f"error: {error}")
            continue
        with signals.requested("interrupted") as stop:
            for pieces in generation:
                click.echo(pieces[0][1], nl=False)
                if stop:
                    break
        click.echo()
        context = generation.context  # unchanged if the continuation was stopped


def fits(model, vocab, length: int):
    """Refuse a continuation length whose tokens would not fit in memory, as `charrnn sample` does."""
    memory.require(network_count(model) * memory.sampling_bytes(model.config, vocab.size, 1, length),
                   f"a continuation of {length:,} tokens",
                   "give a smaller /length")


def settings_lines(request) -> list[str]:
    """The settings as the commands that set them."""
    stops = [f"/stop {escape(text)}" for text in request.stop] or ["/stop           (none)"]
    return [f"/temperature {request.temperature:g}",
            f"/top-k {request.top_k}" if request.top_k is not None else "/top-k 0         (all tokens)",
            f"/top-p {request.top_p:g}" if request.top_p is not None else "/top-p 1         (all tokens)",
            f"/length {request.length}", *stops,
            f"/seed {request.seed}" if request.seed is not None else "/seed           (a fresh one each turn)"]


def command(text: str, request, check_length=lambda length: None):
    """Apply one /command -> (the new request, whether to forget the conversation). A change is kept
    only if it passes the checks of `charrnn sample`'s flags; `check_length` adds the memory check."""
    name, _, value = text.strip().partition(" ")
    value = value.strip()
    if name in ("help", "h", "?"):
        say(HELP)
    elif name == "reset":
        say("(forgotten)")
        return request, True
    elif name == "settings":
        say("\n".join(settings_lines(request)))
    elif name in ("stop", *NUMBERS):
        try:
            changed = parsed(name, value, request)
            changed.validate()
            check_length(changed.length)
            return changed, False
        except UserError as error:
            say(f"error: {shown(error, name)}")
    else:
        say(f"error: unknown command /{name}; /help lists them")
    return request, False


def parsed(name: str, value: str, request):
    """The request with /name VALUE applied (not yet validated)."""
    if name == "stop":
        return replace(request, stop=(*request.stop, unescape(value)) if value else ())
    key, kind, wanted = NUMBERS[name]
    if not value:
        if key not in OPTIONAL:
            raise UserError(f"/{name} needs {wanted}, e.g. /{name} {getattr(request, key)}")
        return replace(request, **{key: None})
    try:
        number = kind(value)
    except ValueError:
        raise UserError(f"/{name} needs {wanted}, not {value!r}") from None
    return replace(request, **{key: None if key in OPTIONAL and number == OPTIONAL[key] else number})


def shown(error: UserError, name: str) -> str:
    """A setting's error as the prompt says it: /top-k, not the flag --top-k."""
    return re.sub(r"^--[a-z-]+", f"/{name}", str(error))
