"""Back-propagation through time agrees with central finite differences in float64.

Every cell x encoder x depth x direction is checked, for every parameter tensor and the initial
state. The loss is the summed NLL (the textbook objective); derivatives use the fourth-order
central stencil, and the error of an entry is |analytic - numeric| / max(|analytic| + |numeric|, 1e-5),
so an entry whose true gradient is (near) zero is held to an absolute 1e-11, the accuracy
the stencil itself reaches.
"""

import itertools

import numpy as np
import pytest

from charrnn.compute.mkl import mkl_products
from charrnn.config import ModelConfig
from charrnn.nn.head import token_nll
from charrnn.nn.layers import layer_weights
from charrnn.nn.model import RNNLM
from charrnn.nn.regularisers import activation_penalties

V, T, B = 5, 3, 2
CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
ENCODINGS = ["onehot", "bow", "embedding"]
STEP = 1e-3
TOLERANCE = 1e-6
NEEDS_MKL = pytest.mark.skipif(mkl_products() is None, reason="packed step products need the mkl extra")
OTHER_LAYOUTS = ["gate_major", pytest.param("packed", marks=NEEDS_MKL)]  # than batch-major, the default


def numeric_derivative(f, array, index):
    """d f / d array[index] by the fourth-order central difference."""
    old = array[index]
    values = []
    for k in (2, 1, -1, -2):
        array[index] = old + k * STEP
        values.append(f())
    array[index] = old
    return (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * STEP)


def checked_entries(array, analytic, rng, count=4):
    """A few random entries plus the one with the largest analytic gradient."""
    picks = {np.unravel_index(int(np.argmax(np.abs(analytic))), array.shape)}
    picks.update(np.unravel_index(int(i), array.shape) for i in rng.choice(array.size, min(count, array.size), replace=False))
    return sorted(picks)


def relative_error(a, n):
    return abs(a - n) / max(abs(a) + abs(n), 1e-5)


def kink_margin(model, params, tokens, state):
    """The smallest |pre-activation| of a ReLU network: finite differences need it far from 0."""
    if model.config.nonlinearity != "relu":
        return np.inf
    _, _, (_, _, _, caches, _, _) = model.forward(params, tokens, state)
    margin = np.inf
    for k, (inputs, buf, reverse) in enumerate(caches):
        layer, direction = divmod(k, model.directions)
        w_ih, w_hh, b_ih, b_hh = layer_weights(params, layer, direction == 1)
        xw = inputs.project(w_ih, b_ih + b_hh)
        pre = (xw[::-1] if reverse else xw) + buf["h"][:-1] @ w_hh.T
        margin = min(margin, np.abs(pre).min())
    return margin


def random_case(model, seed):
    rng = np.random.default_rng(seed)
    params = model.init_params(rng)
    tokens, targets = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    state = model.initial_state(B)
    state.layers = [tuple(rng.uniform(-0.5, 0.5, s.shape) for s in layer) for layer in state.layers]
    state.history = rng.integers(0, V, state.history.shape)
    return rng, params, tokens, targets, state


def gradient_errors(config, masks_from_seed=None, products="batch_major", penalties=(0.0, 0.0)):
    model = RNNLM(config, V, products)
    seed = 7
    rng, params, tokens, targets, state = random_case(model, seed)
    while kink_margin(model, params, tokens, state) < 10 * STEP:  # ReLU is checked away from its kink
        seed += 1
        rng, params, tokens, targets, state = random_case(model, seed)
    reg = model.regularisation(np.random.default_rng(masks_from_seed), T, B, *penalties) \
        if masks_from_seed is not None else None
    mean_loss, grads, _, d_states = model.loss_and_grads(params, tokens, targets, state, reg)

    def summed_loss():  # the objective, times T * B: the NLL and the penalties
        z, _, (_, top, dropped, *_) = model.forward(params, tokens, state, reg)
        penalty = activation_penalties(top, dropped, reg) if reg is not None and reg.penalised else 0.0
        return token_nll(z.reshape(T * B, V), targets.reshape(-1)).sum() + penalty * T * B

    errors = {}
    for name, array in params.items():
        analytic = grads[name] * T * B
        errors[name] = max(relative_error(analytic[i], numeric_derivative(summed_loss, array, i))
                           for i in checked_entries(array, analytic, rng))
    for k, (layer, d_layer) in enumerate(zip(state.layers, d_states)):
        for j, (array, d) in enumerate(zip(layer, d_layer)):
            analytic = d * T * B
            errors[f"initial state {k}.{j}"] = max(relative_error(analytic[i], numeric_derivative(summed_loss, array, i))
                                                   for i in checked_entries(array, analytic, rng))
    return errors


