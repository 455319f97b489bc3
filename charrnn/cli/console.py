"""What `charrnn train` shows while it runs: a tqdm bar on a terminal, plain log lines otherwise.

It is the trainer's `report` hook: it also appends log and eval records to metrics.jsonl.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click
import numpy as np

from charrnn.nn.scoring import LN2


def describe(record: dict) -> str:
    """One log line: step, epoch, losses in nats and bits, lr, throughput."""
    parts = [f"step {record['step']}", f"epoch {record['epoch']}"]
    if record.get("train_loss") is not None:
        parts.append(f"train {record['train_loss']:.4f} ({record['train_loss'] / LN2:.3f} bits)")
    if record.get("val_loss") is not None:
        parts.append(f"val {record['val_loss']:.4f} ({record['val_loss'] / LN2:.3f} bits)")
    parts.append(f"lr {record['lr']:.2e}")
    if record.get("tokens_per_s"):
        parts.append(f"{record['tokens_per_s']:,.0f} tok/s")
    return " | ".join(parts)


class TrainReporter:
    """Receives the trainer's events; draws progress and records metrics."""

    def __init__(self, run, start, max_seconds: float | None, quiet: bool):
        self.run, self.max_seconds, self.quiet = run, max_seconds, quiet
        self.start_step, self.val = start.step, start.last_val
        self.bar = None
        self.last_step: dict | None = None
        self.failure_step: int | None = None  # the step at fault when training stops on bad numbers

    def open(self, total_steps: int | None):
        """Show the bar (on a terminal, unless quiet) once training begins."""
        from tqdm import tqdm

        if not self.quiet and sys.stderr.isatty():
            self.bar = tqdm(total=total_steps, initial=self.start_step, desc="train", unit="step",
                            file=sys.stderr, dynamic_ncols=True)
            self.bar.set_postfix(self.postfix(None), refresh=True)

    def __call__(self, kind: str, record: dict):
        if kind in ("log", "eval"):
            self.run.append_metrics({"kind": kind, **record})
        if kind == "eval":
            self.val = record["val_loss"]
        if kind in ("non_finite", "diverged"):
            self.failure_step = record["step"]
        if kind == "horizon":
            self.run.append_metrics({"kind": kind, **record})
            self.say(f"fitted the schedule to train.max_time {record['max_time']}: {record['horizon']:,} steps "
                     f"at {record['step_seconds']:.3f} s a step (measured by step {record['step']:,})")
            if self.bar is not None:
                self.bar.total = record["horizon"]
        if self.bar is not None:
            self.update_bar(kind, record)
        elif kind in ("log", "eval"):
            self.say(describe(record) + ("  (best)" if record.get("improved") else ""))

    def say(self, line: str):
        """One line on stderr, above the bar when there is one."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            click.echo(line, err=True)

    def postfix(self, record: dict | None) -> dict:
        postfix = {}
        if record is not None:
            postfix = {"loss": f"{record['loss']:.3f}", "bits": f"{record['loss'] / LN2:.3f}",
                       "lr": f"{record['lr']:.1e}"}
        if self.val is not None:
            postfix["val"] = f"{self.val:.3f}"
        if self.max_seconds and record is not None:
            postfix["left"] = f"{max(0.0, self.max_seconds - record['elapsed']):.0f}s"
        return postfix

    def update_bar(self, kind: str, record: dict):
        if kind == "step":
            self.last_step = record
            self.bar.update(record["step"] - self.bar.n)
            self.bar.set_postfix(self.postfix(record), refresh=False)
        elif kind == "eval":
            self.say(describe(record) + ("  (best)" if record.get("improved") else ""))
            self.bar.set_postfix(self.postfix(self.last_step), refresh=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def start_line(session, trainer) -> str:
    """Where the run goes, its data, its size, and how the work is laid out."""
    progress = session.start_progress
    begin = f"resuming at step {progress.step:,}" if session.saved is not None else "new run"
    data = "prepared now" if session.prepared_now else "already prepared"
    params = sum(int(np.prod(shape)) for shape in session.model.param_shapes().values())
    layout = trainer.sharded.layout()["layout"]
    cfg = trainer.cfg
    if session.init is not None and session.saved is None:
        old = len(session.init.meta["vocab"]["tokens"])
        begin = (f"fine-tuning from {cfg.init_from} (sha256 {cfg.init_from_sha256[:12]}), "
                 f"{session.data.vocab.size - old} new tokens")
    vectors = ""
    if session.vectors is not None:
        model = session.model.config
        vectors = f"; {session.vectors.describe(model.pretrained_embeddings)}{', frozen' if model.freeze_embeddings else ''}"
    steps = trainer.batcher.steps_per_epoch
    return (f"{session.run_dir.path}: {begin}; data {session.data.directory} ({data}, "
            f"{session.data.vocab.size} tokens in the vocabulary); {params:,} parameters; "
            f"{steps:,} step{'s' if steps != 1 else ''} of {cfg.batch_size} x {cfg.seq_len} tokens per epoch; "
            f"{layout}{vectors}")


def failure_line(reason: str, step: int, run_dir, kept: bool) -> str:
    """Why a run stopped on bad numbers, and (truthfully) what the checkpoints on disk hold."""
    if run_dir.saved_step is not None:
        on_disk = f"nothing was saved after step {run_dir.saved_step:,}: the checkpoints in {run_dir.path} are from before it"
    elif kept:
        on_disk = f"no checkpoint was written in {run_dir.path}"
    else:
        on_disk = "no checkpoint had been written, so the new run directory was removed"
    if reason == "diverged":
        return (f"training diverged at step {step:,} (a loss above train.diverge_ratio x ln(vocabulary "
                f"size), far worse than guessing); lower train.lr or train.clip_norm; {on_disk}")
    return (f"the loss or the parameters became non-finite at step {step:,}; lower train.lr, and check "
            f"train.eps and train.clip_norm; {on_disk}")


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(math.ceil(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def summary_lines(reason: str, progress, out) -> list[str]:
    """The end-of-training summary: why it stopped, how far, the best val loss, what to do next."""
    best = (f"{progress.best_val:.4f} nats/token ({progress.best_val / LN2:.3f} bits)"
            if progress.best_val is not None else "not measured")
    lines = [f"stopped ({reason.replace('_', ' ')}) at step {progress.step}, epoch {progress.epoch}, "
             f"{progress.tokens:,} tokens in {format_duration(progress.elapsed)}; best val {best}",
             "checkpoints: " + ", ".join(f"{out}/{name}" for name in ("best.npz", "last.npz")
                                         if (Path(out) / name).exists())]
    if reason in ("interrupted", "terminated"):
        lines.append("the final validation pass was skipped so as to stop at once")
    else:
        lines.append(f"try: charrnn sample {out} --length 500")
    return lines
