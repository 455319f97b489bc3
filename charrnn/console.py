"""What `charrnn train` shows while it runs: a tqdm bar on a terminal, plain log lines otherwise.

It is the trainer's `report` hook: it also appends log and eval records to metrics.jsonl.
"""

from __future__ import annotations

import math
import sys

import click

from charrnn.evaluate import LN2


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

    def __init__(self, run, max_steps: int, start_step: int, max_seconds: float | None, quiet: bool):
        from tqdm import tqdm

        self.run, self.max_seconds = run, max_seconds
        self.bar = None
        if not quiet and sys.stderr.isatty():
            self.bar = tqdm(total=max_steps, initial=start_step, desc="train", unit="step", file=sys.stderr,
                            dynamic_ncols=True)
        self.val = None

    def __call__(self, kind: str, record: dict):
        if kind in ("log", "eval"):
            self.run.append_metrics({"kind": kind, **record})
        if kind == "eval":
            self.val = record["val_loss"]
        if self.bar is not None:
            self.update_bar(kind, record)
        elif kind in ("log", "eval"):
            click.echo(describe(record) + ("  (best)" if record.get("improved") else ""), err=True)

    def update_bar(self, kind: str, record: dict):
        if kind == "step":
            self.bar.update(record["step"] - self.bar.n)
            postfix = {"loss": f"{record['loss']:.3f}", "bits": f"{record['loss'] / LN2:.3f}",
                       "lr": f"{record['lr']:.1e}"}
            if self.val is not None:
                postfix["val"] = f"{self.val:.3f}"
            if self.max_seconds:
                postfix["left"] = f"{max(0.0, self.max_seconds - record['elapsed']):.0f}s"
            self.bar.set_postfix(postfix, refresh=False)
        elif kind == "eval":
            self.bar.write(describe(record) + ("  (best)" if record.get("improved") else ""), file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()


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
             f"checkpoints: {out}/best.npz, {out}/last.npz"]
    if reason not in ("interrupted", "terminated"):
        lines.append(f"try: charrnn sample {out} --length 500")
    return lines
