"""The `charrnn` command line: each command parses, validates and delegates to the library.

Mistakes a user can fix arrive as `UserError` and leave as one line on stderr with exit code 1.
Progress bars go to stderr (off with --quiet or when stderr is not a terminal); results to stdout.
"""

from __future__ import annotations

import contextlib
import signal
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


STOP_SIGNALS = {signal.SIGINT: ("interrupted", 130), signal.SIGTERM: ("terminated", 143)}
TRAIN_FLAGS = {"cell": "model.cell", "hidden_size": "model.hidden_size", "layers": "model.num_layers",
               "seq_len": "train.seq_len", "batch_size": "train.batch_size", "lr": "train.lr",
               "max_steps": "train.max_steps", "max_time": "train.max_time"}


@cli.command()
@click.argument("source", required=False)
@click.option("--config", "-c", "config_path", type=click.Path(path_type=Path), help="YAML file with model: and train: sections.")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Run directory.  [default: runs/<name of SOURCE>]")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.npz, exactly where it stopped.")
@click.option("--force", is_flag=True, help="Start afresh in a run directory that already holds a run.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Override one config key, e.g. train.lr=0.001 (repeatable).")
@click.option("--cell", type=click.Choice(["rnn", "lstm", "gru"]), help="Recurrent cell (model.cell).")
@click.option("--hidden-size", type=int, help="Hidden units per layer (model.hidden_size).")
@click.option("--layers", type=int, help="Number of stacked layers (model.num_layers).")
@click.option("--seq-len", type=int, help="Truncated-BPTT length (train.seq_len).")
@click.option("--batch-size", type=int, help="Parallel streams per step (train.batch_size).")
@click.option("--lr", type=float, help="Learning rate (train.lr).")
@click.option("--max-steps", type=int, help="Stop after this many steps (train.max_steps).")
@click.option("--max-time", help="Stop after this much training time, e.g. 90s, 10m, 1.5h (train.max_time).")
@click.option("--print-config", is_flag=True, help="Print the resolved configuration as YAML and exit.")
@click.option("--quiet", "-q", is_flag=True, help="Plain log lines instead of a progress bar.")
def train(source, config_path, out, resume, force, assignments, print_config, quiet, **flags):
    """Train a model on SOURCE: a prepared directory, a text file or folder, or `shakespeare`.

    Settings come from the defaults, then --config, then --set, then the flags.

    \b
    Examples:
      charrnn train input.txt                            # -> runs/input/
      charrnn train data/input -c configs/shakespeare.yaml --max-time 30m
      charrnn train data/input --set model.cell=gru --set train.lr=0.003
      charrnn train data/input --resume                  # after Ctrl-C
    """
    from charrnn import run as runs
    from charrnn.config import resolve
    from charrnn.console import TrainReporter, summary_lines
    from charrnn.train import Trainer

    flags = {TRAIN_FLAGS[k]: v for k, v in flags.items()}
    if print_config:
        click.echo(resolve(config_path, assignments, flags).to_yaml(), nl=False)
        return
    if source is None:
        raise click.UsageError("give SOURCE: a prepared directory, a text file or folder, or `shakespeare`")
    out = out or Path("runs") / default_name(source)
    if resume:
        config, saved = runs.resume_config(out, config_path, assignments, flags)
    else:
        config, saved = resolve(config_path, assignments, flags), None
        if (out / "last.npz").exists() and not force:
            raise UserError(f"{out} already holds a run; pass --resume to continue it, --force to start over, "
                            f"or --out for a new run directory")
    if config.model.bidirectional:
        raise UserError("model.bidirectional is true, but a language model must not see the text it predicts; "
                        "set it to false (bidirectional layers are for library use)")
    with progress_bar(None, "prepare", "B", quiet, unit_scale=True) as bar:
        session = runs.open_session(source, out, config, saved, on_bytes=bar.update)
    reporter = TrainReporter(session.run_dir, config.train.max_steps, session.start_step, config.max_seconds, quiet)
    trainer = Trainer(config, session.model, session.data.splits["train"], session.data.splits["val"],
                      report=reporter, save=session.run_dir.save)
    state = session.training_state(trainer)
    with stop_on_signals() as stop:
        try:
            reason = trainer.run(state, should_stop=lambda: STOP_SIGNALS[stop[0]][0] if stop else None)
        finally:
            reporter.close()
    session.run_dir.write_summary(reason, state.progress)
    if reason == "non_finite":
        raise UserError(f"the loss became non-finite at step {state.progress.step}; lower train.lr or "
                        f"train.clip_norm. The last good checkpoints in {out} are unchanged")
    for line in summary_lines(reason, state.progress, out):
        click.echo(line)
    if stop:
        click.echo(f"resume with: charrnn train {source} --out {out} --resume", err=True)
        sys.exit(STOP_SIGNALS[stop[0]][1])


@contextlib.contextmanager
def stop_on_signals():
    """Record SIGINT/SIGTERM in the yielded list instead of raising, so a step can finish and be saved."""
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, frame: received.append(number)) for sig in STOP_SIGNALS}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--length", "-n", type=int, default=500, show_default=True, help="Tokens to generate per sample.")
@click.option("--temperature", "-t", type=float, default=1.0, show_default=True,
              help="Softmax temperature; 0 picks the most likely token every time.")
