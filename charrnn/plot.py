"""Loss curves from runs' metrics.jsonl: train and val loss against tokens seen and wall time.

matplotlib is an optional extra (`pip install 'charrnn[plot]'`); it draws with the Agg backend,
so no display is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

from charrnn.errors import UserError
from charrnn.evaluate import LN2
from charrnn.files import atomic_writer


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise UserError(f"{run_dir} has no metrics.jsonl; give a run directory written by `charrnn train`") from None
    except ValueError:
        raise UserError(f"{path} is damaged: a line is not JSON") from None


def curves(records: list[dict]) -> dict[str, tuple[list, list, list]]:
    """{'train' | 'val': (tokens, wall seconds, loss in nats)} from metrics records."""
    out = {"train": ([], [], []), "val": ([], [], [])}
    for record in records:
        kind, key = ("train", "train_loss") if record.get("kind") == "log" else ("val", "val_loss")
        if record.get(key) is not None:
            for series, value in zip(out[kind], (record["tokens"], record["wall_time"], record[key])):
                series.append(value)
    return out


def plot_runs(run_dirs: list[Path], output: Path, title: str | None = None):
    """Write a PNG (or any format matplotlib knows by the suffix) with one line pair per run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("plotting needs matplotlib: pip install 'charrnn[plot]'") from None
    figure, (by_tokens, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for index, run_dir in enumerate(run_dirs):
        series = curves(read_metrics(run_dir))
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
    kind = output.suffix.lstrip(".").lower() or "png"
    if kind not in figure.canvas.get_supported_filetypes():
        plt.close(figure)
        raise UserError(f"{output}: matplotlib cannot write .{kind} files; use .png, .svg or .pdf")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_writer(output) as handle:  # a full disk leaves no truncated image
            figure.savefig(handle, format=kind, dpi=110)
    finally:
        plt.close(figure)
