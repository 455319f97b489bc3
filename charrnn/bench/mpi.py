"""`python -m charrnn.bench.mpi CORPUS`: threads against MPI ranks on this machine, and a projection
of data-parallel training across nodes.

Measured: for each cell and hidden size, `charrnn train` for a fixed number of steps as one
process with two workers (threads, or forked processes where those time faster, see
charrnn.training.layout) and as two MPI ranks with one thread each (`mpiexec -n 2`),
alternating, best of the repeats; tokens/s from each run's summary.json, and the seconds per step
rank 0 spent in the step's collective (on one machine it is shared memory, and it includes
waiting for the slower rank).

Projected: p nodes, each computing b streams x T tokens per step at the measured rate R
(tokens/s of the faster layout here, so one node = this machine), then one ring all-reduce of
the float32 gradients (n = 4 x parameters bytes), without overlap:
    t_compute = b T / R,    t_allreduce = 2 (p - 1) / p * n / bandwidth + 2 (p - 1) * latency
    efficiency = t_compute / (t_compute + t_allreduce),  tokens/s = p b T / (t_compute + t_allreduce)
and the smallest b per node for 90% efficiency: b >= 9 t_allreduce R / T.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from charrnn.compute.allocator import keep_freed_memory
from charrnn.compute.machine import describe
from charrnn.config import ModelConfig
from charrnn.nn.model import RNNLM

LATENCY = 5e-6  # seconds per message hop, a typical figure for both networks
NETWORKS = {"10 Gb/s": 10e9 / 8, "100 Gb/s": 100e9 / 8}
NODES = (4, 8, 16, 32, 64)


def train(data: Path, out: Path, cell: str, H: int, steps: int, ranks: int, threads: int, batch: int, seq: int):
    """One timed run -> (tokens/s, seconds per step in the collective, 'threads' or 'processes': what
    its workers were)."""
    command = [sys.executable, "-m", "charrnn", "train", str(data), "--out", str(out), "--force", "--quiet",
               "--cell", cell, "--hidden-size", str(H), "--layers", "2", "--batch-size", str(batch),
               "--seq-len", str(seq), "--max-steps", str(steps), "--set", f"train.threads={threads}",
               "--set", f"train.eval_every={10 * steps}", "--set", "train.eval_tokens=2000"]
    if ranks > 1:
        command = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(ranks), *command]
    subprocess.run(command, check=True, capture_output=True)
    summary = json.loads((out / "summary.json").read_text())
    return (summary["tokens"] / summary["seconds"], summary["collective_seconds"] / summary["steps"],
            "processes" if summary.get("worker_processes") else "threads")


def parameters(cell: str, H: int, vocab: int) -> int:
    model = RNNLM(ModelConfig(cell=cell, hidden_size=H, num_layers=2), vocab)
    return sum(int(np.prod(shape)) for shape in model.param_shapes().values())


def allreduce_seconds(nbytes: float, nodes: int, bandwidth: float) -> float:
    return 2 * (nodes - 1) / nodes * nbytes / bandwidth + 2 * (nodes - 1) * LATENCY


def main():
    keep_freed_memory()  # as the charrnn command does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", help="text file to train on (the benchmark uses Tiny Shakespeare)")
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    args = parser.parse_args()
    import mpi4py
    from mpi4py import MPI

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        subprocess.run([sys.executable, "-m", "charrnn", "prepare", args.corpus, "--out", str(root / "data"),
                        "--quiet"], check=True, capture_output=True)
        vocab = len(json.loads((root / "data" / "vocab.json").read_text())["tokens"])
        print(f"# charrnn bench_mpi: {describe()}; mpi4py {mpi4py.__version__}, "
              f"{' '.join(MPI.Get_library_version().splitlines()[0].split())}")
        print(f"# 2 layers, batch {args.batch} (global), seq {args.seq}, {args.steps} steps per run, best of "
              f"{args.repeats}\n")
        print("| cell | H | 1 rank x 2 workers tok/s | its workers | 2 ranks x 1 thread tok/s | ratio "
              "| collective ms/step |")
        print("|---|---|---|---|---|---|---|")
        rates = {}
        for cell in args.cells.split(","):
            for H in map(int, args.sizes.split(",")):
                threads, ranks = [], []
                for _ in range(args.repeats):
                    threads.append(train(root / "data", root / "run", cell, H, args.steps, 1, 2, args.batch, args.seq))
                    ranks.append(train(root / "data", root / "run", cell, H, args.steps, 2, 1, args.batch, args.seq))
                best_threads, best_ranks = max(threads), max(ranks)
                rates[cell, H] = max(best_threads[0], best_ranks[0])
                print(f"| {cell} | {H} | {best_threads[0]:,.0f} | {best_threads[2]} | {best_ranks[0]:,.0f} | "
                      f"{best_ranks[0] / best_threads[0]:.2f} | {1000 * best_ranks[1]:.1f} |", flush=True)
    print(f"\n# projection: ring all-reduce, latency {LATENCY * 1e6:g} us, R = the faster layout above, "
          f"b = {args.batch} streams per node x seq {args.seq}")
    for (cell, H), rate in rates.items():
        nbytes = 4 * parameters(cell, H, vocab)
        compute = args.batch * args.seq / rate
        print(f"\n{cell} H={H}: {nbytes / 1e6:.1f} MB of gradients, {1000 * compute:.0f} ms of compute per step")
        print("| network | nodes | tok/s | efficiency | all-reduce ms | b for 90% |")
        print("|---|---|---|---|---|---|")
        for network, bandwidth in NETWORKS.items():
            for nodes in NODES:
                reduce = allreduce_seconds(nbytes, nodes, bandwidth)
                efficiency = compute / (compute + reduce)
                needed = int(np.ceil(9 * reduce * rate / args.seq))
                print(f"| {network} | {nodes} | {nodes * args.batch * args.seq / (compute + reduce):,.0f} | "
                      f"{100 * efficiency:.0f}% | {1000 * reduce:.1f} | {needed} |")


if __name__ == "__main__":
    main()
