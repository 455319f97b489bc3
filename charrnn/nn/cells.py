"""Recurrent cells with PyTorch's equations and gate order, stepped over preallocated buffers.

Every cell has the same interface, and its state is always a tuple, `(h,)` or `(h, c)`:

- `prepare(w_ih, w_hh, b_ih, b_hh)` -> the weight (G*H, I) and bias (G*H,) to project the input
  with, and the weights the loop uses. Sigmoid gates are computed as `0.5 * tanh(a / 2) + 0.5`;
  the halving is folded into all of these here, once (halving is exact in floating point), so
  one `tanh` covers every gate and the projection needs no pass of its own to scale.
- `allocate(T, B, H, dtype)` -> buffers for T steps (the sampler keeps a T = 1 set for its loop).
- `forward(xw, state, weights, buf)` runs the loop: `xw` (T, B, G*H) holds the input projection
  plus bias (with `prepare`'s weight and bias) on entry and is used in place as the gate buffer.
  Returns the outputs (T, B, H) and the final state, both views into `buf`, which is also the
  cache for `backward`.
- `backward(d_out, buf, w_hh)` -> (d pre-activation seen by W_ih (T, B, G*H), d pre-activation seen
  by W_hh (T, B, G*H), d initial state). They differ only for the GRU's candidate gate.
- `prepare_reading`, `allocate_reading` and `read` are the same three for a loop that never goes
  backward (a `charrnn.nn.model.Stepper`): a cell may read in fewer passes, with less kept.

Per step the loop does one matrix product with W_hh and a few ufuncs writing with `out=`. How that
product is computed (NumPy batch-major or gate-major, or MKL's packed products) is the cell's
`products` layout, see `charrnn.nn.products`: the numbers agree up to rounding, and which runs
faster depends on the BLAS, its kernel and the shapes, so `charrnn.training.layout` times them.
"""

from __future__ import annotations

import numpy as np

from charrnn.nn.products import StepProducts


def gate_vector(H: int, values: list[float], dtype) -> np.ndarray:
    """One value per gate, each repeated H times: (len(values) * H,)."""
    return np.repeat(np.asarray(values, dtype=dtype), H)


class Cell:
    """What every cell shares: how its per-step products are computed."""

    def __init__(self, products: StepProducts | None = None):
        self.products = products or StepProducts()

    def forward_product(self, weights: dict, buf: dict):
        """The step product with the loop's W_hh for `buf`'s rows, made on the first forward over
        `buf` (a sampler steps through one buffer, with the same weights, many times)."""
        if buf["product"] is None:
            buf["product"] = self.products.product(weights["w_hh"], buf["h"].shape[1])
        return buf["product"]

    def prepare_reading(self, w_ih, w_hh, b_ih, b_hh):
        """Like `prepare`, for `read`: a cell that reads in fewer passes lays its input out its own way.
        The input weight (M, I) fills the first M columns of the row that the bias (N,) spans, N >= M;
        the other N - M columns hold the bias alone."""
        return self.prepare(w_ih, w_hh, b_ih, b_hh)

    def allocate_reading(self, T, B, H, dtype):
        """Like `allocate`, for `read`: a cell whose `read` keeps no cache for a backward needs less."""
        return self.allocate(T, B, H, dtype)

    def read(self, xw, state, weights, buf):
        """`forward` where nothing will go backward (a `charrnn.nn.model.Stepper`), over `prepare_reading`'s
        weights and `allocate_reading`'s buffers: the same outputs and final state, up to rounding."""
        return self.forward(xw, state, weights, buf)

    def backward_product(self, w_hh: np.ndarray, rows: int):
        """w_hh (G*H, H) -> the step product the backward loop takes: `d w_hh` is `d (w_hh^T)^T`."""
        return self.products.product(w_hh.T, rows)


