"""The `charrnn` command line: each command parses, validates and delegates to the library.

Mistakes a user can fix arrive as `UserError` and leave as one line on stderr with exit code 1.
Progress bars go to stderr (off with --quiet or when stderr is not a terminal); results to stdout.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import nullcontext
from pathlib import Path

import click

from charrnn import __version__, signals
from charrnn.errors import Stopped, UserError, describe_os_error


class Failure(click.ClickException):
    """One line on stderr and a chosen exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(" ".join(message.split("\n")))
        self.exit_code = exit_code


class Group(click.Group):
    """A click group whose commands end every failure with one line on stderr and a non-zero exit:
    user mistakes, refusals of the operating system, lack of memory, stop signals, and (as an
    internal error to report) anything else. CHARRNN_TRACEBACK=1 shows the traceback instead."""

    def invoke(self, ctx):
        try:
            with signals.raised() if threading.current_thread() is threading.main_thread() else nullcontext():
                return super().invoke(ctx)
        except click.UsageError as error:
            command = f"{ctx.command_path} {error.ctx.command.name}" if error.ctx and error.ctx is not ctx else ctx.command_path
            raise Failure(f"{error.format_message()} (see '{command} --help')", error.exit_code) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except UserError as error:
            raise Failure(str(error)) from None
        except Stopped as stop:
            raise Failure(str(stop), stop.exit_code) from None
        except KeyboardInterrupt:
            raise Failure("interrupted", 130) from None
        except OSError as error:
            raise Failure(describe_os_error(error)) from None
        except MemoryError:
            raise Failure("out of memory; lower the sizes (hidden_size, batch_size, seq_len, --length, "
                          "--num-samples) or free memory") from None
        except Exception as error:
            if os.environ.get("CHARRNN_TRACEBACK"):
                raise
            raise Failure(f"internal error ({type(error).__name__}: {error}); this is a bug in charrnn: "
                          f"please report it with the output of CHARRNN_TRACEBACK=1") from None


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
      cat *.txt | charrnn prepare - --out data/mine # standard input
    """
    from charrnn.corpus import resolve_sources
    from charrnn.prepare import PrepareOptions, prepare as run_prepare

    options = PrepareOptions(level, val_frac, test_frac, max_vocab, min_count, encoding, errors)
    options.validate()
    out = out or Path("data") / default_name(corpus[0])
    sources = resolve_sources(list(corpus))
    with progress_bar(2 * sum(s.size for s in sources), "prepare", "B", quiet,
                      unit_scale=True, unit_divisor=1024) as bar:
        meta = run_prepare(sources, out, options, force=force, on_bytes=bar.update)
    tokens = meta["tokens"]
    state = "already up to date" if meta.get("unchanged") else "prepared"
    click.echo(f"{out}: {state}; {meta['vocab_size']} tokens in the vocabulary, "
               f"train {tokens['train']:,} / val {tokens['val']:,} / test {tokens['test']:,}")


TRAIN_FLAGS = {"cell": "model.cell", "hidden_size": "model.hidden_size", "layers": "model.num_layers",
               "seq_len": "train.seq_len", "batch_size": "train.batch_size", "lr": "train.lr",
               "max_steps": "train.max_steps", "max_time": "train.max_time", "init_from": "train.init_from"}
HARMLESS_CHANGES = ("max_time", "log_every", "checkpoint_every", "keep_checkpoints")


def config_help() -> str:
    from charrnn.config import packaged_configs

    return (f"YAML file with model: and train: sections, or the name of a shipped config "
            f"({', '.join(packaged_configs())}).")


@cli.command()
@click.argument("source", required=False)
@click.option("--config", "-c", "config_path", metavar="FILE|NAME", help=config_help())
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Run directory.  [default: runs/<name of SOURCE>]")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.npz, exactly where it stopped "
                                             "(SOURCE defaults to the run's own data).")
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
@click.option("--init-from", metavar="RUN|CHECKPOINT",
              help="Fine-tune: start from a trained model's parameters, its vocabulary grown by SOURCE's new "
                   "tokens; its model settings are kept (train.init_from).")
@click.option("--print-config", is_flag=True, help="Print the resolved configuration as YAML and exit.")
@click.option("--quiet", "-q", is_flag=True, help="Plain log lines instead of a progress bar.")
def train(source, config_path, out, resume, force, assignments, print_config, quiet, **flags):
    """Train a model on SOURCE: a prepared directory, a text file or folder, or `shakespeare`.

    Settings come from the defaults, then --config, then --set, then the flags.

    \b
    Examples:
      charrnn train input.txt                            # -> runs/input/
      charrnn train data/input -c shakespeare --max-time 30m
      charrnn train data/input --set model.cell=gru --set train.lr=0.003
      charrnn train --out runs/input --resume            # after Ctrl-C
      charrnn train new.txt --init-from runs/input --out runs/new   # fine-tune
    """
    from charrnn import run as runs
    from charrnn.config import resolve

    flags = {TRAIN_FLAGS[k]: v for k, v in flags.items()}
    if print_config:
        click.echo(resolve(config_path, assignments, flags).to_yaml(), nl=False)
        return
    if resume and force:
        raise click.UsageError("--resume continues a run and --force replaces it; give one of them")
    if resume and flags.get("train.init_from"):
        raise click.UsageError("--init-from starts a new run from another model; leave it out with --resume")
    if source is None and not (resume and out):
        raise click.UsageError("give SOURCE: a prepared directory, a text file or folder, or `shakespeare` "
                               "(or --resume --out RUN)")
    out = out or Path("runs") / default_name(source)
    config = None if resume else resolve(config_path, assignments, flags)
    init = None
    if config is not None and config.train.init_from is not None:
        config, init = runs.fine_tune_config(config, config_path, assignments, flags)
    if config is not None and config.model.bidirectional:
        raise UserError("model.bidirectional is true, but a language model must not see the text it predicts; "
                        "set it to false (bidirectional layers are for library use)")
    with runs.claim(out) as held:
        if resume:
            config, saved, changes = runs.resume_config(out, config_path, assignments, flags)
            warn_about_changes(changes, config)
        else:
            saved = None
            if (out / "last.npz").exists() and not force:
                raise UserError(f"{out} already holds a run; pass --resume to continue it, --force to start over, "
                                f"or --out for a new run directory")
        with progress_bar(None, "prepare", "B", quiet, unit_scale=True) as bar:
            session = runs.open_session(source, out, config, saved, on_bytes=bar.update, init=init)
        trainer, state, reporter = start_training(session, config, held, quiet)
        second = (f"stopped at once by a second signal; {out}/last.npz is intact at the last step saved: "
                  f"resume with --resume")
        with signals.requested(second) as stop:  # from here a first signal stops training gently
            try:
                reporter.open(trainer.horizon if config.train.max_steps or config.train.max_epochs else None)
                reason = trainer.run(state, should_stop=lambda: stop_name(stop[0]) if stop else None)
            finally:
                reporter.close()
            session.run_dir.write_summary(reason, state.progress)
            if reason in ("non_finite", "diverged"):
                from charrnn.console import failure_line

                if held.fresh and session.run_dir.saved_step is None:
                    held.keep = False  # a new run that saved nothing leaves nothing behind
                raise UserError(failure_line(reason, reporter.failure_step, session.run_dir, kept=held.keep))
            finish_training(reason, state, source, out)


def warn_about_changes(changes: list[str], config):
    """Warn of each resumed setting that bends the rest of the run away from the original one."""
    for change in changes:
        key = change.split(":")[0].split(".")[1]
        cosine = config.train.lr_schedule == "cosine"
        if key in HARMLESS_CHANGES or (key in ("max_steps", "max_epochs") and not cosine):
            continue
        why = ("the cosine schedule's horizon moves with it, so the learning rate from here on changes"
               if key in ("max_steps", "max_epochs") else "the rest of the run differs from the original one")
        click.echo(f"warning: resuming with {change}: {why}", err=True)


def start_training(session, config, held, quiet):
    """Build the trainer (its checks come first), then start the run directory and say what runs."""
    from charrnn.console import TrainReporter, start_line
    from charrnn.train import Trainer

    reporter = TrainReporter(session.run_dir, session.start_progress, config.max_seconds, quiet)
    trainer = Trainer(config, session.model, session.data.splits["train"], session.data.splits["val"],
                      report=reporter, save=session.run_dir.save)
    state = session.training_state(trainer)
    held.started()
    session.run_dir.start(state.progress.step if session.saved is not None else None)
    click.echo(start_line(session, trainer), err=True)
    return trainer, state, reporter


def stop_name(signum: int) -> str:
    return "interrupted" if signum == signal.SIGINT else "terminated"


def finish_training(reason: str, state, source, out):
    """The summary on stdout; a stopped run exits 130/143 after saying how to resume."""
    from charrnn.console import summary_lines

    for line in summary_lines(reason, state.progress, out):
        click.echo(line)
    if reason in ("interrupted", "terminated"):
        resume = f"charrnn train {source} --out {out} --resume" if source else f"charrnn train --out {out} --resume"
        click.echo(f"resume with: {resume}", err=True)
        sys.exit(130 if reason == "interrupted" else 143)


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
@click.option("--dynamic-lr", type=float, default=None, help="Adaptation learning rate.  [default: 1e-4 rms, 0.05 sgd]")
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


@cli.command(name="export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--format", "-f", "fmt", type=click.Choice(["html", "onnx", "safetensors"]), required=True,
              help="html: a self-contained page that generates text in the browser; onnx: a graph on ONNX's "
                   "RNN/LSTM/GRU operators (needs charrnn[onnx]); safetensors: the parameters under PyTorch's "
                   "names (needs charrnn[safetensors]).")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False),
              help="File to write.  [default: RUN/model.<format>, or the checkpoint's name with that suffix]")
@click.option("--float16", is_flag=True, help="html: embed the weights as float16, half the size.")
def export_model(run, fmt, output, float16):
    """Write the model of RUN (a run directory's best.npz, else last.npz, or a checkpoint) for use elsewhere.

    \b
    Examples:
      charrnn export runs/input --format html            # open runs/input/model.html in a browser
      charrnn export runs/input --format onnx -o model.onnx
      charrnn export runs/input --format safetensors
    """
    from charrnn.export import export

    written = export(run, fmt, output, float16)
    click.echo(f"wrote {written} ({written.stat().st_size:,} bytes)")


def default_name(corpus: str) -> str:
    """`books/plays.txt` -> `plays`; a folder or built-in corpus keeps its own name; `-` is `stdin`."""
    if corpus == "-":
        return "stdin"
    path = Path(corpus.rstrip("/"))
    return path.stem if path.suffix else path.name


def main():
    cli(prog_name="charrnn")