@pytest.mark.parametrize("cell, encoding, layers, bidirectional",
                         [(c, e, n, d) for c, e, n, d in itertools.product(CELLS, ENCODINGS, (1, 2), (False, True))],
                         ids=lambda v: v[0] + "-" + v[1] if isinstance(v, tuple) else str(v))
def test_backward_matches_finite_differences(cell, encoding, layers, bidirectional):
    config = ModelConfig(cell=cell[0], nonlinearity=cell[1], hidden_size=3, num_layers=layers,
                         bidirectional=bidirectional, encoding=encoding, embedding_dim=3, bow_window=3,
                         dtype="float64")
    errors = gradient_errors(config)
    assert len(errors) == len(RNNLM(config, V).param_shapes()) + layers * (2 if bidirectional else 1) * (
        2 if cell[0] == "lstm" else 1)
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_backward_with_a_fixed_dropout_mask_matches_finite_differences(cell):
    config = ModelConfig(cell=cell, hidden_size=3, num_layers=3, dropout=0.4, dtype="float64")
    errors = gradient_errors(config, masks_from_seed=3)
    assert max(errors.values()) < TOLERANCE, errors


REGULARISERS = {
    "locked dropout between layers": dict(locked_dropout=0.4),
    "locked output dropout": dict(output_dropout=0.4),
    "locked input dropout": dict(input_dropout=0.4, encoding="embedding", embedding_dim=3),
    "weight drop": dict(weight_drop=0.4),
    "embedding dropout, one-hot": dict(embedding_dropout=0.4),
    "embedding dropout, bag of words": dict(embedding_dropout=0.4, encoding="bow", bow_window=2),
    "embedding dropout, embedding": dict(embedding_dropout=0.4, encoding="embedding", embedding_dim=3),
    "all at once, bidirectional": dict(dropout=0.2, locked_dropout=0.3, output_dropout=0.3, weight_drop=0.3,
                                       embedding_dropout=0.3, input_dropout=0.3, encoding="embedding",
                                       embedding_dim=3, bidirectional=True),
}


@pytest.mark.parametrize("regulariser", list(REGULARISERS) + ["AR and TAR", "AR and TAR with output dropout"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_regulariser_with_its_masks_fixed_matches_finite_differences(cell, regulariser):
    settings = REGULARISERS.get(regulariser, dict(output_dropout=0.4) if "output" in regulariser else {})
    config = ModelConfig(cell=cell, hidden_size=3, num_layers=2, dtype="float64", **settings)
    penalties = (2.0, 1.0) if "TAR" in regulariser else (0.0, 0.0)
    errors = gradient_errors(config, masks_from_seed=5, penalties=penalties)
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.parametrize("products", OTHER_LAYOUTS)
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: "-".join(c))
def test_every_step_product_layout_matches_finite_differences(cell, products):
    config = ModelConfig(cell=cell[0], nonlinearity=cell[1], hidden_size=3, num_layers=2, bidirectional=True,
                         encoding="embedding", embedding_dim=3, dtype="float64")
    errors = gradient_errors(config, products=products)
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.parametrize("products", OTHER_LAYOUTS)
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: "-".join(c))
def test_every_step_product_layout_computes_the_same_loss_gradients_and_state(cell, products):
    config = ModelConfig(cell=cell[0], nonlinearity=cell[1], hidden_size=8, num_layers=2, dtype="float64")
    results = []
    for layout in ("batch_major", products):
        model = RNNLM(config, V, layout)
        _, params, tokens, targets, state = random_case(model, 3)
        results.append(model.loss_and_grads(params, tokens, targets, state))
    (loss, grads, final, d_states), (loss_t, grads_t, final_t, d_states_t) = results
    assert loss == pytest.approx(loss_t, rel=1e-13)
    for name in grads:
        np.testing.assert_allclose(grads_t[name], grads[name], rtol=1e-11, atol=1e-15)
    for ours, theirs in zip(final_t.layers + d_states_t, final.layers + d_states):
        np.testing.assert_allclose(np.stack(ours), np.stack(theirs), rtol=1e-11, atol=1e-15)
