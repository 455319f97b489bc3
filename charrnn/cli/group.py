"""The `charrnn` command group and what every command shares.

Each command (one module each in this package) parses, validates and delegates to the library.
Every failure leaves through `Group.invoke`: one line on stderr and a non-zero exit code.
Progress bars go to stderr (off with --quiet or when stderr is not a terminal); results to stdout.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import nullcontext

import click

from charrnn import __version__, signals
from charrnn.errors import UserError, describe_os_error, stop_within


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
        except (click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except BaseException as error:
            failure = as_failure(error, ctx)
            if failure is None or failure is error:
                raise
            raise failure from None


def as_failure(error: BaseException, ctx=None) -> click.ClickException | None:
    """The one-line failure (with its exit code) that `error` ends a command with; None for what
    is not a failure (an exit) or, with CHARRNN_TRACEBACK=1, an internal error to show in full."""
    if isinstance(error, click.UsageError):
        command = ctx.command_path if ctx is not None else "charrnn"
        if ctx is not None and error.ctx and error.ctx is not ctx:
            command = f"{ctx.command_path} {error.ctx.command.name}"
        return Failure(f"{error.format_message()} (see '{command} --help')", error.exit_code)
    if isinstance(error, click.ClickException):
        return error
    if isinstance(error, (click.exceptions.Exit, click.Abort, SystemExit)):
        return None
    if isinstance(error, UserError):
        return Failure(str(error))
    if (stopped := stop_within(error)) is not None:
        return Failure(str(stopped), stopped.exit_code)
    if isinstance(error, KeyboardInterrupt):
        return Failure("interrupted", 130)
    if isinstance(error, OSError):
        return Failure(describe_os_error(error))
    if isinstance(error, MemoryError):
        return Failure("out of memory; lower the sizes (hidden_size, batch_size, seq_len, --length, "
                       "--num-samples) or free memory")
    if os.environ.get("CHARRNN_TRACEBACK") or not isinstance(error, Exception):
        return None
    return Failure(f"internal error ({type(error).__name__}: {error}); this is a bug in charrnn: "
                   f"please report it with the output of CHARRNN_TRACEBACK=1")


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
