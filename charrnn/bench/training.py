"""`python -m charrnn.bench.training`: training and sampling throughput, side by side with PyTorch CPU.

For each cell (rnn, lstm, gru) and hidden size (128, 256, 512): 2 layers, batch 64, seq 128,
V = 65, one-hot input. Training is forward + backward + a plain `p -= lr * g` update; sampling
is one token at a time per stream, with softmax sampling, for 1, 8 and 64 streams. When `torch`
is importable the same shapes are timed in PyTorch (training, and sampling one stream),
alternating with ours in the same run, and the ratio printed. The best of the repeats is reported
for both, which is the least noisy statistic on a shared machine. The header names the CPU,
NumPy's SIMD level and the BLAS kernel, which decide what is slow (`charrnn.compute.machine`), and
PyTorch's kernel level, with any setting that holds MKL or oneDNN to an older code path. Each
training row also gives the share of the machine's float32 GEMM peak that the matrix products'
FLOPs reach, ours and PyTorch's: where PyTorch's is near 100%, no implementation of the same
products can be much faster than it (and above 100%, PyTorch's kernels outrun NumPy's BLAS).

Threads: training lays its work out as `charrnn train` does with `threads: 0` (workers on batch
shards with single-threaded BLAS, in threads or forked processes, or one worker with BLAS's
threads, whichever is faster here, see charrnn.training.layout); sampling uses BLAS's own threads, as
the CLI does. PyTorch's thread pool is set to the same number of cores, and the bench pauses
before each model so that PyTorch's idle threads have stopped spinning when ours are timed.

PyTorch runs in a process of its own, spawned afresh, so with glibc's stock malloc settings, as
a PyTorch user runs it: the settings charrnn makes for itself at start (`charrnn.compute.allocator`)
would speed PyTorch's LSTM-128 up by about a quarter too (BENCHMARKS.md).
"""

import argparse
import contextlib
import multiprocessing
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from charrnn.compute.allocator import keep_freed_memory
from charrnn.compute.blas import OpenBLAS
from charrnn.compute.machine import describe
from charrnn.compute.mkl import mkl_products
from charrnn.config import ModelConfig
from charrnn.generate.sample import SamplingSettings, generate
from charrnn.nn.model import RNNLM
from charrnn.training.layout import choose_layout
from charrnn.training.parallel import ShardedModel, resolve_threads

V, LAYERS, BATCH, SEQ, LR = 65, 2, 64, 128, 1e-3
SETTLE_SECONDS = 1.0
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
ONEDNN_ISA_SETTINGS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")  # cap the ISA of PyTorch's fused LSTM/GRU kernels


def training_flops(cell: str, H: int) -> float:
    """Matrix-product FLOPs per token of forward + backward (each backward product is two)."""
    G = GATES[cell]
    forward = sum(2 * G * H * H + (2 * G * H * H if layer else 0) for layer in range(LAYERS)) + 2 * V * H
    return 3 * forward + 2 * G * H * V  # + the one-hot input-weight gradient


def gemm_peak(threads: int, n: int = 2048, repeats: int = 5) -> tuple[float, str]:
    """(float32 GFLOPS, the BLAS that reached it) of `threads` single-threaded n x n products running
    at once, through NumPy's BLAS and through MKL where the `mkl` extra is installed (training's
    products run through MKL where they are packed, and its kernels can be the faster): the best of
    `repeats` rounds, as the best is the least disturbed by other work on a shared machine."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    products, gemm = {"NumPy's BLAS": lambda _: a @ a}, mkl_products()
    if gemm is not None:
        products["MKL"] = lambda _: gemm.multiply(a, a)
    blas = OpenBLAS.find()
    rates = {}
    with ThreadPoolExecutor(threads) as pool, blas.limited(1) if blas else contextlib.nullcontext():
        for name, product in products.items():
            seconds = best_time(lambda: list(pool.map(product, range(threads))), repeats)
            rates[name] = threads * 2 * n ** 3 / seconds / 1e9
    best = max(rates, key=rates.get)
    return rates[best], best


class Ours:
    def __init__(self, cell, H, threads):
        self.model = RNNLM(ModelConfig(cell=cell, hidden_size=H, num_layers=LAYERS), V)
        self.params = self.model.init_params(np.random.default_rng(0))
        self.sharded = ShardedModel(self.model, threads, BATCH)
        rng = np.random.default_rng(1)
        self.x, self.y = rng.integers(0, V, (SEQ, BATCH)), rng.integers(0, V, (SEQ, BATCH))
        choose_layout(self.sharded, self.params, self.x, self.y, self.model.initial_state(BATCH))  # as training does

    def train_step(self):
        _, grads, _ = self.sharded.loss_and_grads(self.params, self.x, self.y, self.model.initial_state(BATCH))
        for name, p in self.params.items():
            p -= LR * grads[name]

    def sample(self, n, streams=1):
        generate(self.model, self.params, np.array([0]), n, streams, SamplingSettings(1.0), np.random.default_rng(0))


class Torch:
    def __init__(self, torch, cell, H):
        self.torch = torch
        kind = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
        self.rnn, self.head = kind(V, H, num_layers=LAYERS), torch.nn.Linear(H, V)
        self.params = list(self.rnn.parameters()) + list(self.head.parameters())
        rng = np.random.default_rng(1)
        self.x = torch.from_numpy(rng.integers(0, V, (SEQ, BATCH)))
        self.y = torch.from_numpy(rng.integers(0, V, (SEQ, BATCH)))

    def train_step(self):
        torch = self.torch
        onehot = torch.nn.functional.one_hot(self.x, V).float()
        logits = self.head(self.rnn(onehot)[0])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), self.y.reshape(-1))
        for p in self.params:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in self.params:
                p -= LR * p.grad

    def sample(self, n):
        torch = self.torch
        token, state = torch.zeros(1, 1, dtype=torch.long), None
        with torch.no_grad():
            for _ in range(n):
                out, state = self.rnn(torch.nn.functional.one_hot(token, V).float(), state)
                probs = torch.softmax(self.head(out[0]), dim=-1)
                token = torch.multinomial(probs, 1).view(1, 1)


class TorchProcess:
    """PyTorch's side of the bench in a spawned process: `call("model", cell, H)`, then
    `call("train")` or `call("sample", n)` -> seconds, timed there as `best_time(..., 1)` times ours."""

    def __init__(self, cores: int):
        context = multiprocessing.get_context("spawn")
        self.connection, there = context.Pipe()
        self.process = context.Process(target=torch_side, args=(there, cores), daemon=True)
        self.process.start()
        self.version, self.kernels = self.connection.recv() or (None, None)  # None: torch is not installed

    def call(self, *request):
        self.connection.send(request)
        return self.connection.recv()

    def close(self):
        self.connection.send(None)
        self.process.join()


def torch_side(connection, cores: int):
    """The loop of `TorchProcess`'s process: answer its requests until it sends None."""
    try:
        import torch
    except ImportError:
        connection.send(None)
        return
    torch.set_num_threads(cores)
    connection.send((torch.__version__, torch.backends.cpu.get_cpu_capability()))
    model = None
    for request, *args in iter(connection.recv, None):
        if request == "model":
            model = Torch(torch, *args)
            connection.send(True)
        elif request == "train":
            connection.send(best_time(model.train_step, 1))
        else:
            connection.send(best_time(lambda: model.sample(*args), 1))


