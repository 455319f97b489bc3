"""`charrnn prepare`: vocabulary and encoded splits of a corpus."""

from __future__ import annotations

from pathlib import Path

import click

from charrnn.cli.group import cli, progress_bar
from charrnn.data.corpus import corpus_name


@cli.command()
@click.argument("corpus", nargs=-1, required=True)
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Output directory.  [default: data/<name of the first corpus>]")
@click.option("--level", type=click.Choice(["char", "word"]), default="char", show_default=True,
              help="Tokens are characters, or words with whitespace and punctuation runs.")
@click.option("--val-frac", type=float, default=0.05, show_default=True, help="Fraction held out for validation.")
@click.option("--test-frac", type=float, default=0.05, show_default=True, help="Fraction held out for test.")
@click.option("--max-vocab", type=int, default=None, help="Keep at most this many tokens; the rest become <unk>.")
@click.option("--min-count", type=int, default=1, show_default=True, help="Tokens seen fewer times become <unk>.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the corpus files.")
@click.option("--errors", type=click.Choice(["strict", "replace"]), default="strict", show_default=True,
              help="What to do with bytes invalid in the encoding: stop, or replace them with U+FFFD.")
@click.option("--force", is_flag=True, help="Replace an output directory that holds a different preparation.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def prepare(corpus, out, level, val_frac, test_frac, max_vocab, min_count, encoding, errors, force, quiet):
    """Build the vocabulary and encoded splits of CORPUS: text files, folders of them, or `shakespeare`.

    \b
    Examples:
      charrnn prepare input.txt                     # -> data/input/
      charrnn prepare books/ --level word --max-vocab 20000
      charrnn prepare shakespeare                   # built-in, needs the shakespeare extra
      cat *.txt | charrnn prepare - --out data/mine # standard input
    """
    from charrnn.data.corpus import resolve_sources
    from charrnn.data.prepare import PrepareOptions
    from charrnn.data.prepare import prepare as run_prepare

    options = PrepareOptions(level, val_frac, test_frac, max_vocab, min_count, encoding, errors)
    options.validate()
    out = out or Path("data") / corpus_name(corpus[0])
    sources = resolve_sources(list(corpus))
    with progress_bar(2 * sum(s.size for s in sources), "prepare", "B", quiet,
                      unit_scale=True, unit_divisor=1024) as bar:
        meta = run_prepare(sources, out, options, force=force, on_bytes=bar.update)
    tokens = meta["tokens"]
    state = "already up to date" if meta.get("unchanged") else "prepared"
    click.echo(f"{out}: {state}; {meta['vocab_size']} tokens in the vocabulary, "
               f"train {tokens['train']:,} / val {tokens['val']:,} / test {tokens['test']:,}")
