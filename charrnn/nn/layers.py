"""One recurrent layer in one direction, and the stack of layers with dropout between them.

Everything that does not depend on h_{t-1} is hoisted out of the time loop: the input projection
of all T steps is one product before it (a gather for one-hot inputs), and the weight gradients
are one product each after the backward loop. A reverse-direction layer runs the same loop over
time-reversed views.
"""

from __future__ import annotations

import numpy as np

from charrnn.nn.encoders import DenseInput


def param_name(kind: str, layer: int, reverse: bool) -> str:
    """('weight_ih', 1, True) -> 'rnn.weight_ih_l1_reverse', PyTorch's naming."""
    return f"rnn.{kind}_l{layer}{'_reverse' if reverse else ''}"


def layer_weights(params, layer: int, reverse: bool):
    """The (weight_ih, weight_hh, bias_ih, bias_hh) of one layer and direction."""
    return tuple(params[param_name(k, layer, reverse)] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def layer_forward(cell, weights, inputs, state, reverse: bool):
    """inputs (T, B, I) as DenseInput/BagInput, state tuple of (B, H) -> out (T, B, H), final state, cache."""
    w_ih, w_hh, b_ih, b_hh = weights
    w_in, bias, prepared = cell.prepare(w_ih, w_hh, b_ih, b_hh)
    xw = inputs.project(w_in, bias, cell.products.matmul)
    T, B, _ = xw.shape
    buf = cell.allocate(T, B, w_hh.shape[1], w_hh.dtype)
    out, final = cell.forward(xw[::-1] if reverse else xw, state, prepared, buf)
    return (out[::-1] if reverse else out), tuple(s.copy() for s in final), (inputs, buf, reverse)


def layer_backward(cell, weights, d_out, cache):
    """d_out (T, B, H) -> ((dW_ih, dW_hh, db_ih, db_hh), d inputs (T, B, I) or None, d initial state)."""
    w_ih, w_hh, _, _ = weights
    inputs, buf, reverse = cache
    d_x, d_h, d_state = cell.backward(d_out[::-1] if reverse else d_out, buf, w_hh)
    T, B, G = d_h.shape
    H = w_hh.shape[1]
    d_w_hh = cell.products.matmul(d_h.reshape(T * B, G).T, buf["h"][:-1].reshape(T * B, H))
    d_b_hh = d_h.reshape(T * B, G).sum(axis=0)
    # rnn/lstm see one pre-activation from both sides: sum it once (a copy, as clipping scales in place)
    d_b_ih = d_b_hh.copy() if d_x is d_h else d_x.reshape(T * B, G).sum(axis=0)
    if reverse:
        d_x = np.ascontiguousarray(d_x[::-1])
    d_w_ih = inputs.weight_grad(d_x, cell.products.matmul)
    return (d_w_ih, d_w_hh, d_b_ih, d_b_hh), inputs.input_grad(d_x, w_ih, cell.products.matmul), d_state


def stack_forward(cell, params, inputs, states, num_layers: int, directions: int, masks):
    """Run all layers. states: one tuple per (layer, direction); masks: one dropout mask per layer
    but the last, (T, B, D*H) or locked (1, B, D*H), or None. -> top output (T, B, D*H), final
    states, cache."""
    finals, caches = [], []
    for layer in range(num_layers):
        outs = []
        for direction in range(directions):
            out, final, cache = layer_forward(cell, layer_weights(params, layer, direction == 1), inputs,
                                              states[layer * directions + direction], direction == 1)
            outs.append(out)
            finals.append(final)
            caches.append(cache)
        top = outs[0] if directions == 1 else np.concatenate(outs, axis=-1)
        if masks is not None and layer < num_layers - 1:
            top = top * masks[layer]
        inputs = DenseInput(top)
    return inputs.x, finals, caches


def stack_backward(cell, params, d_top, caches, num_layers: int, directions: int, masks):
    """d_top (T, B, D*H) -> (grads by parameter name, d layer-0 input or None, d initial states)."""
    grads, d_states = {}, [None] * (num_layers * directions)
    d_inputs = None
    for layer in reversed(range(num_layers)):
        if masks is not None and layer < num_layers - 1:
            d_top = d_top * masks[layer]
        H = d_top.shape[-1] // directions
        d_inputs = None
        for direction in range(directions):
            index = layer * directions + direction
            weights = layer_weights(params, layer, direction == 1)
            d_w, d_in, d_states[index] = layer_backward(cell, weights, d_top[..., direction * H:(direction + 1) * H],
                                                        caches[index])
            for kind, d in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), d_w):
                grads[param_name(kind, layer, direction == 1)] = d
            if d_in is not None:
                d_inputs = d_in if d_inputs is None else d_inputs + d_in
        d_top = d_inputs
    return grads, d_inputs, d_states