@click.option("--top-k", type=int, default=None, help="Sample only among the K most likely tokens.")
@click.option("--top-p", type=float, default=None, help="Sample only among the most likely tokens whose mass reaches P.")
@click.option("--prime", default=None, help="Text fed to the model first and printed before the continuation.")
@click.option("--prime-file", type=click.Path(path_type=Path, exists=True, dir_okay=False), help="Read the prime from a file.")
@click.option("--seed", type=int, default=None, help="Random seed; the same seed and settings give the same text.")
@click.option("--num-samples", "-m", type=int, default=1, show_default=True, help="Samples, generated as one batch.")
@click.option("--stream/--no-stream", default=None, help="Print tokens as they are generated.  [default: on for one sample on a terminal]")
@click.option("--json", "as_json", is_flag=True, help="Print the samples with their settings and mean log-probability as JSON.")
def sample(run, length, temperature, top_k, top_p, prime, prime_file, seed, num_samples, stream, as_json):
    """Generate text from a trained model: RUN is a run directory (best.npz, else last.npz) or a checkpoint.

    \b
    Examples:
      charrnn sample runs/input --prime "ROMEO:" --temperature 0.8
      charrnn sample runs/input --top-p 0.9 --num-samples 3 --length 200 --seed 1
    """
    import json

    import numpy as np

    from charrnn.run import load_model
    from charrnn.sample import SamplingSettings, encode_prime, generate

    settings = SamplingSettings(temperature, top_k, top_p)
    settings.validate()
    if length < 1 or num_samples < 1:
        raise click.BadParameter("--length and --num-samples must be at least 1")
    model, params, vocab, _ = load_model(run)
    if prime_file is not None:
        prime = prime_file.read_text(encoding="utf-8")
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
    else:
        click.echo("\n\n".join(texts))


@cli.command(name="eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("texts", nargs=-1, type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["val", "test"]), help="Score a split of the corpus the model was trained on.")
@click.option("--strict", is_flag=True, help="Stop on characters not in the vocabulary instead of skipping them.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write a page showing the text coloured by surprisal.")
@click.option("--chunk", type=int, default=512, show_default=True, help="Tokens per forward pass (memory, not result).")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of TEXTS.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def evaluate(run, texts, split, strict, as_json, html_path, chunk, encoding, quiet):
    """Score text with a trained model: nats and bits per token, and perplexity.

    Each text is one continuous stream: every token is predicted from all tokens before it.

    \b
    Examples:
      charrnn eval runs/input held_out.txt
      charrnn eval runs/input --split test --json
      charrnn eval runs/input chapter.txt --html surprisal.html
    """
    import json

    from charrnn.evaluate import score_files, score_split
    from charrnn.run import load_model

    if bool(texts) == bool(split):
        raise click.UsageError("give either TEXT files to score or --split val|test")
    if chunk < 1:
        raise click.BadParameter("--chunk must be at least 1")
    model, params, vocab, meta = load_model(run)
    keep = html_path is not None
    if split:
        result = score_split(model, params, meta, split, chunk, keep)
    else:
        from charrnn.corpus import resolve_sources

        sources = resolve_sources([str(t) for t in texts])
        with progress_bar(sum(s.size for s in sources), "eval", "B", quiet, unit_scale=True) as bar:
            result = score_files(model, params, vocab, sources, encoding, strict, chunk, keep, bar.update)
    figures = {"nats_per_token": result.score.nats_per_token, "bits_per_token": result.score.bits_per_token,
               "perplexity": result.score.perplexity, "tokens": result.score.tokens, "unknown": result.unknown,
               "unknown_handling": result.unknown_handling}
    if html_path is not None:
        from charrnn.report import surprisal_page

        shown = {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in figures.items()}
        html_path.write_text(surprisal_page([vocab.tokens[i] for i in result.ids], result.nll, shown,
                                            f"charrnn eval: {', '.join(map(str, texts)) or split}"), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(figures))
        return
    unit = "char" if vocab.level == "char" else "token"
    click.echo(f"tokens scored      {result.score.tokens:,}")
    click.echo(f"nats per {unit:<9} {result.score.nats_per_token:.4f}")
    click.echo(f"bits per {unit:<9} {result.score.bits_per_token:.4f}")
    click.echo(f"perplexity         {result.score.perplexity:.3f}")
    if result.unknown:
        click.echo(f"unknown            {result.unknown:,} ({result.unknown_handling})")


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=Path("curve.png"),
              show_default=True, help="Image file to write (PNG, SVG, PDF by suffix).")
@click.option("--title", default=None, help="Figure title.  [default: the run names]")
def plot(runs, output, title):
    """Draw train and val loss against tokens seen and wall time, one colour per run.

    \b
    Examples:
      charrnn plot runs/shakespeare -o curve.png
      charrnn plot runs/lstm runs/gru -o compare.png     # runs overlaid
    """
    from charrnn.plot import plot_runs

    plot_runs(list(runs), output, title)
    click.echo(f"wrote {output}")


def default_name(corpus: str) -> str:
    """`books/plays.txt` -> `plays`; a folder or built-in corpus keeps its own name."""
    path = Path(corpus.rstrip("/"))
    return path.stem if path.suffix else path.name


def main():
    cli(prog_name="charrnn")