class RNNCell(Cell):
    """h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), act = tanh or relu."""

    gates = 1
    arity = 1

    def __init__(self, nonlinearity: str = "tanh", products: StepProducts | None = None):
        super().__init__(products)
        self.nonlinearity = nonlinearity

    def prepare(self, w_ih, w_hh, b_ih, b_hh):
        return w_ih, b_ih + b_hh, {"w_hh": w_hh}

    def allocate(self, T, B, H, dtype):
        return {"h": np.empty((T + 1, B, H), dtype), "mask": np.empty((B, H), bool),
                "tmp": np.empty((B, H), dtype), "product": None}

    def forward(self, xw, state, weights, buf):
        """xw (T, B, H), state (h0 (B, H),) -> outputs (T, B, H), (h_T,)."""
        h, product = buf["h"], self.forward_product(weights, buf)
        h[0] = state[0]
        for t in range(len(xw)):
            product.add_times(h[t], xw[t])
            if self.nonlinearity == "tanh":
                np.tanh(xw[t], out=h[t + 1])
            else:
                np.maximum(xw[t], 0, out=h[t + 1])
        return h[1:], (h[-1],)

    def backward(self, d_out, buf, w_hh):
        """d_out (T, B, H) -> (d_pre (T, B, H), d_pre, (d h0,))."""
        h, tmp = buf["h"], buf["tmp"]
        d_pre = np.empty_like(d_out)
        product = self.backward_product(w_hh, d_out.shape[1])
        dh = np.zeros_like(d_out[0])
        for t in reversed(range(len(d_out))):
            da = d_pre[t]
            np.add(d_out[t], dh, out=da)
            if self.nonlinearity == "tanh":  # tanh' = 1 - h^2
                np.multiply(h[t + 1], h[t + 1], out=tmp)
                np.subtract(1, tmp, out=tmp)
                da *= tmp
            else:
                np.greater(h[t + 1], 0, out=buf["mask"])
                da *= buf["mask"]
            dh = product.times(da)
        return d_pre, d_pre, (np.ascontiguousarray(dh),)


class LSTMCell(Cell):
    """Gates i, f, g, o = sig, sig, tanh, sig (W_ih x_t + b_ih + W_hh h_{t-1} + b_hh);
    c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)."""

    gates = 4
    arity = 2

    def prepare(self, w_ih, w_hh, b_ih, b_hh):
        H = w_hh.shape[1]
        scale = gate_vector(H, [0.5, 0.5, 1, 0.5], w_hh.dtype)
        shift = gate_vector(H, [0.5, 0.5, 0, 0.5], w_hh.dtype)
        # the derivative of gate value y is (y + p) * (1 - y): p = 0 for sigmoid, 1 for tanh
        deriv = gate_vector(H, [0, 0, 1, 0], w_hh.dtype)
        return (w_ih * scale[:, None], (b_ih + b_hh) * scale,
                {"w_hh": w_hh * scale[:, None], "scale": scale, "shift": shift, "deriv": deriv})

    def allocate(self, T, B, H, dtype):
        return {"h": np.empty((T + 1, B, H), dtype), "c": np.empty((T + 1, B, H), dtype),
                "tanh_c": np.empty((T, B, H), dtype), "gates": None, "deriv": None,
                "product": None, "tmp": np.empty((B, H), dtype)}

    def forward(self, xw, state, weights, buf):
        """xw (T, B, 4H) scaled, state (h0, c0) each (B, H) -> outputs (T, B, H), (h_T, c_T)."""
        h, c, tanh_c, tmp = buf["h"], buf["c"], buf["tanh_c"], buf["tmp"]
        product = self.forward_product(weights, buf)
        H = h.shape[-1]
        h[0], c[0] = state
        for t in range(len(xw)):
            gates = xw[t]
            product.add_times(h[t], gates)
            np.tanh(gates, out=gates)
            gates *= weights["scale"]
            gates += weights["shift"]
            i, f, g, o = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
            np.multiply(f, c[t], out=c[t + 1])
            np.multiply(i, g, out=tmp)
            c[t + 1] += tmp
            np.tanh(c[t + 1], out=tanh_c[t])
            np.multiply(o, tanh_c[t], out=h[t + 1])
        buf["gates"], buf["deriv"] = xw, weights["deriv"]
        return h[1:], (h[-1], c[-1])

    def backward(self, d_out, buf, w_hh):
        """d_out (T, B, H) -> (d_pre (T, B, 4H), d_pre, (d h0, d c0))."""
        c, tanh_c, gates_all, tmp = buf["c"], buf["tanh_c"], buf["gates"], buf["tmp"]
        T, B, H = d_out.shape
        d_pre = np.empty_like(gates_all)
        dh, dc = np.zeros((B, H), d_out.dtype), np.zeros((B, H), d_out.dtype)
        dh_next = np.zeros((B, H), d_out.dtype)
        product = self.backward_product(w_hh, B)
        slope, one_minus = np.empty((B, 4 * H), d_out.dtype), np.empty((B, 4 * H), d_out.dtype)
        for t in reversed(range(T)):
            gates, d = gates_all[t], d_pre[t]
            i, f, g, o = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
            di, df, dg, do = d[:, :H], d[:, H:2 * H], d[:, 2 * H:3 * H], d[:, 3 * H:]
            np.add(d_out[t], dh_next, out=dh)
            np.multiply(dh, tanh_c[t], out=do)
            np.multiply(tanh_c[t], tanh_c[t], out=tmp)  # dc += dh * o * (1 - tanh(c)^2)
            np.subtract(1, tmp, out=tmp)
            tmp *= o
            tmp *= dh
            dc += tmp
            np.multiply(dc, g, out=di)
            np.multiply(dc, i, out=dg)
            np.multiply(dc, c[t], out=df)
            dc *= f
            np.add(gates, buf["deriv"], out=slope)  # through the gate nonlinearities at once
            np.subtract(1, gates, out=one_minus)
            slope *= one_minus
            d *= slope
            dh_next = product.times(d)
        return d_pre, d_pre, (np.ascontiguousarray(dh_next), dc)


