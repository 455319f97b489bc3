"""`charrnn eval`: nats, bits per token and perplexity of a text, statically or adapting."""

from __future__ import annotations

from pathlib import Path

import click

from charrnn.cli.group import cli, progress_bar
from charrnn.errors import UserError
from charrnn.files.outputs import OutputFile


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
@click.option("--dynamic-lr", type=float, default=None, help="Adaptation learning rate.  [default: 2e-4 rms, 0.03 sgd]")
@click.option("--dynamic-decay", type=float, default=None,
              help="Pull towards the original weights per segment.  [default: 1e-3 rms, 0 sgd]")
@click.option("--dynamic-seq", type=click.IntRange(1, 1 << 16), default=None,
              help="Tokens per segment: scored, then learned from.  [default: 20 rms, 50 sgd]")
@click.option("--ngram", type=int, default=None, metavar="ORDER",
              help="Mix each prediction with an adaptive n-gram model of up to ORDER tokens of context, which has "
                   "read the run's training split and learns the text as it is scored (as compressors mix their "
                   "models); the network's figure alone is reported beside. Orders 1 to 16; at most 4,194,304 "
                   "tokens of text.")
@click.option("--exact", is_flag=True, help="Score the text as one stream, token after token (slow on long texts).")
@click.option("--streams", type=click.IntRange(2, 4096), default=None, metavar="S",
              help="Score S pieces of the text side by side, each warmed up on the text before it.  "
                   "[default: chosen by the text's length]")
@click.option("--warmup", type=click.IntRange(0, 1 << 20), default=None, metavar="W",
              help="Tokens each piece reads before its start, unscored, with --streams.  [default: 256]")
@click.option("--no-bfloat16", "no_bfloat16", is_flag=True,
              help="Keep the pieces' products in the model's precision where bfloat16 would be chosen (CPUs with "
                   "AMX and the mkl extra): slower on long texts, about 1e-6 nats from the exact score instead of 1e-5.")