def best_time(function, repeats):
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    keep_freed_memory()  # as the charrnn command does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--sizes", default="128,256,512")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sample-tokens", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=0,
                        help="worker threads (0: chosen as `charrnn train` chooses, see charrnn.training.layout)")
    args = parser.parse_args()
    cores = resolve_threads(0)
    torch = TorchProcess(cores)
    if torch.version is None:
        torch.process.join()
        torch = None
    peak, peak_blas = gemm_peak(cores)
    onednn = "".join(f"{name}={os.environ[name]}, " for name in ONEDNN_ISA_SETTINGS if os.environ.get(name))
    torch_line = (f"torch {torch.version} ({torch.kernels} kernels, {onednn}{cores} threads, own process)"
                  if torch else None)
    print(f"# charrnn bench: {describe()}; {torch_line or 'torch not installed'}")
    print(f"# float32 GEMM peak ({cores} x single-threaded 2048^3, best of 5, {peak_blas}): {peak:.0f} GFLOPS; "
          f"{LAYERS} layers, batch {BATCH}, seq {SEQ}, V {V}; best of {args.repeats}\n")
    print("| cell | H | layout | train tok/s | torch tok/s | ratio | % GEMM peak | torch % GEMM peak |")
    print("|---|---|---|---|---|---|---|---|")
    rows, samples = [], []
    for cell in args.cells.split(","):
        for H in map(int, args.sizes.split(",")):
            time.sleep(SETTLE_SECONDS)  # PyTorch's idle OpenMP threads spin for a while: not while ours choose
            ours, ref = Ours(cell, H, args.threads), torch
            if ref:
                ref.call("model", cell, H)
            layout = "{layout}, {step_products}".format(**ours.sharded.layout()).replace("_", "-")
            train, train_ref = [], []
            for _ in range(args.repeats):  # alternate so both see the same machine load
                train.append(BATCH * SEQ / best_time(ours.train_step, 1))
                if ref:
                    train_ref.append(BATCH * SEQ / ref.call("train"))
            ours.sharded.close()  # sampling runs as `charrnn sample` does, with BLAS's own threads
            share = {rate: f"{100 * rate * training_flops(cell, H) / (peak * 1e9):.0f}%" for rate in train + train_ref}
            rows.append([cell, H, layout, f"{max(train):,.0f}", f"{max(train_ref):,.0f}" if ref else "-",
                         f"{max(train) / max(train_ref):.2f}" if ref else "-", share[max(train)],
                         share[max(train_ref)] if ref else "-"])
            print("| " + " | ".join(map(str, rows[-1])) + " |", flush=True)
            rates = {}
            for streams in (1, 8, 64):
                n = max(50, args.sample_tokens // streams)
                rates[streams] = n * streams / min(best_time(lambda: ours.sample(n, streams), 1) for _ in range(2))
            ref_rate = args.sample_tokens / min(ref.call("sample", args.sample_tokens)
                                                for _ in range(2)) if ref else None
            samples.append([cell, H, f"{rates[1]:,.0f}", f"{ref_rate:,.0f}" if ref else "-",
                            f"{rates[1] / ref_rate:.1f}" if ref else "-", f"{rates[8]:,.0f}", f"{rates[64]:,.0f}",
                            f"{64 * rates[1] / rates[64]:.1f}x"])
    print("\nSampling, tokens/s summed over the streams (one token per stream per step):\n")
    print("| cell | H | 1 stream | torch 1 stream | ratio | 8 streams | 64 streams "
          "| 64 streams cost, in single-stream time |")
    print("|---|---|---|---|---|---|---|---|")
    for row in samples:
        print("| " + " | ".join(map(str, row)) + " |")
    if torch:
        torch.close()


if __name__ == "__main__":
    main()
