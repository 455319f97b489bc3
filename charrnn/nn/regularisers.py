"""What a training step adds to the forward and the loss to hold off overfitting a small corpus
(Merity et al., "Regularizing and Optimizing LSTM Language Models", 2018): masks drawn where the
paper draws them, each applied at one seam, and two penalties on the top layer's output.

- dropout (`model.dropout`): a fresh mask at every step, between layers (the classic);
- locked dropout (`model.locked_dropout` between layers, `model.output_dropout` on the top
  output, `model.input_dropout` on an embedding input): one mask per sequence, the same at every
  time step (Gal and Ghahramani's variational dropout);
- weight drop (`model.weight_drop`): DropConnect on each layer's W_hh, one mask per batch, so the
  loop still makes one product per step;
- embedding dropout (`model.embedding_dropout`): whole tokens dropped for a batch, their row of
  the embedding table, or for one-hot and bag-of-words input their column of layer 0's W_ih;
- AR and TAR (`train.activation_penalty`, `train.temporal_penalty`): alpha * mean(h^2) of the top
  output after output dropout, and beta * mean((h_t - h_(t-1))^2) of it before.

Every mask is inverted (what is kept is scaled by 1 / (1 - p)), so evaluation and sampling,
which draw none, need no rescaling. The masks come from the training state's generator, in a
fixed order, so a resumed run draws what it would have. Weight masks act on the parameters:
the forward runs with `masked_weights`, and a gradient with respect to them is masked again
(`mask_weight_grads`: W' = W * M gives dW = dW' * M).

Left out: weight tying, which needs an embedding input as wide as the head (one-hot character
models, the common case here, have no input table to tie).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from charrnn.nn.layers import param_name


@dataclass
class Regularisation:
    """One training step's masks (None where unused) and penalties.

    between: per layer but the last, (T, B, D*H) or locked (1, B, D*H); output: (1, B, D*H);
    inputs: (1, B, E) on an embedding input; weight_hh: parameter name -> (G*H, H) mask;
    tokens: (V,) mask over the vocabulary; the penalties' coefficients alpha and beta."""

    between: list[np.ndarray] | None = None
    output: np.ndarray | None = None
    inputs: np.ndarray | None = None
    weight_hh: dict[str, np.ndarray] | None = None
    tokens: np.ndarray | None = None
    activation_penalty: float = 0.0
    temporal_penalty: float = 0.0

    def rows(self, rows: slice) -> Regularisation:
        """The masks of streams `rows` of the batch (the weight and token masks are the whole batch's)."""
        cut = (lambda m: None if m is None else m[:, rows])
        return replace(self, between=None if self.between is None else [cut(m) for m in self.between],
                       output=cut(self.output), inputs=cut(self.inputs))

    def without_weight_masks(self) -> Regularisation:
        """The same, for a shard whose weights were masked once for the whole batch."""
        return replace(self, weight_hh=None, tokens=None)

    @property
    def penalised(self) -> bool:
        return bool(self.activation_penalty or self.temporal_penalty)


def inverted(rng: np.random.Generator, shape: tuple[int, ...], p: float, dtype: np.dtype) -> np.ndarray:
    """An inverted-dropout mask: 0 with probability p, else 1 / (1 - p)."""
    return (rng.random(shape) >= p).astype(dtype) / dtype.type(1 - p)


