"""Memory estimates, made before anything large is allocated.

A huge `hidden_size`, `num_layers`, `batch_size`, `seq_len`, `--length` or `--num-samples`
would otherwise spend seconds allocating before a MemoryError; instead the command compares a
closed-form estimate (no loop over layers, no arrays) with the memory the system reports as
available and refuses with both figures. The estimates count the large buffers only, so they
are lower bounds: a refusal is certain to be right, an acceptance can still run short.
"""

from __future__ import annotations

import os

from charrnn.config import ModelConfig
from charrnn.errors import UserError

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
SLOTS = {"sgd": 1, "adagrad": 1, "rmsprop": 1, "adam": 2, "adamw": 2}


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, else physical memory, else None (unknown: no check)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def parameter_count(model: ModelConfig, vocab_size: int) -> int:
    """Closed form of the number of parameters `RNNLM(model, vocab_size)` has."""
    G, H, L = GATES[model.cell], model.hidden_size, model.num_layers
    D = 2 if model.bidirectional else 1
    inputs = model.embedding_dim if model.encoding == "embedding" else vocab_size
    encoder = vocab_size * model.embedding_dim if model.encoding == "embedding" else 0
    first = D * G * H * (inputs + H + 2)
    rest = (L - 1) * D * G * H * (D * H + H + 2)
    return encoder + first + rest + vocab_size * D * H + vocab_size


def itemsize(model: ModelConfig) -> int:
    return 8 if model.dtype == "float64" else 4


def training_bytes(model: ModelConfig, vocab_size: int, batch: int, seq_len: int, optimizer: str,
                   threads: int) -> int:
    """Parameters, gradients (one set per worker thread) and optimizer slots, plus the activations
    and gate buffers kept for backpropagation through time and the head's logits and gradients."""
    G, H, L = GATES[model.cell], model.hidden_size, model.num_layers
    D = 2 if model.bidirectional else 1
    weights = parameter_count(model, vocab_size) * (2 + SLOTS[optimizer] + max(1, threads))
    activations = seq_len * batch * (L * D * H * (G + 3) * 2 + 3 * vocab_size)
    return (weights + activations) * itemsize(model)


def sampling_bytes(model: ModelConfig, vocab_size: int, samples: int, length: int) -> int:
    """The weights, each stream's state and step buffers, its (V,) float64 distribution work, and
    the (samples, length) int64 tokens drawn."""
    G, H, L = GATES[model.cell], model.hidden_size, model.num_layers
    per_stream = L * H * (G + 3) * itemsize(model) + vocab_size * 8 * 6 + length * 8
    return 2 * parameter_count(model, vocab_size) * itemsize(model) + samples * per_stream


def require(need: int, what: str, hint: str):
    """Refuse with one line when `need` bytes exceed what is available."""
    have = available_bytes()
    if have is not None and need > have:
        raise UserError(f"{what} needs about {format_bytes(need)} of memory, more than the "
                        f"{format_bytes(have)} available; {hint}")


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1000
