"""Loss curves from runs' metrics.jsonl: train and val loss against tokens seen and wall time.

matplotlib is an optional extra (the `[plot]` extra); it draws with the Agg backend,
so no display is needed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from charrnn.errors import UserError
from charrnn.extras import install_command
from charrnn.files.outputs import OutputFile
from charrnn.nn.scoring import LN2


def usable(record) -> bool:
    """Whether a metrics record can be drawn: an object with its tokens, time and a finite loss."""
    if not isinstance(record, dict) or record.get("kind") not in ("log", "eval"):
        return False
    loss = record.get("train_loss" if record["kind"] == "log" else "val_loss")
    return all(isinstance(record.get(key), (int, float)) and not isinstance(record.get(key), bool)
               and math.isfinite(record[key]) for key in ("tokens", "wall_time")) and \
        (loss is None or isinstance(loss, (int, float)) and math.isfinite(loss))


def read_metrics(run_dir: Path) -> tuple[list[dict], list[int]]:
    """(the records of a run's metrics.jsonl that can be drawn, the numbers of the damaged lines:
    not UTF-8, not JSON, or without the keys a curve needs)."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise UserError(f"{run_dir} has no metrics.jsonl; give a run directory written by `charrnn train`") from None
    records, damaged = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
            record = None
        if isinstance(record, dict) and record.get("kind") == "horizon":
            continue  # a schedule fitted to max_time: not a point on a curve
        (records.append(record) if usable(record) else damaged.append(number))
    if not records:
        state = (f"all {len(damaged)} of its records are damaged" if damaged else
                 "it holds no records yet (training logs the first after train.log_every steps)")
        raise UserError(f"nothing to plot in {path}: {state}")
    return records, damaged


def curves(records: list[dict]) -> dict[str, tuple[list, list, list]]:
    """{'train' | 'val': (tokens, wall seconds, loss in nats)} from metrics records."""
    out = {"train": ([], [], []), "val": ([], [], [])}
    for record in records:
        kind, key = ("train", "train_loss") if record.get("kind") == "log" else ("val", "val_loss")
        if record.get(key) is not None:
            for series, value in zip(out[kind], (record["tokens"], record["wall_time"], record[key])):
                series.append(value)
    return out


def plot_runs(run_dirs: list[Path], output: OutputFile, title: str | None = None,
              warn: Callable[[str], None] = lambda line: None):
    """Write a PNG (or any format matplotlib knows by the suffix) with one line pair per run;
    `warn` is told of each run's damaged metrics records, which are skipped."""
    read = {}
    for run_dir in run_dirs:
        read[run_dir], damaged = read_metrics(run_dir)
        if damaged:
            shown = ", ".join(map(str, damaged[:5])) + (", ..." if len(damaged) > 5 else "")
            warn(f"warning: {Path(run_dir) / 'metrics.jsonl'}: skipped {len(damaged)} damaged "
                 f"record{'s' if len(damaged) > 1 else ''} (line{'s' if len(damaged) > 1 else ''} {shown})")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError(f"plotting needs matplotlib: {install_command('plot')}") from None
    figure, (by_tokens, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for index, run_dir in enumerate(run_dirs):
        series = curves(read[run_dir])
        colour = f"C{index}"
        for kind, style in (("train", ":"), ("val", "-")):
            tokens, seconds, loss = series[kind]
            label = f"{Path(run_dir).name} {kind}"
            by_tokens.plot(tokens, loss, style, color=colour, label=label)
            by_time.plot([s / 60 for s in seconds], loss, style, color=colour, label=label)
    by_tokens.set_xlabel("tokens seen")
    by_time.set_xlabel("training time (minutes)")
    by_tokens.set_ylabel("loss (nats/token)")
    right = by_time.secondary_yaxis("right", functions=(lambda n: n / LN2, lambda b: b * LN2))
    right.set_ylabel("bits/token")
    for axis in (by_tokens, by_time):
        axis.grid(alpha=0.3)
    by_tokens.legend(fontsize="small")
    figure.suptitle(title or "charrnn: " + ", ".join(Path(r).name for r in run_dirs))
    figure.tight_layout()
    kind = output.path.suffix.lstrip(".").lower() or "png"
    if kind not in figure.canvas.get_supported_filetypes():
        plt.close(figure)
        raise UserError(f"{output.path}: matplotlib cannot write .{kind} files; use .png, .svg or .pdf")
    try:
        with output.writer() as handle:  # a full disk leaves no truncated image
            figure.savefig(handle, format=kind, dpi=110)
    finally:
        plt.close(figure)
