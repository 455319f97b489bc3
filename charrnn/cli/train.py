"""`charrnn train`: a new, resumed or fine-tuning run, with the run directory locked throughout.

The first stop signal once training has begun finishes the step and saves; before that, and
for a second signal, `charrnn.signals` ends the command at once."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from charrnn import signals
from charrnn.cli.group import cli, progress_bar
from charrnn.data.corpus import corpus_name
from charrnn.errors import UserError
from charrnn.runs.ensemble import is_ensemble

TRAIN_FLAGS = {"cell": "model.cell", "hidden_size": "model.hidden_size", "layers": "model.num_layers",
               "seq_len": "train.seq_len", "batch_size": "train.batch_size", "lr": "train.lr",
               "max_steps": "train.max_steps", "max_time": "train.max_time", "patience": "train.patience",
               "init_from": "train.init_from"}
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
@click.option("--max-time", help="Stop after this much training time, e.g. 90s, 10m, 1.5h (train.max_time); "
              "without max_steps or max_epochs a cosine schedule or weight average is fitted to it.")
@click.option("--patience", type=int, metavar="N",
              help="Stop after N evaluations in a row without a better val loss; best.npz keeps the best "
                   "(train.patience). Useful when fine-tuning on a small text, which soon overfits.")
@click.option("--init-from", metavar="RUN|CHECKPOINT",
              help="Fine-tune: start from a trained model's parameters, its vocabulary grown by SOURCE's new "
                   "tokens; its model settings are kept (train.init_from).")
@click.option("--retime", is_flag=True, help="Time the layouts of a training step again, instead of using the choice "
                                             "remembered for this machine and model shape.")
@click.option("--print-config", is_flag=True, help="Print the resolved configuration as YAML and exit.")
@click.option("--quiet", "-q", is_flag=True, help="Plain log lines instead of a progress bar.")
def train(source, config_path, out, resume, force, assignments, retime, print_config, quiet, **flags):
    """Train a model on SOURCE: a prepared directory, a text file or folder, or `shakespeare`.

    Settings come from the defaults, then --config, then --set, then the flags.

    \b
    Examples:
      charrnn train input.txt                            # -> runs/input/
      charrnn train data/input -c shakespeare --max-time 30m
      charrnn train data/input --set train.members=4     # four networks, their predictions averaged
      charrnn train data/input --set model.cell=gru --set train.lr=0.003
      charrnn train --out runs/input --resume            # after Ctrl-C
      charrnn train new.txt --init-from runs/input --out runs/new --patience 3   # fine-tune
    """
    from charrnn.cli.ranks import connect_or_leave, follow, leading

    comm = connect_or_leave()
    if not comm.writes:
        return follow(comm, "stopped at once by a second signal")
    with leading(comm) as lead:
        prepare_and_train(comm, lead, source, config_path, out, resume, force, assignments, print_config, quiet,
                          {TRAIN_FLAGS[k]: v for k, v in flags.items()}, retime)


def prepare_and_train(comm, lead, source, config_path, out, resume, force, assignments, print_config, quiet, flags,
                      retime=False):
    """Rank 0's (or the only process's) part of `train`: check, prepare, claim, train, summarise."""
    from charrnn.config import resolve
    from charrnn.runs.run import claim
    from charrnn.runs.session import fine_tune_config, resume_config

    if print_config:
        pointless = [flag for flag, given in (("--resume", resume), ("--force", force), ("--retime", retime)) if given]
        if pointless:
            raise click.UsageError(f"--print-config only prints the settings; leave out {', '.join(pointless)}")
        click.echo(resolve(config_path, assignments, flags).to_yaml(), nl=False)
        return
    if resume and force:
        raise click.UsageError("--resume continues a run and --force replaces it; give one of them")
    if resume and flags.get("train.init_from"):
        raise click.UsageError("--init-from starts a new run from another model; leave it out with --resume")
    if source is None and not (resume and out):
        raise click.UsageError("give SOURCE: a prepared directory, a text file or folder, or `shakespeare` "
                               "(or --resume --out RUN)")
    out = out or Path("runs") / corpus_name(source)
    config = None if resume else resolve(config_path, assignments, flags)
    if is_ensemble(out) if resume else config.train.members > 1:
        return train_ensemble(comm, lead, source, out, resume, force, config, (config_path, assignments, flags),
                              quiet, retime)
    init = None
    if config is not None and config.train.init_from is not None:
        config, init = fine_tune_config(config, config_path, assignments, flags)
    refuse_bidirectional(config)
    with claim(out) as held:
        if resume:
            config, saved, changes = resume_config(out, config_path, assignments, flags)
            if config.train.members > 1:
                raise UserError(f"{out} holds one network: train.members cannot change when resuming; "
                                f"train an ensemble with --out in a new run directory")
            warn_about_changes(changes, config)
        else:
            saved = None
            refuse_replacing(out, force)
        reason, state = train_run(comm, lead, source, out, config, saved, held, quiet, retime, init)
    finish_training(reason, state, source, out)


def refuse_bidirectional(config):
    if config is not None and config.model.bidirectional:
        raise UserError("model.bidirectional is true, but a language model must not see the text it predicts; "
                        "set it to false (bidirectional layers are for library use)")


def refuse_replacing(out: Path, force: bool):
    """A new run does not replace a run (or an ensemble) already in `out` unless --force says so."""
    if ((out / "last.npz").exists() or is_ensemble(out)) and not force:
        raise UserError(f"{out} already holds a run; pass --resume to continue it, --force to start over, "
                        f"or --out for a new run directory")


def train_run(comm, lead, source, out, config, saved, held, quiet, retime, init=None):
    """Open the session and train in the claimed run directory `out` -> (the reason it stopped, the
    state); a run that failed or diverged is refused with one line."""
    from charrnn.runs.session import open_session

    if config.train.batch_size < comm.size:
        raise UserError(f"train.batch_size {config.train.batch_size} is smaller than the {comm.size} MPI "
                        f"processes; give every process at least one stream")
    with progress_bar(None, "prepare", "B", quiet, unit_scale=True) as bar:
        session = open_session(source, out, config, saved, on_bytes=bar.update, init=init)
    try:
        trainer, state, reporter = start_training(session, config, held, quiet, comm, retime)
        reason, state = train_started(comm, lead, session, config, trainer, state, reporter, out)
    finally:  # a new run that saved nothing (a failure, or a stop signal before its first step) leaves nothing
        if held.fresh and session.run_dir.saved_step is None:
            held.keep = False
    if reason in ("non_finite", "diverged"):
        from charrnn.cli.console import failure_line

        raise UserError(failure_line(reason, reporter.failure_step, session.run_dir, kept=held.keep))
    return reason, state


def train_ensemble(comm, lead, source, out, resume, force, config, resolving, quiet, retime):
    """Train an ensemble's members one after another (`charrnn.runs.ensemble`), each in a run
    directory of its own inside `out`; resuming resumes each member that has saved and starts the others."""
    from charrnn.cli.console import summary_lines
    from charrnn.config import resolve
    from charrnn.files.atomic import write_atomic
    from charrnn.runs.ensemble import ensemble_data, member_directories, member_name, write_manifest
    from charrnn.runs.run import RunDirectory, claim
    from charrnn.runs.session import open_session, open_source, require_training_memory, resume_config

    if comm.size > 1:
        raise UserError("train.members trains its networks one after another in one process; under MPI, train "
                        "each network as a run of its own (--set train.seed=N --out RUN-N)")
    refuse_bidirectional(config)
    with claim(out) as held:
        if resume:
            members = member_directories(out)
            old = resolve(out / "config.yaml")
            config = resolve(*resolving, base=old.to_dict())
            if config.train.members != old.train.members or any(
                    config.member(k).model != old.member(k).model for k in range(1, len(members) + 1)):
                raise UserError("model settings (the ensemble's or a member's) and train.members cannot change when "
                                "resuming an ensemble; start a new one with --out to change them")
            warn_about_changes([f"train.{key}: {getattr(old.train, key)!r} -> {value!r}"
                                for key, value in vars(config.train).items() if getattr(old.train, key) != value],
                               config)
            if source is not None:
                raise UserError(f"an ensemble resumes with the data it was prepared with ({ensemble_data(out)}); "
                                f"leave out SOURCE: charrnn train --out {out} --resume")
        else:
            refuse_replacing(out, force)
        with progress_bar(None, "prepare", "B", quiet, unit_scale=True) as bar:
            data, _ = open_source(source or ensemble_data(out), out, bar.update)
        if resume and data.vocab.to_json() != (out / "vocab.json").read_text(encoding="utf-8"):
            raise UserError(f"{data.directory} has been prepared again with another vocabulary than the ensemble "
                            f"in {out} was trained on; train the ensemble again with --force")
        if not resume:  # every member's checks (encoding, vectors, memory) before anything here is replaced
            first = config.member(1)
            open_session(str(data.directory), out / member_name(1), first, None)  # (reads the vectors once)
            for k in range(2, config.train.members + 1):  # the others differ in what their training keeps
                require_training_memory(first.model, config.member(k).train, data.vocab.size)
            RunDirectory(out, config, data.vocab, data.directory).clear()
            write_atomic(out / "vocab.json", data.vocab.to_json())
            write_manifest(out, config.train.members, data.directory)
            members = member_directories(out)
        write_atomic(out / "config.yaml", config.to_yaml())
        for k, member in enumerate(members, start=1):
            resuming = (member / "last.npz").is_file()
            member_settings = config.member(k)
            own = {key: value for key, value in config.member_entry(k).items() if key != "train.max_time"}
            click.echo(f"member {k} of {len(members)}: seed {member_settings.train.seed}"
                       + (f", {member_settings.train.max_time} of train.max_time" if config.max_seconds else "")
                       + "".join(f", {key} {value}" for key, value in own.items()), err=True)
            try:
                with claim(member) as member_held:
                    saved = None
                    if resuming:
                        member_settings, saved, _ = resume_config(member, None, (), {}, member_settings)
                    reason, state = train_run(comm, lead, str(data.directory), member, member_settings, saved,
                                              member_held, quiet, retime)
            finally:  # once a member has saved, the ensemble stays, however the command ends
                if (member / "last.npz").is_file():
                    held.started()
            if reason in ("interrupted", "terminated"):
                finish_training(reason, state, None, out, member)  # (an ensemble resumes without SOURCE)
            for line in summary_lines(reason, state.progress, member)[:-1]:
                click.echo(line)
    click.echo(f"try: charrnn sample {out} --length 500   (the {len(members)} networks' mean prediction)")


def train_started(comm, lead, session, config, trainer, state, reporter, out):
    """Train the run `start_training` started, to its end or its first stop signal -> (the reason it
    stopped, the training state of this process's streams)."""
    from charrnn.cli.ranks import aborting, own_streams

    lead.ready(config, session.data.directory, state)
    state = own_streams(state, comm, config.train.batch_size)
    second = (f"stopped at once by a second signal; {out}/last.npz is intact at the last step saved: "
              f"resume with --resume")
    with signals.requested(second) as stop:  # from here a first signal stops training gently
        try:
            with aborting(comm):  # from here the other ranks train alongside: a failure must end them too
                reporter.open(trainer.horizon(state.progress))
                reason = trainer.run(state, should_stop=lambda: signals.stop_name(stop[0]) if stop else None)
        finally:
            reporter.close()
        session.run_dir.write_summary(reason, state.progress, trainer.sharded.layout())
    return reason, state


def warn_about_changes(changes: list[str], config):
    """Warn of each resumed setting that bends the rest of the run away from the original one."""
    cosine, averaged = config.train.lr_schedule == "cosine", config.train.average != "none"
    fitted = config.train.max_steps is None and config.train.max_epochs is None  # the horizon fits max_time
    horizon_keys = ("max_time",) if fitted else ("max_steps", "max_epochs")
    for change in changes:
        key = change.split(":")[0].split(".")[1]
        if key in horizon_keys and not (cosine or averaged) or key in HARMLESS_CHANGES and key not in horizon_keys:
            continue
        moved = " and ".join(what for what, moves in (("the cosine schedule's horizon", cosine),
                                                       ("the start of the weight average", averaged)) if moves)
        why = (f"{moved} move{'s' if ' and ' not in moved else ''} with it, so the rest of the run changes"
               if key in horizon_keys else "the rest of the run differs from the original one")
        click.echo(f"warning: resuming with {change}: {why}", err=True)


def start_training(session, config, held, quiet, comm, retime=False):
    """Build the trainer (its checks come first), lay its work out, then start the run directory and
    say what runs."""
    from charrnn.cli.console import TrainReporter, start_line
    from charrnn.cli.ranks import saving_whole
    from charrnn.training.loop import Trainer

    reporter = TrainReporter(session.run_dir, session.start_progress, config.max_seconds, quiet)
    trainer = Trainer(config, session.model, session.data.splits["train"], session.data.splits["val"],
                      report=reporter, save=saving_whole(comm, session.run_dir.save, config.train.batch_size),
                      comm=comm)
    state = session.training_state(trainer)
    lay_out(trainer, state, config, session.data.vocab.size, comm, retime)
    held.started()
    session.run_dir.start(state.progress.step if session.saved is not None else None)
    click.echo(start_line(session, trainer), err=True)
    return trainer, state, reporter


def lay_out(trainer, state, config, vocab_size: int, comm, retime: bool):
    """The layout remembered for this machine and model shape (`charrnn.runs.layouts`), or one timed
    now, saying so first (it can take a minute), and remembered for the next run."""
    from charrnn.runs import layouts

    facts = layouts.fingerprint(config, vocab_size) if comm.size == 1 else None
    known = layouts.recall(facts) if facts is not None and not retime else None
    timing = known is None and trainer.will_time_layout()
    if timing:
        click.echo(f"timing how to lay out a training step on this machine (threads or processes, step products); "
                   f"remembered for this model shape in {layouts.cache_file()}", err=True)
    choice = trainer.choose_layout(state, known)
    if timing and facts is not None:
        layouts.remember(facts, choice)


def finish_training(reason: str, state, source, out, trained=None):
    """The summary of the run `trained` (`out`, or an ensemble's member in it) on stdout; a stopped
    run exits 130/143 after saying how to resume `out`."""
    from charrnn.cli.console import summary_lines

    for line in summary_lines(reason, state.progress, trained or out):
        click.echo(line)
    if reason in ("interrupted", "terminated"):
        words = ["charrnn", "train", *([source] if source else []), "--out", str(out), "--resume"]
        resume = " ".join(shlex.quote(word) for word in words)  # as a shell reads it, spaces and all
        click.echo(f"resume with: {resume}", err=True)
        sys.exit(130 if reason == "interrupted" else 143)
