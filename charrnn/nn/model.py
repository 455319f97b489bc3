"""The language model: tokens (T, B) -> encoder -> recurrent stack -> head -> logits (T, B, V).

Parameters live in one flat, ordered dict named like PyTorch's modules (`embedding.weight`,
`rnn.weight_ih_l0`, ..., `rnn.weight_hh_l1_reverse`, `head.weight`, `head.bias`), so the arrays
under `rnn.` load into `torch.nn.RNN/LSTM/GRU` unchanged; gradients come in a dict with the same
keys. The model object holds only its configuration: every call takes the parameters and returns
what it computed, so two forwards can never mix up their caches.

`State` is what carries over between chunks of a stream: one tuple per layer and direction,
`(h,)` or `(h, c)` of shape (B, H), and the encoder's last tokens for bag-of-words.
`Stepper` reads on from a state it keeps, a step at a time for sampling or a chunk at a time for
scoring a long text; it steps through the cells' `read` (their forward, or for the GRU a leaner
step that keeps nothing for a backward) over weights prepared once and buffers allocated once, so
generating a token allocates nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from charrnn.config import ModelConfig
from charrnn.errors import UserError
from charrnn.nn import head, regularisers
from charrnn.nn.cells import make_cell
from charrnn.nn.encoders import BagEncoder, BagInput, DenseInput, EmbeddingEncoder
from charrnn.nn.layers import layer_weights, param_name, stack_backward, stack_forward
from charrnn.nn.regularisers import Regularisation

LINE_BYTES = 64  # a cache line


@dataclass
class State:
    """Recurrent state per (layer, direction), each a tuple of (B, H) arrays; encoder history (K-1, B)."""

    layers: list[tuple[np.ndarray, ...]]
    history: np.ndarray

    def rows(self, rows) -> State:
        """The state of streams `rows` (a slice (a view), or an array of R indices (a copy)): (R, H) each."""
        return State([tuple(a[rows] for a in layer) for layer in self.layers], self.history[:, rows])

    @staticmethod
    def joined(states: list[State]) -> State:
        """States of several batches -> one batch, their streams in order."""
        layers = [tuple(np.concatenate(parts) for parts in zip(*layer)) for layer in zip(*(s.layers for s in states))]
        return State(layers, np.concatenate([s.history for s in states], axis=1))


class RNNLM:
    """An Elman RNN / LSTM / GRU language model over a vocabulary of `vocab_size` tokens."""

    def __init__(self, config: ModelConfig, vocab_size: int, products: str = "batch_major"):
        self.config = config
        self.vocab_size = vocab_size
        self.cell = make_cell(config.cell, config.nonlinearity, products)  # see charrnn.nn.products
        self.directions = 2 if config.bidirectional else 1
        self.dtype = np.dtype(config.dtype)
        if config.encoding == "embedding":
            self.encoder = EmbeddingEncoder(vocab_size, config.embedding_dim)
        else:
            self.encoder = BagEncoder(vocab_size, config.bow_window if config.encoding == "bow" else 1)

    @property
    def output_size(self) -> int:
        return self.config.hidden_size * self.directions

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter names in order, with shapes."""
        H, G = self.config.hidden_size, self.cell.gates
        shapes = dict(self.encoder.param_shapes())
        for layer in range(self.config.num_layers):
            width = self.encoder.input_size if layer == 0 else self.output_size
            for reverse in ([False, True] if self.directions == 2 else [False]):
                shapes[param_name("weight_ih", layer, reverse)] = (G * H, width)
                shapes[param_name("weight_hh", layer, reverse)] = (G * H, H)
                shapes[param_name("bias_ih", layer, reverse)] = (G * H,)
                shapes[param_name("bias_hh", layer, reverse)] = (G * H,)
        shapes["head.weight"] = (self.vocab_size, self.output_size)
        shapes["head.bias"] = (self.vocab_size,)
        return shapes

    def init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """PyTorch's defaults: recurrent weights and biases U(-1/sqrt(H), 1/sqrt(H)), the head
        U(-1/sqrt(in), 1/sqrt(in)), embeddings N(0, 1); optionally orthogonal W_hh blocks and an
        LSTM forget-gate bias."""
        H = self.config.hidden_size
        params = {}
        for name, shape in self.param_shapes().items():
            if name == "embedding.weight":
                value = rng.standard_normal(shape)
            else:
                bound = 1 / np.sqrt(self.output_size if name.startswith("head") else H)
                value = rng.uniform(-bound, bound, shape)
            if "weight_hh" in name and self.config.init == "orthogonal":
                value = np.concatenate([orthogonal(rng, H) for _ in range(self.cell.gates)])
            if self.config.cell == "lstm" and self.config.forget_bias and "bias_" in name:
                value[H:2 * H] = self.config.forget_bias if "bias_ih" in name else 0.0
            params[name] = value.astype(self.dtype)
        return params

    def initial_state(self, batch: int) -> State:
        """Zeros for every layer and direction, an empty encoder history."""
        H = self.config.hidden_size
        layers = [tuple(np.zeros((batch, H), self.dtype) for _ in range(self.cell.arity))
                  for _ in range(self.config.num_layers * self.directions)]
        return State(layers, self.encoder.initial_history(batch))

    def regularisation(self, rng: np.random.Generator | None, T: int, B: int, activation_penalty: float = 0.0,
                       temporal_penalty: float = 0.0) -> Regularisation | None:
        """What one training step of T steps and B streams adds (see `charrnn.nn.regularisers`), or None."""
        return None if rng is None else regularisers.draw(self, rng, T, B, activation_penalty, temporal_penalty)

    def forward(self, params, tokens: np.ndarray, state: State, reg: Regularisation | None = None):
        """tokens (T, B) -> (logits (T, B, V), final state, cache). `reg` from `regularisation`:
        the weights it masks, then its masks on the input, between layers and on the top output."""
        weights = regularisers.masked_weights(params, reg, self.config.encoding, self.directions)
        inputs, history = self.encoder.encode(weights, tokens, state.history)
        if reg is not None and reg.inputs is not None:
            inputs = DenseInput(inputs.x * reg.inputs)
        top, finals, caches = stack_forward(self.cell, weights, inputs, state.layers, self.config.num_layers,
                                            self.directions, reg.between if reg is not None else None)
        dropped = top * reg.output if reg is not None and reg.output is not None else top
        z = head.logits(dropped, params["head.weight"], params["head.bias"])
        return z, State(finals, history), (tokens, top, dropped, caches, reg, weights)

    def loss_and_grads(self, params, tokens: np.ndarray, targets: np.ndarray, state: State,
                       reg: Regularisation | None = None):
        """tokens, targets (T, B) -> (mean NLL in nats, grads by name, final state, d initial state).

        The gradients are those of the mean NLL plus `reg`'s penalties; the loss is the NLL alone,
        comparable with validation. The gradient of the loss with respect to the initial state is
        returned for checking; the trainer carries the final state to the next chunk without
        gradient (truncated BPTT).
        """
        nll, grads, final, d_states = self.nll_and_grads(params, tokens, targets, state, reg)
        return float(np.mean(nll)), grads, final, d_states

    def nll_and_grads(self, params, tokens: np.ndarray, targets: np.ndarray, state: State,
                      reg: Regularisation | None = None, weights_of: np.ndarray | None = None):
        """tokens, targets (T, B) -> (NLL of every target (T, B), grads of the mean NLL (and `reg`'s
        penalties) by name, final state, d initial state), from one forward pass. The NLLs equal
        `token_nll`'s bit for bit. With `weights_of` (T, B), the grads are those of the weighted
        sum of the NLLs instead (the loss at one position alone, for `charrnn.inspect.memory`)."""
        z, final, (tokens, top, dropped, caches, reg, weights) = self.forward(params, tokens, state, reg)
        T, B, V = z.shape
        nll, d_z = head.softmax_nll(z.reshape(T * B, V), targets.reshape(T * B))
        if weights_of is not None:
            d_z *= (weights_of.reshape(T * B, 1) * (T * B)).astype(d_z.dtype)
        flat_dropped = dropped.reshape(T * B, -1)
        grads = {"head.weight": d_z.T @ flat_dropped, "head.bias": d_z.sum(axis=0)}
        d_top = (d_z @ params["head.weight"]).reshape(T, B, -1)
        if reg is not None and reg.output is not None:
            d_top *= reg.output
        if reg is not None and reg.penalised:
            regularisers.add_activation_penalty_grads(d_top, top, dropped, reg)
        layer_grads, d_inputs, d_states = stack_backward(self.cell, weights, d_top, caches,
                                                         self.config.num_layers, self.directions,
                                                         reg.between if reg is not None else None)
        grads.update(layer_grads)
        if reg is not None and reg.inputs is not None:
            d_inputs = d_inputs * reg.inputs
        grads.update(self.encoder.backward(weights, tokens, d_inputs))
        regularisers.mask_weight_grads(grads, reg, self.config.encoding, self.directions)
        return nll.reshape(T, B), {name: grads[name] for name in params}, final, d_states

    def token_nll(self, params, tokens: np.ndarray, targets: np.ndarray, state: State):
        """tokens, targets (T, B) -> (NLL of every target in nats (T, B), final state)."""
        z, final, _ = self.forward(params, tokens, state)
        T, B, V = z.shape
        return head.token_nll(z.reshape(T * B, V), targets.reshape(T * B)).reshape(T, B), final

    def stepper(self, params, batch: int) -> Stepper:
        if self.directions == 2:
            raise UserError("a bidirectional model reads the future, so it cannot generate text step by step")
        return Stepper(self, params, batch)


