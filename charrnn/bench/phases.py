"""`python -m charrnn.bench.phases`: where one training step's time goes, phase by phase.

The step is `make bench`'s (2 layers, batch 64, seq 128, V = 65, one-hot input) followed by
clipping and an Adam update, as `charrnn train` does. Phases are timed by wrapping the library's
own functions for the length of the measurement (nothing in the library knows about it):

- input projection: layer 0's gather of W_ih columns, layer 1's product with the layer below;
- the forward and backward time loops, split into their matrix products with W_hh and the
  element-wise gate arithmetic (the loop's time less its products);
- head and softmax: logits, softmax-NLL and its gradient, and the head's backward products;
- weight gradients: the products and bias sums after each backward loop;
- with worker threads, the sum of their shard gradients; clipping; the optimizer.

The step products are laid out as `charrnn train` chooses (`charrnn.training.layout.choose_layout`).
Times are per step, the median of the repeats. With `--threads 1` the products use BLAS's own
threads; with more, each worker runs single-threaded BLAS on its shard, and phase times are
summed over the workers (CPU seconds, not wall-clock), beside the step's wall-clock time.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import defaultdict

import numpy as np

from charrnn.compute.allocator import keep_freed_memory
from charrnn.compute.machine import describe
from charrnn.config import ModelConfig, TrainConfig
from charrnn.nn import encoders, head, layers, products
from charrnn.nn import model as model_module
from charrnn.nn.model import RNNLM
from charrnn.training.layout import choose_layout
from charrnn.training.optim import clip_by_global_norm, make_optimizer
from charrnn.training.parallel import ShardedModel

V, LAYERS, BATCH, SEQ = 65, 2, 64, 128


class Clock:
    """Seconds per named phase, added up across threads."""

    def __init__(self):
        self.seconds = defaultdict(float)

    def wrap(self, name, function):
        def timed(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - begin
        return timed


class TimedNumPy:
    """numpy, with `matmul` timed as the loop's products: what the step products see while profiling."""

    def __init__(self, clock: Clock, phase: dict):
        self.clock, self.phase = clock, phase
        self.matmul = self.timed(np.matmul)

    def __getattr__(self, name):
        return getattr(np, name)

    def timed(self, function):
        """`function`, its time counted as the current loop's W_hh products."""
        def run(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.clock.seconds[f"{self.phase['now']} loop: W_hh products"] += time.perf_counter() - begin
        return run


@contextlib.contextmanager
def instrumented(clock: Clock, cell_class):
    """Wrap the library's phase functions with `clock` for the block."""
    phase = {"now": "forward"}

    def loop(name, function):
        def run(*args, **kwargs):
            phase["now"] = name
            return clock.wrap(f"{name} loop: total", function)(*args, **kwargs)
        return run

    timed_numpy = TimedNumPy(clock, phase)
    packed = products.PackedStepProduct
    patches = [(cell_class, "forward", loop("forward", cell_class.forward)),
               (cell_class, "backward", loop("backward", cell_class.backward)),
               (products, "np", timed_numpy),
               (packed, "times", timed_numpy.timed(packed.times)),
               (packed, "add_times", timed_numpy.timed(packed.add_times)),
               (encoders.BagInput, "project", clock.wrap("input projection", encoders.BagInput.project)),
               (encoders.DenseInput, "project", clock.wrap("input projection", encoders.DenseInput.project)),
               (encoders.BagInput, "weight_grad", clock.wrap("weight gradients", encoders.BagInput.weight_grad)),
               (encoders.DenseInput, "weight_grad", clock.wrap("weight gradients", encoders.DenseInput.weight_grad)),
               (encoders.DenseInput, "input_grad", clock.wrap("input gradients", encoders.DenseInput.input_grad)),
               (layers, "layer_backward", clock.wrap("layer backward: total", layers.layer_backward)),
               (model_module.head, "logits", clock.wrap("head and softmax", head.logits)),
               (model_module.head, "softmax_nll", clock.wrap("head and softmax", head.softmax_nll)),
               (model_module.RNNLM, "nll_and_grads", clock.wrap("model: total", RNNLM.nll_and_grads))]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def phases(seconds: dict, steps: int) -> dict:
    """Raw wrapped times -> the published phases, in ms per step."""
    s = {k: 1000 * v / steps for k, v in seconds.items()}
    out = {"input projection": s.get("input projection", 0.0)}
    for name in ("forward", "backward"):
        products = s.get(f"{name} loop: W_hh products", 0.0)
        out[f"{name} loop: W_hh products"] = products
        out[f"{name} loop: gate arithmetic"] = s.get(f"{name} loop: total", 0.0) - products
    weight = s.get("layer backward: total", 0.0) - s.get("backward loop: total", 0.0) - s.get("input gradients", 0.0)
    out["weight gradients and bias sums"] = weight
    out["input gradients (layer 1 to 0)"] = s.get("input gradients", 0.0)
    accounted = sum(out.values()) - out["input projection"] + s.get("input projection", 0.0)
    out["head, softmax and the rest of the model"] = s.get("model: total", 0.0) - accounted
    for name in ("thread-shard gradient sum", "clipping", "optimizer (Adam)"):
        out[name] = s.get(name, 0.0)
    return out


def profile(cell: str, H: int, threads: int, repeats: int) -> tuple[dict, float]:
    """(ms per phase, wall-clock ms per step) for one cell and size."""
    model = RNNLM(ModelConfig(cell=cell, hidden_size=H, num_layers=LAYERS), V)
    params = model.init_params(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, V, (SEQ, BATCH)), rng.integers(0, V, (SEQ, BATCH))
    sharded = ShardedModel(model, threads, BATCH, may_fork=False)  # the phases are timed in this process
    choose_layout(sharded, params, x, y, model.initial_state(BATCH))  # the step products, as training chooses them
    optimizer = make_optimizer(TrainConfig(optimizer="adam"))
    state = optimizer.init(params)
    clock = Clock()
    walls, per_step = [], []

    def step():
        begin = time.perf_counter()
        mapped = sharded.map
        with contextlib.ExitStack() as stack:
            timed_map = clock.wrap("map", mapped)
            stack.callback(setattr, sharded, "map", mapped)
            sharded.map = timed_map
            total = clock.wrap("sharded", sharded.loss_and_grads)
            _, grads, _ = total(params, x, y, model.initial_state(BATCH))
        clock.wrap("clipping", clip_by_global_norm)(grads, 1.0)
        clock.wrap("optimizer (Adam)", optimizer.step)(params, grads, state, 1e-4)
        walls.append(time.perf_counter() - begin)

    step()  # warm-up
    with instrumented(clock, type(model.cell)):
        for _ in range(repeats):
            clock.seconds.clear()
            step()
            clock.seconds["thread-shard gradient sum"] = clock.seconds["sharded"] - clock.seconds["map"]
            per_step.append(phases(clock.seconds, 1))
    sharded.close()
    median = {k: float(np.median([p[k] for p in per_step])) for k in per_step[0]}
    return median, 1000 * float(np.median(walls[1:])), sharded.step_products


def main():
    keep_freed_memory()  # as the charrnn command does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--sizes", default="128,512")
    parser.add_argument("--threads", type=int, default=1, help="worker threads (1: BLAS's own threads)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {}
    for cell in args.cells.split(","):
        for H in map(int, args.sizes.split(",")):
            results[f"{cell}-{H}"] = profile(cell, H, args.threads, args.repeats)
    columns = list(results)
    print(f"# charrnn bench_phases: {describe()}")
    print(f"# ms per training step ({LAYERS} layers, batch {BATCH}, seq {SEQ}, V {V}, Adam), {args.threads} "
          f"worker thread{'s' if args.threads > 1 else ''}, median of {args.repeats}\n")
    print("| phase | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for phase in results[columns[0]][0]:
        print(f"| {phase} | " + " | ".join(f"{results[c][0][phase]:.1f}" for c in columns) + " |")
    print("| **step, wall clock** | " + " | ".join(f"**{results[c][1]:.1f}**" for c in columns) + " |")
    print("| step products | " + " | ".join(results[c][2].replace("_", "-") for c in columns) + " |")


if __name__ == "__main__":
    main()
