"""The `charrnn` command line: each command parses, validates and delegates to the library.

Mistakes a user can fix arrive as `UserError` and leave as one line on stderr with exit code 1.
Progress bars go to stderr (off with --quiet or when stderr is not a terminal); results to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from charrnn import __version__
from charrnn.errors import UserError


class Group(click.Group):
    """A click group that turns `UserError` into a one-line `click.ClickException`."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as error:
            raise click.ClickException(str(error)) from None


def progress_bar(total: int, desc: str, unit: str, quiet: bool, **kwargs):
    """A tqdm bar on stderr, disabled when quiet or when stderr is not a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True, **kwargs)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charrnn")
def cli():
    """Train character-level recurrent language models on a CPU.

    \b
    charrnn prepare corpus.txt              # vocabulary and train/val/test splits
    charrnn train corpus.txt                # train, with checkpoints in runs/corpus
    charrnn sample runs/corpus --prime "ROMEO:"
    charrnn eval runs/corpus held_out.txt   # nats, bits per char, perplexity
    """


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
      charrnn prepare shakespeare                   # built-in, needs charrnn[shakespeare]
    """
    from charrnn.corpus import resolve_sources
    from charrnn.prepare import PrepareOptions, prepare as run_prepare

    sources = resolve_sources(list(corpus))
    out = out or Path("data") / default_name(corpus[0])
    options = PrepareOptions(level, val_frac, test_frac, max_vocab, min_count, encoding, errors)
    options.validate()
    with progress_bar(2 * sum(s.size for s in sources), "prepare", "B", quiet,
                      unit_scale=True, unit_divisor=1024) as bar:
        meta = run_prepare(sources, out, options, force=force, on_bytes=bar.update)
    tokens = meta["tokens"]
    state = "already up to date" if meta.get("unchanged") else "prepared"
    click.echo(f"{out}: {state}; {meta['vocab_size']} tokens in the vocabulary, "
               f"train {tokens['train']:,} / val {tokens['val']:,} / test {tokens['test']:,}")


def default_name(corpus: str) -> str:
    """`books/plays.txt` -> `plays`; a folder or built-in corpus keeps its own name."""
    path = Path(corpus.rstrip("/"))
    return path.stem if path.suffix else path.name


def main():
    cli(prog_name="charrnn")