class Reading:
    """What a stepper offers on top of its `read(tokens (T, B)) -> logits (T, B, V)` (a model's
    `Stepper`, an ensemble's): a step at a time, and the NLL of a read."""

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (B,) -> logits (B, V) for the next token (a buffer, overwritten by the next step)."""
        return self.read(tokens[None])[0]

    def nll(self, tokens: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """tokens, targets (T, B) -> the NLL in nats of every target (T, B), read on from the state."""
        T, B = tokens.shape
        return head.token_nll(rows(self.read(tokens)), targets.reshape(T * B)).reshape(T, B)


class Stepper(Reading):
    """Feeds T tokens per stream at a time, state kept inside: `read(tokens (T, B)) -> logits (T, B, V)`;
    `step(tokens (B,))` is a read of one step, `nll(tokens, targets)` scores a read.

    The weights are prepared once here, and packed once where the cell's layout packs (see
    `charrnn.nn.products`); the buffers for a read of T steps are made on the first such read and
    kept until a read of another length. So a read of one-hot input (sampling a token, or the
    next chunk of a long text's pieces) allocates nothing: one product per layer and step plus the
    head, through the cell's `read` (its forward, or a leaner one where nothing goes backward).
    """

    def __init__(self, model: RNNLM, params, batch: int):
        self.model, self.params, self.batch = model, params, batch
        self.cell = model.cell
        self.weights = [self.cell.prepare_reading(*layer_weights(params, layer, False))
                        for layer in range(model.config.num_layers)]  # (w_in, bias, prepared) per layer
        w_in, bias, _ = self.weights[0]
        self.bag_table = self.onehot_table = None  # each as wide as the gate rows, padding included
        if isinstance(model.encoder, BagEncoder) and model.encoder.window == 1:
            self.onehot_table = line_padded(w_in.T, len(bias))  # a one-hot step is one row: bias folded in
            self.onehot_table[:, :len(bias)] += bias
        elif isinstance(model.encoder, BagEncoder):
            self.bag_table = line_padded(BagInput.padded_table(w_in), len(bias))
        self.state = model.initial_state(batch)
        self.steps = 0  # the read length the buffers below are made for

    def reset(self, state: State):
        self.state = state

    def resized(self, batch: int) -> Stepper:
        """A stepper for `batch` streams from zeros, sharing these prepared weights (the server's
        batch grows and shrinks between steps: preparing, and packing, happen once)."""
        other = copy.copy(self)
        other.batch, other.steps, other.state = batch, 0, self.model.initial_state(batch)
        return other

    def allocate(self, T: int):
        """Buffers and input products for reads of T steps."""
        B, H, dtype, products = self.batch, self.model.config.hidden_size, self.model.dtype, self.cell.products
        self.layers = []  # per layer: (gate rows padded (T, B, G + pad), gate buffer (T, B, G), its rows
        for layer, (w_in, bias, _) in enumerate(self.weights):  # (T * B, G), input product, cell buffers)
            # (made as a copy: allocated in place with np.empty or np.zeros, the buffers landed elsewhere
            # in the heap and pieces read 5-8% slower on two worker threads, a 2 MB text, 2026-12-03)
            padded = line_padded(np.empty((T, B, len(bias)), dtype), len(bias))
            xw = padded[..., :len(bias)]
            projection = products.projection(w_in, T * B, len(bias)) if layer or self.onehot_table is None else None
            self.layers.append((padded, xw, rows(xw), projection, self.cell.allocate_reading(T, B, H, dtype)))
        self.head = products.product(self.params["head.weight"], T * B)
        self.logits = np.empty((T, B, self.model.vocab_size), dtype)
        self.logit_rows = rows(self.logits)
        self.steps = T

    def read(self, tokens: np.ndarray, logits: bool = True) -> np.ndarray | None:
        """tokens (T, B) -> logits (T, B, V) for the token after each (a buffer, overwritten by the next
        read); with `logits` False, only the state moves on (no head product) and None is returned."""
        if len(tokens) != self.steps:
            self.allocate(len(tokens))
        states = self.state.layers
        (padded, xw, xw_rows, projection, _), bias = self.layers[0], self.weights[0][1]
        if self.onehot_table is not None:
            np.take(self.onehot_table, tokens, axis=0, out=padded, mode="clip")  # see BagInput.gather
        else:
            inputs, self.state.history = self.model.encoder.encode(self.params, tokens, self.state.history)
            if self.bag_table is not None:
                inputs.gather(self.bag_table, out=padded)
                xw += bias
            else:
                projection.affine(rows(inputs.x), bias, xw_rows)
        out = None
        for index, ((_, xw, xw_rows, projection, buf), (_, bias, prepared)) in enumerate(zip(self.layers,
                                                                                            self.weights)):
            if index:
                projection.affine(rows(out), bias, xw_rows)
            out, states[index] = self.cell.read(xw, states[index], prepared, buf)
        if not logits:
            return None
        self.head.affine(rows(out), self.params["head.bias"], self.logit_rows)
        return self.logits



def rows(x: np.ndarray) -> np.ndarray:
    """(T, B, N) -> (T * B, N), a view of a contiguous array or of `line_padded`'s [..., :N]."""
    view = x.reshape(-1, x.shape[-1])
    assert np.may_share_memory(view, x), "rows() needs an array whose rows merge into a view"
    return view


def line_padded(x: np.ndarray, width: int) -> np.ndarray:
    """x (..., M) -> (..., width + one cache line of elements), x in the first M columns, zeros after.
    The Stepper's gate rows are that much wider than they need: rows a power of two bytes apart fall
    in the same cache sets, and with a 512-unit GRU's 8 KB rows of gates a step product adding into
    them took 513 microseconds, 385 with the rows 64 bytes further apart."""
    padded = np.zeros(x.shape[:-1] + (width + LINE_BYTES // x.itemsize,), x.dtype)
    padded[..., :x.shape[-1]] = x
    return padded


def orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random (n, n) orthogonal matrix (QR of a Gaussian, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))
