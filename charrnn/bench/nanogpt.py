"""`python -m charrnn.bench.nanogpt NANOGPT CORPUS`: nanoGPT's character-level Shakespeare on this
CPU for the same minutes as charrnn's recipe, scored on the same val split (run it in the bench
venv, which has torch 2.13.0: `make bench-nanogpt NANOGPT=path/to/nanoGPT`).

NANOGPT is a checkout of https://github.com/karpathy/nanoGPT: its own model and training code run
unchanged, as its README says for a CPU (`--device=cpu --compile=False`). Nothing of it is copied
here. This script writes the split nanoGPT's `data/shakespeare_char/prepare.py` writes (the first
90% of CORPUS to train.bin, the rest to val.bin, as uint16 ids; meta.pkl with the vocabulary,
which its train.py reads) into a scratch folder where its train.py runs (with a link to its
configurator.py, which train.py reads from there), times 20 iterations of each configuration, sets
`max_iters` (and the learning-rate decay with it) to what fits in `--minutes` with its periodic
evaluations, and trains. Two configurations:

- `cpu`: the settings its README gives for a CPU (4 layers, 4 heads, 128 wide, context 64,
  batch 12, no dropout), its 2,000 iterations stretched to the minutes;
- `gpu-cut`: its `config/train_shakespeare_char.py` (6 layers, 6 heads, 384 wide, context 256,
  batch 64, dropout 0.2), its 5,000 iterations cut to the minutes, with 20 batches per estimate
  (its 200 would take a tenth of the minutes on a CPU) and, where the minutes allow fewer than
  1,000 iterations, an estimate every quarter of them.

Each is scored by nanoGPT's own estimator (the mean loss over `eval_iters` random val batches,
the figure its log prints) and on the whole val stream: every character predicted with at least
half a context of the text before it (windows of `block_size`, each scoring its second half).
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from charrnn.compute.machine import describe

CONFIGS = {
    "cpu": ["--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--dropout=0.0",
            "--eval_iters=20"],
    "gpu-cut": ["--eval_iters=20"],
}
EVAL_INTERVAL = 250  # iterations between its estimates, as its config has; fewer where the minutes allow few


def write_split(corpus: Path, data: Path) -> tuple[np.ndarray, dict]:
    """nanoGPT's shakespeare_char preparation -> the val ids (N,) and its meta."""
    text = corpus.read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    cut = int(len(ids) * 0.9)
    data.mkdir(parents=True)
    ids[:cut].tofile(data / "train.bin")
    ids[cut:].tofile(data / "val.bin")
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}
    with open(data / "meta.pkl", "wb") as handle:  # nanoGPT's own format, read by its train.py
        pickle.dump(meta, handle)
    return ids[cut:], meta


def train(nanogpt: Path, work: Path, flags: list[str], out: str, iters: int, interval: int,
          timeout: float | None = None) -> str:
    """Run nanoGPT's train.py in `work` (which holds data/) -> its log."""
    command = [sys.executable, str(nanogpt / "train.py"), str(nanogpt / "config/train_shakespeare_char.py"),
               "--device=cpu", "--compile=False", f"--out_dir={out}", f"--max_iters={iters}",
               f"--lr_decay_iters={iters}", f"--eval_interval={interval}", "--log_interval=10", *flags]
    done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(nanogpt)})
    if done.returncode:
        sys.exit(f"nanoGPT's train.py failed:\n{done.stderr[-2000:]}")
    return done.stdout


def seconds_per_iteration(nanogpt: Path, work: Path, flags: list[str]) -> float:
    """Time 20 iterations after 5 (nanoGPT logs each iteration's milliseconds)."""
    log = train(nanogpt, work, [*flags, "--log_interval=1", "--eval_iters=1"], "calibrate", 25, 100_000)
    times = [float(ms) for ms in re.findall(r"iter \d+: loss [\d.]+, time ([\d.]+)ms", log)]
    shutil.rmtree(work / "calibrate", ignore_errors=True)
    return float(np.median(times[5:])) / 1000


