"""`charrnn sample`: text from a trained model."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from charrnn.cli.group import cli


def read_prime(prime_file) -> str:
    """The prime from a file or `-` (standard input): UTF-8 text, refused otherwise."""
    from charrnn.files import decode_utf8

    raw = sys.stdin.buffer.read() if str(prime_file) == "-" else Path(prime_file).read_bytes()
    return decode_utf8(raw, f"--prime-file {prime_file}")


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--length", "-n", type=click.IntRange(min=1), default=500, show_default=True,
              help="Tokens to generate per sample.")
@click.option("--temperature", "-t", type=float, default=1.0, show_default=True,
              help="Softmax temperature; 0 picks the most likely token every time.")
@click.option("--top-k", type=int, default=None, help="Sample only among the K most likely tokens.")
@click.option("--top-p", type=float, default=None, help="Sample only among the most likely tokens whose mass reaches P.")
@click.option("--prime", default=None, help="Text fed to the model first and printed before the continuation.")
@click.option("--prime-file", type=click.Path(path_type=Path, exists=True, dir_okay=False, allow_dash=True),
              help="Read the prime from a file (UTF-8), or from standard input with -.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Random seed (0 or more); the same seed and settings give the same text.")
@click.option("--num-samples", "-m", type=click.IntRange(min=1), default=1, show_default=True,
              help="Samples, generated as one batch.")
@click.option("--stream/--no-stream", default=None, help="Print tokens as they are generated.  [default: on for one sample on a terminal]")
@click.option("--json", "as_json", is_flag=True, help="Print the samples with their settings and mean log-probability as JSON.")
def sample(run, length, temperature, top_k, top_p, prime, prime_file, seed, num_samples, stream, as_json):
    """Generate text from a trained model: RUN is a run directory (best.npz, else last.npz) or a checkpoint.

    Several samples are printed one after another, each under a `--- sample i of M ---` line.

    \b
    Examples:
      charrnn sample runs/input --prime "ROMEO:" --temperature 0.8
      charrnn sample runs/input --top-p 0.9 --num-samples 3 --length 200 --seed 1
    """
    import json

    import numpy as np

    from charrnn import memory
    from charrnn.run import load_model
    from charrnn.sample import SamplingSettings, encode_prime, generate

    settings = SamplingSettings(temperature, top_k, top_p)
    settings.validate()
    if prime is not None and prime_file is not None:
        raise click.UsageError("give --prime or --prime-file, not both")
    model, params, vocab, _ = load_model(run)
    memory.require(memory.sampling_bytes(model.config, vocab.size, num_samples, length),
                   f"sampling {num_samples:,} x {length:,} tokens", "lower --num-samples or --length")
    if prime_file is not None:
        prime = read_prime(prime_file)
    prime_ids, shown_prime, mapped = encode_prime(prime or "", vocab)
    if mapped:
        click.echo(f"warning: mapped to <unk>: {' '.join(map(repr, mapped))}", err=True)
    seed = seed if seed is not None else int(np.random.SeedSequence().entropy % 2**32)
    stream = stream if stream is not None else (num_samples == 1 and sys.stdout.isatty() and not as_json)
    if stream and num_samples == 1 and not as_json:
        click.echo(shown_prime, nl=False)
        on_tokens = lambda tokens: click.echo(vocab.tokens[tokens[0]], nl=False)  # noqa: E731
    else:
        on_tokens = None
    tokens, mean_logprob = generate(model, params, prime_ids, length, num_samples, settings,
                                    np.random.default_rng(seed), on_tokens, score=as_json)
    texts = [shown_prime + vocab.decode(row) for row in tokens]
    if as_json:
        click.echo(json.dumps({"settings": {"temperature": temperature, "top_k": top_k, "top_p": top_p,
                                            "length": length, "seed": seed, "prime": shown_prime},
                               "samples": [{"text": text, "mean_logprob": float(lp)}
                                           for text, lp in zip(texts, mean_logprob)]}, ensure_ascii=False))
    elif on_tokens is not None:
        click.echo()
    elif num_samples == 1:
        click.echo(texts[0])
    else:
        for index, text in enumerate(texts, start=1):
            click.echo(f"--- sample {index} of {num_samples} ---")
            click.echo(text)