@click.option("--force", is_flag=True, help="Replace the --html file if it exists (never a file of a run).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def evaluate(ctx, run, texts, split, strict, as_json, html_path, chunk, encoding, dynamic, dynamic_method, dynamic_lr,
             dynamic_decay, dynamic_seq, ngram, exact, streams, warmup, no_bfloat16, force, quiet):
    """Score text with a trained model: nats and bits per token, and perplexity.

    Each text is one continuous stream: every token is predicted from all tokens before it.
    TEXTS are files, folders of them, or - for standard input. A long text is scored fast as
    pieces side by side, each first reading the WARMUP tokens before it (within 0.001 nats of
    the exact figure on Tiny Shakespeare); --exact reads it as one stream. The method used is
    in the output. An ensemble (train.members) scores the mean of its networks' probabilities,
    each network reading (and with --dynamic, adapting to) the text alone; networks that adapt
    read side by side, one per core.

    \b
    Examples:
      charrnn eval runs/input held_out.txt
      charrnn eval runs/input --split test --json
      charrnn eval runs/input chapter.txt --html surprisal.html
      charrnn eval runs/input big.txt --streams 64 --warmup 1024
      charrnn eval runs/input --split val --dynamic      # adapt while reading
      charrnn eval runs/input --split val --dynamic --ngram 8   # and mix with an 8-gram model
    """
    import json
    import tempfile

    from charrnn.nn.ensemble import Ensemble
    from charrnn.runs.run import load_models
    from charrnn.score.dynamic import DynamicSettings, make_adapter
    from charrnn.score.ensemble import score_ensemble
    from charrnn.score.eval_text import Tokens, encode_sources, nll_file, score_ids, streams_products
    from charrnn.score.evaluate import training_tokens
    from charrnn.score.mixing import NgramSettings, check_length
    from charrnn.score.pieces import DEFAULT_WARMUP, Method

    refuse_meaningless(ctx, texts, split)
    page = OutputFile(html_path, "--html", force).check() if html_path is not None else None
    settings = DynamicSettings(dynamic_method, dynamic_lr, dynamic_decay, dynamic_seq) if dynamic else None
    if settings is not None:
        settings.validate()
        chunk = settings.segment
    mixing = NgramSettings(ngram) if ngram is not None else None
    if mixing is not None:
        mixing.validate()
    model, params, vocab, meta = load_models(run)
    ensemble = isinstance(model, Ensemble)
    networks = list(zip(model.models, params)) if ensemble else [(model, params)]
    training = training_tokens(meta) if settings is not None or mixing is not None else None
    adapters = [make_adapter(settings, m, p, training) if settings is not None else None for m, p in networks]
    with tempfile.TemporaryDirectory(prefix="charrnn-eval-") as scratch:
        if split:
            tokens = Tokens(split_tokens(meta, split))
        else:
            from charrnn.data.corpus import resolve_sources

            sources = resolve_sources(list(texts))
            with progress_bar(sum(s.size for s in sources), "read", "B", quiet, unit_scale=True) as bar:
                tokens = encode_sources(sources, vocab, encoding, strict, Path(scratch), bar.update)
        if len(tokens.ids) < 2:
            raise UserError(f"nothing to score in {', '.join(texts)}: a score needs at least two tokens the model "
                            f"knows ({tokens.unknown:,} unknown); give a longer text")
        predictions = len(tokens.ids) - 1
        if mixing is not None:
            check_length(len(tokens.ids))
        warmup = DEFAULT_WARMUP if warmup is None else warmup
        if exact or dynamic:
            method = Method()
        else:  # only pieces look for bfloat16 products (which loads MKL)
            products = model.dtype.name if no_bfloat16 else streams_products(model)
            method = Method(streams, warmup, products) if streams else Method.automatic(predictions, warmup, products)
        nll = nll_file(Path(scratch), len(tokens.ids)) if html_path is not None or mixing else None
        members = None
        with progress_bar(predictions * len(networks), "eval", "tok", quiet, unit_scale=True) as bar:
            if ensemble:
                score, members = score_ensemble(model.models, params, tokens.ids, method, chunk, adapters,
                                                Path(scratch), nll, bar.update)
            else:
                score = score_ids(model, params, tokens.ids, method, chunk, adapters[0], nll, bar.update)
        for figure in members or [score]:
            check_score(figure, settings, vocab.size)
        mixed = None
        if mixing is not None:
            with progress_bar(predictions, "mix", "tok", quiet, unit_scale=True) as bar:
                score, mixed = mix(score, tokens.ids, nll, mixing, vocab.size, training, bar.update)
        figures = {"nats_per_token": score.nats_per_token, "bits_per_token": score.bits_per_token,
                   "perplexity": score.perplexity, "tokens": score.tokens, "unknown": tokens.unknown,
                   "unknown_handling": tokens.handling, **method.describe(),
                   "dynamic": settings.describe() if settings is not None else None, "ngram": mixed,
                   "members_nats_per_token": [m.nats_per_token for m in members] if members else None}
        if page is not None:
            write_page(page, figures, tokens, nll, vocab, split, texts, encoding)
    if as_json:
        click.echo(json.dumps(figures, allow_nan=False))
        return
    unit = "char" if vocab.level == "char" else "token"
    click.echo(f"tokens scored      {score.tokens:,}")
    click.echo(f"nats per {unit:<9} {score.nats_per_token:.4f}")
    click.echo(f"bits per {unit:<9} {score.bits_per_token:.4f}")
    click.echo(f"perplexity         {score.perplexity:.3f}")
    if tokens.unknown:
        click.echo(f"unknown            {tokens.unknown:,} ({tokens.handling})")
    click.echo("method             " + ("exact (one stream)" if method.exact else
                                       f"{method.streams} streams side by side, warm-up {method.warmup} tokens, "
                                       f"{method.products} products"))
    if settings is not None:
        click.echo("dynamic            " + ", ".join(f"{k} {v}" for k, v in settings.describe().items()))
    if members:
        click.echo(f"ensemble           the mean of {len(members)} networks' probabilities; alone "
                   + ", ".join(f"{m.nats_per_token:.4f}" for m in members) + f" nats per {unit}")
    if mixed is not None:
        click.echo(f"n-gram mix         order {mixed['order']}, lr {mixed['lr']}, primed on {mixed['primed_tokens']:,} "
                   f"training tokens; the {'ensemble' if members else 'network'} alone "
                   f"{mixed['network_nats_per_token']:.4f} nats per {unit}")


