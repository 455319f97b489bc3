"""`charrnn eval`: nats, bits per token and perplexity of a text, statically or adapting."""

from __future__ import annotations

from pathlib import Path

import click

from charrnn.cli.group import cli, progress_bar
from charrnn.errors import UserError


@cli.command(name="eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("texts", nargs=-1)
@click.option("--split", type=click.Choice(["val", "test"]), help="Score a split of the corpus the model was trained on.")
@click.option("--strict", is_flag=True, help="Stop on characters not in the vocabulary instead of skipping them.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write a page showing the text coloured by surprisal.")
@click.option("--chunk", type=click.IntRange(1, 1 << 16), default=512, show_default=True,
              help="Tokens per forward pass (memory, not result).")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of TEXTS.")
@click.option("--dynamic", is_flag=True, help="Dynamic evaluation: adapt the weights to the text while scoring it "
                                              "(Krause et al. 2018); each token is scored before the model trains on "
                                              "it, and the checkpoint is not changed.")
@click.option("--dynamic-method", type=click.Choice(["rms", "sgd"]), default="rms", show_default=True,
              help="rms: the paper's RMS-normalised update, calibrated on the run's training split; sgd: plain steps.")
@click.option("--dynamic-lr", type=float, default=None, help="Adaptation learning rate.  [default: 3e-4 rms, 0.03 sgd]")
@click.option("--dynamic-decay", type=float, default=None,
              help="Pull towards the original weights per segment.  [default: 1e-3 rms, 0 sgd]")
@click.option("--dynamic-seq", type=click.IntRange(1, 1 << 16), default=50, show_default=True,
              help="Tokens per segment: scored, then learned from.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def evaluate(run, texts, split, strict, as_json, html_path, chunk, encoding, dynamic, dynamic_method, dynamic_lr,
             dynamic_decay, dynamic_seq, quiet):
    """Score text with a trained model: nats and bits per token, and perplexity.

    Each text is one continuous stream: every token is predicted from all tokens before it.
    TEXTS are files, folders of them, or - for standard input.

    \b
    Examples:
      charrnn eval runs/input held_out.txt
      charrnn eval runs/input --split test --json
      charrnn eval runs/input chapter.txt --html surprisal.html
      charrnn eval runs/input --split val --dynamic      # adapt while reading
    """
    import json

    from charrnn.dynamic import DynamicSettings, make_adapter
    from charrnn.evaluate import score_files, score_split, training_tokens
    from charrnn.files import write_atomic
    from charrnn.run import load_model

    if bool(texts) == bool(split):
        raise click.UsageError("give either TEXT files to score or --split val|test")
    settings = DynamicSettings(dynamic_method, dynamic_lr, dynamic_decay, dynamic_seq) if dynamic else None
    if settings is not None:
        settings.validate()
        chunk = settings.seq
    model, params, vocab, meta = load_model(run)
    adapter = make_adapter(settings, model, params, training_tokens(meta)) if settings is not None else None
    keep = html_path is not None
    if split:
        result = score_split(model, params, meta, split, chunk, keep, vocab, adapter)
    else:
        from charrnn.corpus import resolve_sources

        sources = resolve_sources(list(texts))
        with progress_bar(sum(s.size for s in sources), "eval", "B", quiet, unit_scale=True) as bar:
            result = score_files(model, params, vocab, sources, encoding, strict, chunk, keep, bar.update, adapter)
    if result.score.tokens == 0:
        raise UserError(f"nothing to score in {', '.join(texts)}: a score needs at least two tokens the model "
                        f"knows ({result.unknown:,} unknown); give a longer text")
    figures = {"nats_per_token": result.score.nats_per_token, "bits_per_token": result.score.bits_per_token,
               "perplexity": result.score.perplexity, "tokens": result.score.tokens, "unknown": result.unknown,
               "unknown_handling": result.unknown_handling,
               "dynamic": settings.describe() if settings is not None else None}
    if html_path is not None:
        from charrnn.report import surprisal_page

        shown = {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in figures.items()}
        write_atomic(html_path, surprisal_page(result.shown, result.nll, result.unknown_mask, shown,
                                               f"charrnn eval: {', '.join(texts) or split}"))
    if as_json:
        click.echo(json.dumps(figures, allow_nan=False))
        return
    unit = "char" if vocab.level == "char" else "token"
    click.echo(f"tokens scored      {result.score.tokens:,}")
    click.echo(f"nats per {unit:<9} {result.score.nats_per_token:.4f}")
    click.echo(f"bits per {unit:<9} {result.score.bits_per_token:.4f}")
    click.echo(f"perplexity         {result.score.perplexity:.3f}")
    if result.unknown:
        click.echo(f"unknown            {result.unknown:,} ({result.unknown_handling})")
    if settings is not None:
        click.echo("dynamic            " + ", ".join(f"{k} {v}" for k, v in settings.describe().items()))
