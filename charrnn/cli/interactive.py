"""`charrnn sample --interactive`: a prompt where the model continues what the user types.

The state carries on from turn to turn: the model has read everything typed and everything it
wrote. An empty line lets it go on from where it stopped. Ctrl-C stops a continuation early
(that turn is then forgotten); Ctrl-D leaves. Prompts and messages go to stderr, the model's
text to stdout.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import click

from charrnn import signals
from charrnn.errors import UserError

HELP = """Type text and press Enter: the model continues it. An empty line lets it go on.
  /temperature T   softmax temperature (0: the most likely token)
  /top-k K         sample among the K most likely tokens (0: all)
  /top-p P         sample among the most likely tokens whose mass reaches P (1: all)
  /length N        tokens per continuation
  /stop TEXT       also end a continuation at TEXT (/stop alone clears them)
  /seed N          fix the random seed (/seed alone: a fresh one each turn)
  /reset           forget everything said so far
  /settings        show the settings
  /help            this help; Ctrl-C stops a continuation, Ctrl-D leaves"""

COMMANDS = {"temperature": ("temperature", float), "top-k": ("top_k", int), "top-p": ("top_p", float),
            "length": ("length", int), "seed": ("seed", int)}
OPTIONAL = {"top_k": 0, "top_p": 1, "seed": None}  # the value that (like no value) turns the setting off


def say(text: str):
    click.echo(text, err=True)


def converse(model, params, vocab, request):
    """The prompt loop, until end of input."""
    from charrnn.generation import Context, Generation
    from charrnn.sample import encode_prime

    start = int(encode_prime("", vocab)[0][-1])  # what a text begins after, as in `charrnn sample`

    def fresh() -> Context:
        return Context(model.initial_state(1), start)

    context = fresh()
    say("charrnn interactive: type text and press Enter; /help for commands, Ctrl-D to leave")
    first = request.prime
    while True:
        if first:
            line, first = first, ""
        else:
            click.echo("> ", nl=False, err=True)
            line = sys.stdin.readline()
            if not line:
                say("")
                return
            line = line.rstrip("\n")
        if line.startswith("/"):
            request, reset = command(line[1:], request)
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


def command(text: str, request):
    """Apply one /command -> (the new request, whether to forget the conversation)."""
    name, _, value = text.strip().partition(" ")
    if name in ("help", "h", "?"):
        say(HELP)
    elif name == "reset":
        say("(forgotten)")
        return request, True
    elif name == "settings":
        say(", ".join(f"{k} {getattr(request, k)!r}" for k in ("temperature", "top_k", "top_p", "length", "stop",
                                                              "seed", "beam")))
    elif name == "stop":
        return replace(request, stop=(*request.stop, value) if value else ()), False
    elif name in COMMANDS:
        key, kind = COMMANDS[name]
        try:
            if not value and key not in OPTIONAL:
                raise ValueError("give a value")
            parsed = kind(value) if value else None
            changed = replace(request, **{key: None if key in OPTIONAL and parsed == OPTIONAL[key] else parsed})
            changed.validate()
            return changed, False
        except (ValueError, UserError) as error:
            say(f"error: /{name} {value}: {error}")
    else:
        say(f"error: unknown command /{name}; /help lists them")
    return request, False
