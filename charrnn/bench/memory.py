"""`python -m charrnn.bench.memory CORPUS`: how far back an Elman RNN, an LSTM and a GRU remember,
trained equally on the same text (`make bench-memory`; BENCHMARKS.md has the figures).

Prepares CORPUS with its last 10% as val (the nanoGPT split), trains the three cells with the same
size, steps, batch, sequence length, schedule and dropout (`TRAINING`), then runs `charrnn inspect`
on the first `--chars` characters of val with each, and prints the memory curve and the gradient's
decay side by side as markdown tables; `--plot` draws them. A run that already finished its steps
in `--runs` is inspected again, not retrained.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from charrnn.compute.machine import describe

CELLS = ("rnn", "lstm", "gru")
TRAINING = ["--layers", "2", "--hidden-size", "256", "--seq-len", "128", "--batch-size", "32",
            "--set", "train.lr=0.002", "--set", "train.lr_schedule=cosine", "--set", "train.warmup_steps=100",
            "--set", "train.min_lr=0.0001", "--set", "model.dropout=0.1", "--set", "train.eval_every=500",
            "--set", "train.max_time=null", "--quiet"]


def charrnn(*args) -> str:
    """Run the charrnn command line; its standard output, or exit with its error."""
    done = subprocess.run([sys.executable, "-m", "charrnn", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"charrnn {' '.join(map(str, args))} failed: {done.stderr.strip()}")
    return done.stdout


def finished(run: Path, steps: int) -> bool:
    try:
        return json.loads((run / "summary.json").read_text())["steps"] >= steps
    except (OSError, ValueError, KeyError):
        return False


def measure(corpus: Path, runs: Path, steps: int, chars: int) -> dict[str, dict]:
    """cell -> `charrnn inspect --json`'s object for a model of that cell trained `steps` steps."""
    data = runs / "data"
    if not (data / "meta.json").exists():
        charrnn("prepare", corpus, "--val-frac", "0.1", "--test-frac", "0", "--out", data, "--quiet")
    found = {}
    for cell in CELLS:
        run = runs / f"memory-{cell}"
        if not finished(run, steps):
            print(f"training {run} ({cell}, {steps} steps)", file=sys.stderr)
            charrnn("train", data, "--out", run, "--force", "--cell", cell, "--max-steps", steps, *TRAINING)
        found[cell] = json.loads(charrnn("inspect", run, "--split", "val", "--max-chars", chars, "--json", "--quiet"))
        found[cell]["best_val"] = json.loads((run / "summary.json").read_text())["best_val_loss"]
    return found


def tables(found: dict[str, dict]) -> list[str]:
    """The memory curve and the gradient's decay of each cell, as markdown tables."""
    contexts = [point["context"] for point in next(iter(found.values()))["memory"]]
    lines = ["memory curve: val nats per character reading only the last k characters", "",
             "| cell | best val | " + " | ".join(f"k={k}" if k != "full" else "full" for k in contexts) + " |",
             "|---|---|" + "---|" * len(contexts)]
    for cell, report in found.items():
        lines.append(f"| {cell} | {report['best_val']:.3f} | "
                     + " | ".join(f"{p['nats']:.3f}" for p in report["memory"]) + " |")
    lags = [point["lag"] for point in next(iter(found.values()))["gradient_decay"]]
    lines += ["", "gradient decay: mean |d loss_t / d h_(t-k)| over positions of val, every layer's h", "",
              "| cell | " + " | ".join(f"k={k}" for k in lags) + " |", "|---|" + "---|" * len(lags)]
    for cell, report in found.items():
        lines.append(f"| {cell} | " + " | ".join(f"{p['norm']:.1e}" for p in report["gradient_decay"]) + " |")
    return lines


def plot(found: dict[str, dict], path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (memory, decay) = plt.subplots(1, 2, figsize=(12, 4.5))
    for cell, report in found.items():
        points = [p for p in report["memory"] if p["context"] != "full"]
        line, = memory.plot([p["context"] for p in points], [p["nats"] for p in points], "o-", label=cell)
        memory.axhline(report["memory"][-1]["nats"], color=line.get_color(), ls="--", lw=0.8)
        decay.plot([p["lag"] for p in report["gradient_decay"]],
                   [max(p["norm"], 1e-45) for p in report["gradient_decay"]], "o-", label=cell)
    memory.set(xscale="log", xlabel="characters the model may read (k); dashed: the whole text",
               ylabel="val nats per character", title="memory curve")
    decay.set(xscale="log", yscale="log", xlabel="lag k", ylabel="|d loss_t / d h_(t-k)|", title="gradient decay")
    memory.set_xscale("log", base=2)
    decay.set_xscale("log", base=2)
    for axis in (memory, decay):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the data and the three runs go")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--chars", type=int, default=20_000, help="characters of val to inspect")
    parser.add_argument("--plot", type=Path, help="draw the two figures into this file (matplotlib)")
    args = parser.parse_args(argv)
    found = measure(args.corpus, args.runs, args.steps, args.chars)
    header = (f"2 x 256 RNN, LSTM and GRU, {args.steps} steps each of 32 x 128 characters of {args.corpus.name}; "
              f"{args.chars:,} characters of val inspected")
    print(f"{header}\n{describe()}\n")
    print("\n".join(tables(found)))
    if args.plot:
        plot(found, args.plot, header)


if __name__ == "__main__":
    main()
