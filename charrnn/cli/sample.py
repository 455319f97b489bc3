"""`charrnn sample`: text from a trained model."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from charrnn.cli.group import cli


def read_prime(prime_file) -> str:
    """The prime from a file or `-` (standard input): UTF-8 text, refused otherwise."""
    from charrnn.user_text import decode_utf8

    raw = sys.stdin.buffer.read() if str(prime_file) == "-" else Path(prime_file).read_bytes()
    return decode_utf8(raw, f"--prime-file {prime_file}")


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--length", "-n", type=int, default=500, show_default=True, help="Tokens to generate per sample.")
@click.option("--temperature", "-t", type=float, default=1.0, show_default=True,
              help="Softmax temperature; 0 picks the most likely token every time.")
@click.option("--top-k", type=int, default=None, help="Sample only among the K most likely tokens.")
@click.option("--top-p", type=float, default=None, help="Sample only among the most likely tokens whose mass reaches P.")
@click.option("--prime", default=None, help="Text fed to the model first and printed before the continuation.")
@click.option("--prime-file", type=click.Path(path_type=Path, exists=True, dir_okay=False, allow_dash=True),
              help="Read the prime from a file (UTF-8), or from standard input with -.")
@click.option("--seed", type=int, default=None,
              help="Random seed (0 or more); the same seed and settings give the same text.")
@click.option("--num-samples", "-m", type=int, default=1, show_default=True, help="Samples, generated as one batch.")
@click.option("--stop", multiple=True, metavar="TEXT",
              help="End a sample where it produces TEXT, which is not printed (repeatable).")
@click.option("--beam", type=int, default=None, metavar="K",
              help="Beam search of width K for the most likely continuation (deterministic; see the README).")
@click.option("--best-of", type=int, default=None, metavar="N",
              help="Draw N samples for each one printed and keep the one with the highest mean log-probability.")
@click.option("--interactive", "-i", is_flag=True,
              help="A prompt: type text, the model continues it and remembers everything said (/help for commands).")
@click.option("--stream/--no-stream", default=None, help="Print tokens as they are generated.  [default: on for one sample on a terminal]")
@click.option("--json", "as_json", is_flag=True, help="Print the samples with their settings and mean log-probability as JSON.")
def sample(run, prime_file, interactive, stream, as_json, **settings):
    """Generate text from a trained model: RUN is a run directory (best.npz, else last.npz) or a checkpoint.

    An ensemble's directory (train.members) draws from the mean of its networks' probabilities.
    Several samples are printed one after another, each under a `--- sample i of M ---` line.

    \b
    Examples:
      charrnn sample runs/input --prime "ROMEO:" --temperature 0.8
      charrnn sample runs/input --top-p 0.9 --num-samples 3 --length 200 --seed 1
      charrnn sample runs/input --prime "ROMEO:" --stop $'\\n\\n' --best-of 8
      charrnn sample runs/input --prime "JULIET:" --beam 8 --length 80
      charrnn sample runs/input --interactive
    """
    from charrnn.compute import memory
    from charrnn.generate.generation import GenerationRequest
    from charrnn.nn.ensemble import network_count
    from charrnn.runs.run import load_models

    if settings["prime"] is not None and prime_file is not None:
        raise click.UsageError("give --prime or --prime-file, not both")
    if prime_file is not None:
        settings["prime"] = read_prime(prime_file)
    settings["prime"] = settings["prime"] or ""
    request = GenerationRequest(**settings)
    request.validate()
    if interactive and (as_json or request.num_samples > 1 or request.best_of is not None):
        raise click.UsageError("--interactive continues one text: leave out --json, --num-samples and --best-of")
    model, params, vocab, _ = load_models(run)
    need = network_count(model) * memory.sampling_bytes(model.config, vocab.size, request.streams, request.length)
    memory.require(need,
                   f"sampling {request.streams:,} x {request.length:,} tokens", "lower --num-samples or --length")
    if interactive:
        from charrnn.cli.interactive import converse

        return converse(model, params, vocab, request)
    print_samples(model, params, vocab, request.with_seed(), stream, as_json)


def print_samples(model, params, vocab, request, stream: bool | None, as_json: bool):
    """Generate, streaming one sample to a terminal as it comes; then print the text, or JSON."""
    import json
    from dataclasses import asdict

    from charrnn.generate.generation import Generation, settings_record

    generation = Generation(model, params, vocab, request)
    if generation.mapped:
        click.echo(f"warning: mapped to <unk>: {' '.join(map(repr, generation.mapped))}", err=True)
    if stream is None:
        stream = request.num_samples == 1 and sys.stdout.isatty() and not as_json
    stream = stream and request.num_samples == 1 and not as_json
    if stream:
        click.echo(generation.shown_prime, nl=False)
    for pieces in generation:
        if stream:
            click.echo("".join(text for _, text in pieces), nl=False)
    texts = [s.text for s in generation.samples]
    if as_json:
        click.echo(json.dumps({"settings": settings_record(request, generation.shown_prime),
                               "samples": [asdict(s) for s in generation.samples]},
                              ensure_ascii=False))
    elif stream:
        click.echo()
    elif len(texts) == 1:
        click.echo(texts[0])
    else:
        for index, text in enumerate(texts, start=1):
            click.echo(f"--- sample {index} of {len(texts)} ---")
            click.echo(text)
