"""Inputs to a recurrent layer, and the encoders that turn token ids into layer-0 inputs.

A layer only needs three things from its input: the projection `x W^T + b` for all time steps at
once, the weight gradient `dY^T x`, and (for learned inputs) the input gradient `dY W`.
`DenseInput` does them with matrix products. `BagInput` represents one-hot and bag-of-words
inputs by their token ids, so the projection is a gather of weight columns (one-hot is never
materialised) and the weight gradient is one GEMM with a (N, V) count matrix, several times
faster than `np.add.at`.
"""

from __future__ import annotations

import numpy as np


class DenseInput:
    """A dense input sequence x: (T, B, I)."""

    def __init__(self, x: np.ndarray):
        self.x = x

    def project(self, weight: np.ndarray, bias: np.ndarray, matmul=np.matmul) -> np.ndarray:
        """weight (G, I), bias (G,) -> x W^T + b: (T, B, G). `matmul` multiplies two matrices (a
        layout's, see `charrnn.nn.products`)."""
        T, B, I = self.x.shape
        out = matmul(self.x.reshape(T * B, I), weight.T).reshape(T, B, -1)
        out += bias
        return out

    def weight_grad(self, grad: np.ndarray, matmul=np.matmul) -> np.ndarray:
        """grad (T, B, G) of the projection -> dW: (G, I)."""
        G = grad.shape[-1]
        return matmul(grad.reshape(-1, G).T, self.x.reshape(-1, self.x.shape[-1]))

    def input_grad(self, grad: np.ndarray, weight: np.ndarray, matmul=np.matmul) -> np.ndarray:
        """grad (T, B, G), weight (G, I) -> dx: (T, B, I), as one product over all T * B rows
        (a 3-D product would be T thin ones, each packing the weight again)."""
        T, B, G = grad.shape
        return matmul(grad.reshape(T * B, G), weight).reshape(T, B, -1)


class BagInput:
    """x_t = scale * sum_j onehot(ids[t, b, j]) over a vocabulary of V, kept as ids (T, B, K).

    An id of -1 stands for no token (before the start of the text). K = 1, scale = 1 is one-hot.
    """

    def __init__(self, ids: np.ndarray, scale: float, vocab_size: int):
        self.ids = np.where(ids < 0, vocab_size, ids)  # V indexes the zero row appended below
        self.scale = scale
        self.vocab_size = vocab_size

    @staticmethod
    def padded_table(weight: np.ndarray) -> np.ndarray:
        """weight (G, V) -> its transpose with a zero row appended for 'no token': (V + 1, G)."""
        table = np.zeros((weight.shape[1] + 1, weight.shape[0]), dtype=weight.dtype)
        table[:-1] = weight.T
        return table

    def gather(self, table: np.ndarray, out: np.ndarray) -> np.ndarray:
        """table (V + 1, G) from `padded_table` -> x W^T written into out (T, B, G). The ids are in
        range by construction; mode="clip" spares `np.take` the copy through a buffer that its
        default mode makes when given `out` (4x slower for a (8, 244) x 1536 gather)."""
        np.take(table, self.ids[..., 0], axis=0, out=out, mode="clip")
        for j in range(1, self.ids.shape[-1]):
            out += table[self.ids[..., j]]
        if self.scale != 1:
            out *= self.scale
        return out

    def project(self, weight: np.ndarray, bias: np.ndarray, matmul=None) -> np.ndarray:
        """weight (G, V), bias (G,) -> x W^T + b: (T, B, G), as a sum of K gathered columns (no
        product: `matmul` is not used). For one-hot input the bias is added to the table's rows,
        so the gather is the only pass."""
        out = np.empty((*self.ids.shape[:-1], weight.shape[0]), dtype=weight.dtype)
        table = self.padded_table(weight)
        if self.ids.shape[-1] == 1 and self.scale == 1:
            table += bias  # the 'no token' row too: x = 0 projects to b
            return self.gather(table, out)
        self.gather(table, out)
        out += bias
        return out

    def counts(self, dtype) -> np.ndarray:
        """The dense bag matrix (T*B, V): row n holds scale times the count of each id."""
        flat = self.ids.reshape(-1, self.ids.shape[-1])
        rows = np.arange(len(flat))
        bag = np.zeros((len(flat), self.vocab_size + 1), dtype=dtype)
        for j in range(flat.shape[1]):
            bag[rows, flat[:, j]] += self.scale  # (row, id) pairs are unique within one j
        return bag[:, :-1]

    def weight_grad(self, grad: np.ndarray, matmul=np.matmul) -> np.ndarray:
        """grad (T, B, G) of the projection -> dW: (G, V), one GEMM with the bag matrix."""
        G = grad.shape[-1]
        return matmul(grad.reshape(-1, G).T, self.counts(grad.dtype))

    def input_grad(self, grad, weight, matmul=None):
        return None


class BagEncoder:
    """One-hot (window 1) or bag-of-words (the last `window` tokens, counts divided by window).

    The encoder's state is the `window - 1` tokens before the next input, so a stream cut into
    chunks is encoded exactly as the whole stream.
    """

    def __init__(self, vocab_size: int, window: int = 1):
        self.vocab_size = vocab_size
        self.window = window
        self.input_size = vocab_size

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def history_shape(self, batch: int) -> tuple[int, int]:
        return (self.window - 1, batch)

    def initial_history(self, batch: int) -> np.ndarray:
        """(window - 1, B) ids, -1 meaning no token yet."""
        return np.full(self.history_shape(batch), -1, dtype=np.int64)

    def encode(self, params, tokens: np.ndarray, history: np.ndarray) -> tuple[BagInput, np.ndarray]:
        """tokens (T, B), history (K-1, B) -> (BagInput (T, B, K), the new history (K-1, B))."""
        K, T = self.window, len(tokens)
        full = np.concatenate([history, tokens.astype(np.int64)])
        ids = np.stack([full[K - 1 - j: K - 1 - j + T] for j in range(K)], axis=-1)
        return BagInput(ids, 1.0 / K, self.vocab_size), full[len(full) - (K - 1):]

    def backward(self, params, tokens, grad) -> dict[str, np.ndarray]:
        return {}


class EmbeddingEncoder:
    """x_t = embedding.weight[token_t], a learned (V, E) table."""

    def __init__(self, vocab_size: int, dim: int):
        self.vocab_size = vocab_size
        self.input_size = dim

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"embedding.weight": (self.vocab_size, self.input_size)}

    def history_shape(self, batch: int) -> tuple[int, int]:
        return (0, batch)

    def initial_history(self, batch: int) -> np.ndarray:
        return np.zeros(self.history_shape(batch), dtype=np.int64)

    def encode(self, params, tokens: np.ndarray, history: np.ndarray) -> tuple[DenseInput, np.ndarray]:
        """tokens (T, B) -> (DenseInput (T, B, E), empty history)."""
        return DenseInput(params["embedding.weight"][tokens]), history

    def backward(self, params, tokens: np.ndarray, grad: np.ndarray) -> dict[str, np.ndarray]:
        """tokens (T, B), grad (T, B, E) of the looked-up rows -> d embedding.weight (V, E), one GEMM."""
        bag = BagInput(tokens[..., None], 1.0, self.vocab_size)
        return {"embedding.weight": bag.weight_grad(grad).T}