def mix(score, ids, nll, settings, vocab_size: int, training, on_tokens):
    """The mixture's score, and what was mixed with the network's own figure beside it."""
    from charrnn.score.mixing import mix_scores

    mixed_score, described = mix_scores(ids, nll, settings, vocab_size, training, on_tokens)
    return mixed_score, {**described, "network_nats_per_token": score.nats_per_token}


def refuse_meaningless(ctx, texts, split):
    """Refuse a combination of flags that means nothing, rather than ignore part of it."""
    given = {name for name, value in ctx.params.items()
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
             and value is not None and value is not False}
    if bool(texts) == bool(split):
        raise click.UsageError("give either TEXT files to score or --split val|test")
    if "exact" in given and "streams" in given:
        raise click.UsageError("--exact reads the text as one stream; leave out --streams")
    if "dynamic" in given and "streams" in given:
        raise click.UsageError("--dynamic adapts while reading the text in order; leave out --streams")
    tuning = sorted(f"--{name.replace('_', '-')}" for name in given if name.startswith("dynamic_"))
    if tuning and "dynamic" not in given:
        raise click.UsageError(f"{', '.join(tuning)} tune{'s' if len(tuning) == 1 else ''} dynamic evaluation; "
                               f"add --dynamic, or leave {'it' if len(tuning) == 1 else 'them'} out")
    one_stream = next((flag for flag in ("exact", "dynamic") if flag in given), None)
    for piece_flag in ("warmup", "no_bfloat16"):
        if one_stream and piece_flag in given:
            raise click.UsageError(f"--{piece_flag.replace('_', '-')} applies to pieces read side by side, and "
                                   f"--{one_stream} reads the text as one stream; leave one of them out")
    if split and "encoding" in given:
        raise click.UsageError("--encoding applies to TEXT files; --split reads the prepared corpus")
    if "force" in given and "html_path" not in given:
        raise click.UsageError("--force replaces the --html file; give --html, or leave out --force")


def check_score(score, settings, vocab_size: int):
    """Refuse a score that is no number (an adaptation that diverged); warn of an adapted model that
    predicts worse than a uniform guess over the vocabulary."""
    import math

    lr = f"lower --dynamic-lr (now {settings.learning_rate:g})" if settings is not None else ""
    if not math.isfinite(score.perplexity):
        figure = f"{score.nats_per_token:.4g} nats per token, a perplexity past the largest float"
        raise UserError(f"dynamic evaluation diverged ({figure}); {lr}" if settings is not None else
                        f"the score is {figure}: the model's weights are extreme")
    if settings is not None and score.nats_per_token > math.log(vocab_size):
        click.echo(f"warning: dynamic evaluation made the model worse than a uniform guess "
                   f"({score.nats_per_token:.4f} nats per token against {math.log(vocab_size):.4f}); {lr}", err=True)


def split_tokens(meta: dict, split: str):
    """The val or test split of the corpus the model was trained on (a memory map)."""
    from charrnn.data.splits import Prepared

    prepared = Prepared.open(Path(meta["data"]))
    if len(prepared.splits[split]) < 2:
        raise UserError(f"the {split} split of {prepared.directory} is empty; score a text file instead")
    return prepared.splits[split]


def shown_figure(key: str, value) -> str:
    """A figure as the page's table shows it: 4 decimals (each of a list's), settings as 'name value' pairs (a figure
    among them with 4 decimals), 'off'."""
    if value is None:
        return "off"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return ", ".join(f"{figure:.4f}" for figure in value)
    if isinstance(value, dict):
        return ", ".join(f"{name} {setting:.4f}" if name.endswith("per_token") else f"{name} {setting}"
                         for name, setting in value.items())
    return str(value)


def write_page(page, figures: dict, tokens, nll, vocab, split, texts, encoding):
    """The surprisal page, written piece by piece (all or nothing) to the `OutputFile` `page`."""
    from charrnn.data.corpus import resolve_sources
    from charrnn.score.eval_text import split_page_tokens, text_page_tokens
    from charrnn.score.report import page_parts

    runs = split_page_tokens(tokens.ids, nll, vocab) if split else \
        text_page_tokens(resolve_sources(list(texts)), vocab, encoding, nll)
    shown = {key: shown_figure(key, value) for key, value in figures.items()
             if value is not None or key in ("dynamic", "ngram")}
    with page.writer() as handle:
        for part in page_parts(runs, shown, f"charrnn eval: {', '.join(texts) or split}"):
            handle.write(part.encode("utf-8"))