def draw(model, rng: np.random.Generator, T: int, B: int, activation_penalty: float = 0.0,
         temporal_penalty: float = 0.0) -> Regularisation | None:
    """The masks for a batch of T steps and B streams of `model` (an RNNLM), or None when its
    config and the penalties ask for nothing. Drawn in this order: per-step dropout, locked
    dropout between layers, output, input, weight drop (layer by layer), embedding dropout."""
    config, dtype, width = model.config, model.dtype, model.output_size
    between = None
    if config.num_layers > 1 and (config.dropout or config.locked_dropout):
        between = [np.ones((1, B, width), dtype) for _ in range(config.num_layers - 1)]
        if config.dropout:  # first, as before locked dropout existed: older runs resume bit for bit
            between = [inverted(rng, (T, B, width), config.dropout, dtype) for _ in between]
        if config.locked_dropout:
            between = [mask * inverted(rng, (1, B, width), config.locked_dropout, dtype) for mask in between]
    output = inverted(rng, (1, B, width), config.output_dropout, dtype) if config.output_dropout else None
    inputs = None
    if config.input_dropout:
        inputs = inverted(rng, (1, B, config.embedding_dim), config.input_dropout, dtype)
    weight_hh = None
    if config.weight_drop:
        shapes = model.param_shapes()
        weight_hh = {name: inverted(rng, shapes[name], config.weight_drop, dtype)
                     for name in shapes if name.startswith("rnn.weight_hh")}
    tokens = inverted(rng, (model.vocab_size,), config.embedding_dropout, dtype) if config.embedding_dropout else None
    found = Regularisation(between, output, inputs, weight_hh, tokens, activation_penalty, temporal_penalty)
    return found if any(m is not None for m in (between, output, inputs, weight_hh, tokens)) or found.penalised \
        else None


def token_masked(params: dict[str, np.ndarray], encoding: str, directions: int) -> list[tuple[str, int]]:
    """(parameter, axis) pairs that embedding dropout masks: the table's rows, or W_ih's columns."""
    if encoding == "embedding":
        return [("embedding.weight", 0)]
    return [(param_name("weight_ih", 0, reverse), 1) for reverse in (False, True)[:directions]]


def masked_weights(params: dict[str, np.ndarray], reg: Regularisation | None, encoding: str,
                   directions: int = 1) -> dict[str, np.ndarray]:
    """The parameters the forward runs with: `params`, with weight drop and embedding dropout
    applied (new arrays; `params` is untouched)."""
    if reg is None or (reg.weight_hh is None and reg.tokens is None):
        return params
    weights = dict(params)
    for name, mask in (reg.weight_hh or {}).items():
        weights[name] = params[name] * mask
    if reg.tokens is not None:
        for name, axis in token_masked(params, encoding, directions):
            weights[name] = params[name] * (reg.tokens[:, None] if axis == 0 else reg.tokens[None, :])
    return weights


def mask_weight_grads(grads: dict[str, np.ndarray], reg: Regularisation | None, encoding: str,
                      directions: int = 1) -> dict[str, np.ndarray]:
    """Gradients with respect to the masked weights -> with respect to the parameters, in place."""
    if reg is None:
        return grads
    for name, mask in (reg.weight_hh or {}).items():
        grads[name] *= mask
    if reg.tokens is not None:
        for name, axis in token_masked(grads, encoding, directions):
            grads[name] *= reg.tokens[:, None] if axis == 0 else reg.tokens[None, :]
    return grads


def activation_penalties(top: np.ndarray, dropped: np.ndarray, reg: Regularisation) -> float:
    """top (T, B, D*H) before output dropout, dropped after it -> alpha * mean(dropped^2)
    + beta * mean((top_t - top_(t-1))^2), summed in float64 (what the gradient checks differentiate)."""
    value = 0.0
    if reg.activation_penalty:
        value += reg.activation_penalty * float(np.mean(np.square(dropped, dtype=np.float64)))
    if reg.temporal_penalty and len(top) > 1:
        value += reg.temporal_penalty * float(np.mean(np.square(top[1:] - top[:-1], dtype=np.float64)))
    return value


def add_activation_penalty_grads(d_top: np.ndarray, top: np.ndarray, dropped: np.ndarray, reg: Regularisation):
    """Add the gradient of `activation_penalties` with respect to `top` (T, B, D*H) into d_top, in
    place, through one scratch array: training calls this every step, and the plain NumPy form
    (float64 squares, a temporary per term) took 3 times as long on a 2 x 512 GRU's batch."""
    scratch = np.empty_like(top)
    if reg.activation_penalty:
        np.multiply(dropped, 2 * reg.activation_penalty / dropped.size, out=scratch)
        if reg.output is not None:
            scratch *= reg.output  # d dropped / d top is the output mask
        d_top += scratch
    if reg.temporal_penalty and len(top) > 1:
        change = np.subtract(top[1:], top[:-1], out=scratch[1:])
        change *= 2 * reg.temporal_penalty / change.size
        d_top[1:] += change
        d_top[:-1] -= change