class GRUCell(Cell):
    """r, z = sig(W_i{r,z} x_t + b_i{r,z} + W_h{r,z} h + b_h{r,z});
    n = tanh(W_in x_t + b_in + r * (W_hn h + b_hn));  h_t = (1 - z) * n + z * h_{t-1}."""

    gates = 3
    arity = 1

    def prepare(self, w_ih, w_hh, b_ih, b_hh):
        H = w_hh.shape[1]
        scale = gate_vector(H, [0.5, 0.5, 1], w_hh.dtype)
        bias = b_ih.copy()
        bias[:2 * H] += b_hh[:2 * H]
        return w_ih * scale[:, None], bias * scale, {"w_hh": w_hh * scale[:, None], "b_hn": b_hh[2 * H:]}

    def allocate(self, T, B, H, dtype):
        return {"h": np.empty((T + 1, B, H), dtype), "hn": np.empty((T, B, H), dtype), "gates": None,
                "product": None, "tmp": np.empty((B, H), dtype)}

    def forward(self, xw, state, weights, buf):
        """xw (T, B, 3H) scaled, state (h0 (B, H),) -> outputs (T, B, H), (h_T,)."""
        h, hn, tmp = buf["h"], buf["hn"], buf["tmp"]
        H, product = h.shape[-1], self.forward_product(weights, buf)
        h[0] = state[0]
        for t in range(len(xw)):
            gates = xw[t]
            rz, n = gates[:, :2 * H], gates[:, 2 * H:]
            mm = product.times(h[t])
            rz += mm[:, :2 * H]
            np.tanh(rz, out=rz)
            rz *= 0.5
            rz += 0.5
            np.add(mm[:, 2 * H:], weights["b_hn"], out=hn[t])
            np.multiply(gates[:, :H], hn[t], out=tmp)
            n += tmp
            np.tanh(n, out=n)
            np.subtract(h[t], n, out=h[t + 1])  # h_t = n + z * (h_{t-1} - n)
            h[t + 1] *= gates[:, H:2 * H]
            h[t + 1] += n
        buf["gates"] = xw
        return h[1:], (h[-1],)

    def prepare_reading(self, w_ih, w_hh, b_ih, b_hh):
        """For `read`: an input weight (3H, I) and bias (4H,) that fill each step's row of xw with
        [W_in x + b_in, a_r / 2, a_z / 2, b_hn / 2] (the last block takes no input), and W_hh halved."""
        H = w_hh.shape[1]
        w_in = np.concatenate([w_ih[2 * H:], w_ih[:2 * H] * 0.5])
        bias = np.concatenate([b_ih[2 * H:], (b_ih[:2 * H] + b_hh[:2 * H]) * 0.5, b_hh[2 * H:] * 0.5])
        return w_in, bias, {"w_hh": w_hh * 0.5}

    def allocate_reading(self, T, B, H, dtype):
        """`allocate` without the (T, B, H) of W_hn h + b_hn that only the backward reads."""
        return {"h": np.empty((T + 1, B, H), dtype), "product": None, "tmp": np.empty((B, H), dtype)}

    def read(self, xw, state, weights, buf):
        """xw (T, B, 4H) laid out by `prepare_reading`, state (h0 (B, H),) -> outputs (T, B, H), (h_T,).

        `forward`'s equations in 11 passes over H columns a step instead of 15, keeping nothing for a
        backward: one product adds h W_hh^T / 2 into the last three blocks, so the last holds
        q = (W_hn h + b_hn) / 2 with no pass of its own; with s = tanh of the middle two,
        r = (1 + s_r) / 2 and z = (1 + s_z) / 2 are never formed: n = tanh(W_in x + b_in + s_r q + q)
        and h_t = ((h_{t-1} + n) + s_z (h_{t-1} - n)) / 2. Timed alone, the two step formulations took
        7.2 and 10.5 ms for 8 steps of 244 rows x 512 (bfloat16 products, one core of a Xeon)."""
        h, tmp = buf["h"], buf["tmp"]
        H, product = h.shape[-1], self.forward_product(weights, buf)
        h[0] = state[0]
        for t in range(len(xw)):
            gates = xw[t]
            product.add_times(h[t], gates[:, H:])
            np.tanh(gates[:, H:3 * H], out=gates[:, H:3 * H])
            n, s_r, s_z, q = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
            np.multiply(s_r, q, out=tmp)
            n += tmp
            n += q
            np.tanh(n, out=n)
            np.subtract(h[t], n, out=tmp)
            tmp *= s_z
            np.add(h[t], n, out=h[t + 1])
            h[t + 1] += tmp
            h[t + 1] *= 0.5
        return h[1:], (h[-1],)

    def backward(self, d_out, buf, w_hh):
        """d_out (T, B, H) -> (d_pre_x (T, B, 3H), d_pre_h (T, B, 3H), (d h0,))."""
        h, hn, gates_all, tmp = buf["h"], buf["hn"], buf["gates"], buf["tmp"]
        T, B, H = d_out.shape
        d_x, d_h = np.empty_like(gates_all), np.empty_like(gates_all)
        dh, dh_next = np.empty((B, H), d_out.dtype), np.zeros((B, H), d_out.dtype)
        product = self.backward_product(w_hh, B)
        slope = np.empty((B, 2 * H), d_out.dtype)
        for t in reversed(range(T)):
            gates = gates_all[t]
            r, z, n = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:]
            dr, dz, dn = d_x[t][:, :H], d_x[t][:, H:2 * H], d_x[t][:, 2 * H:]
            np.add(d_out[t], dh_next, out=dh)
            np.subtract(1, z, out=tmp)  # dn = dh * (1 - z) * (1 - n^2)
            np.multiply(dh, tmp, out=dn)
            np.multiply(n, n, out=tmp)
            np.subtract(1, tmp, out=tmp)
            dn *= tmp
            np.subtract(h[t], n, out=dz)  # dz = dh * (h_{t-1} - n)
            dz *= dh
            np.multiply(dn, hn[t], out=dr)  # dr = dn * (W_hn h + b_hn)
            np.subtract(1, gates[:, :2 * H], out=slope)  # through both sigmoids at once
            slope *= gates[:, :2 * H]
            d_x[t][:, :2 * H] *= slope
            d_h[t][:, :2 * H] = d_x[t][:, :2 * H]
            np.multiply(dn, r, out=d_h[t][:, 2 * H:])
            np.multiply(dh, z, out=dh_next)  # dh_{t-1} = dh * z + d_h W_hh
            product.add_times(d_h[t], dh_next)
        return d_x, d_h, (dh_next,)


def make_cell(kind: str, nonlinearity: str = "tanh", products: str = "batch_major"):
    """'rnn' | 'lstm' | 'gru' -> a cell object; `products` is the layout of its step products
    (see `charrnn.nn.products`)."""
    layout = StepProducts(products)
    if kind == "rnn":
        return RNNCell(nonlinearity, layout)
    return {"lstm": LSTMCell, "gru": GRUCell}[kind](layout)