def fitted(seconds: float, per_iteration: float, eval_batches: int = 20) -> tuple[int, int]:
    """(iterations, iterations between estimates) that fit in `seconds`: an estimate runs
    `eval_batches` batches of train and of val forward only, a third of an iteration each."""
    affordable = int(seconds / per_iteration)
    interval = EVAL_INTERVAL if affordable >= 4 * EVAL_INTERVAL else max(1, affordable // 4)
    iters = int(seconds / (per_iteration * (1 + 2 * eval_batches / 3 / interval)))
    return max(interval, iters // interval * interval), interval


def whole_val(nanogpt: Path, checkpoint: Path, val: np.ndarray) -> float:
    """nats per character on the val stream, each character with at least block_size / 2 before it."""
    import torch

    sys.path.insert(0, str(nanogpt))
    from model import GPT, GPTConfig  # nanoGPT's model.py

    saved = torch.load(checkpoint, map_location="cpu")
    model = GPT(GPTConfig(**saved["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in saved["model"].items()}
    model.load_state_dict(state)
    model.eval()
    block = saved["model_args"]["block_size"]
    half, total, count = block // 2, 0.0, 0
    ids = torch.from_numpy(val.astype(np.int64))
    starts = list(range(0, len(ids) - block, half))
    with torch.no_grad():
        for begin in range(0, len(starts), 64):
            x = torch.stack([ids[s: s + block] for s in starts[begin: begin + 64]])
            y = torch.stack([ids[s + 1: s + block + 1] for s in starts[begin: begin + 64]])
            logits, _ = model(x, y)
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")
            first = [0 if s == 0 else half for s in starts[begin: begin + 64]]  # the first window scores all
            for row, skip in enumerate(first):
                total += float(nll[row, skip:].sum())
                count += block - skip
    return total / count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("nanogpt", type=Path, help="a checkout of karpathy/nanoGPT")
    parser.add_argument("corpus", type=Path, help="tinyshakespeare.txt")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--configs", default="cpu,gpu-cut")
    args = parser.parse_args(argv)
    import torch

    print(f"# nanoGPT {args.nanogpt}; {describe()}; torch {torch.__version__} ({torch.get_num_threads()} threads)")
    with tempfile.TemporaryDirectory(prefix="charrnn-nanogpt-") as scratch:
        work = Path(scratch)
        val, _ = write_split(args.corpus, work / "data" / "shakespeare_char")
        # train.py reads its configurator.py from the folder it runs in
        (work / "configurator.py").symlink_to(args.nanogpt.resolve() / "configurator.py")
        for name in args.configs.split(","):
            flags = CONFIGS[name]
            per_iteration = seconds_per_iteration(args.nanogpt, work, flags)
            iters, interval = fitted(args.minutes * 60, per_iteration)
            began = time.perf_counter()
            log = train(args.nanogpt, work, flags, name, iters, interval)
            minutes = (time.perf_counter() - began) / 60
            estimates = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", log)
            step, train_loss, val_loss = estimates[-1]
            best = min(float(v) for _, _, v in estimates)
            stream = whole_val(args.nanogpt, work / name / "ckpt.pt", val)
            print(f"{name}: {iters} iterations ({per_iteration * 1000:.0f} ms each) in {minutes:.1f} min; "
                  f"its estimator at step {step}: train {float(train_loss):.4f}, val {float(val_loss):.4f} "
                  f"(best {best:.4f}); whole val stream (its best checkpoint) {stream:.4f} nats/char")
            for step, train_loss, val_loss in estimates:
                print(f"  step {step}: train {train_loss} val {val_loss}")
            sys.stdout.flush()
            if not math.isfinite(stream):
                sys.exit(f"{name}: the whole-val score is not finite")


if __name__ == "__main__":
    main()
