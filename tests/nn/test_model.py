"""The model: PyTorch's equations, names and shapes; state carrying; the stepping API."""

import numpy as np
import pytest

from charrnn.config import ModelConfig
from charrnn.nn.model import RNNLM
from charrnn.nn.products import available_layouts


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def one_step_reference(cell, nonlinearity, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """PyTorch's documented equations for one step, written plainly."""
    gi, gh = w_ih @ x + b_ih, w_hh @ h + b_hh
    if cell == "rnn":
        a = gi + gh
        return (np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)), None
    if cell == "lstm":
        i, f, g, o = np.split(gi + gh, 4)
        c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        return sigmoid(o) * np.tanh(c_new), c_new
    r = sigmoid(gi[:2] + gh[:2])
    z = sigmoid(gi[2:4] + gh[2:4])
    n = np.tanh(gi[4:] + r * gh[4:])
    return (1 - z) * n + z * h, None


@pytest.mark.parametrize("cell, nonlinearity", [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")])
def test_one_step_with_two_hidden_units_matches_the_documented_equations(cell, nonlinearity):
    config = ModelConfig(cell=cell, nonlinearity=nonlinearity, hidden_size=2, num_layers=1, dtype="float64")
    model = RNNLM(config, vocab_size=3)
    rng = np.random.default_rng(0)
    params = {k: rng.uniform(-1, 1, v.shape) for k, v in model.init_params(rng).items()}
    state = model.initial_state(1)
    state.layers = [tuple(np.array([[0.3, -0.6]]) for _ in state.layers[0])]
    z, final, _ = model.forward(params, np.array([[2]]), state)
    h_ref, c_ref = one_step_reference(cell, nonlinearity, np.eye(3)[2], np.array([0.3, -0.6]), np.array([0.3, -0.6]),
                                      *(params[f"rnn.{k}_l0"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    np.testing.assert_allclose(final.layers[0][0][0], h_ref, rtol=1e-12)
    if c_ref is not None:
        np.testing.assert_allclose(final.layers[0][1][0], c_ref, rtol=1e-12)
    np.testing.assert_allclose(z[0, 0], params["head.weight"] @ h_ref + params["head.bias"], rtol=1e-12)


def test_lstm_hand_computed_value():
    """All weights zero but the input weights of token 0: gates are sigmoid(1) and tanh(1)."""
    config = ModelConfig(cell="lstm", hidden_size=2, num_layers=1, dtype="float64")
    model = RNNLM(config, vocab_size=2)
    params = {k: np.zeros(v) for k, v in model.param_shapes().items()}
    params["rnn.weight_ih_l0"][:, 0] = 1.0
    _, final, _ = model.forward(params, np.array([[0]]), model.initial_state(1))
    s, t = 1 / (1 + np.exp(-1)), np.tanh(1)
    np.testing.assert_allclose(final.layers[0][1], [[s * t, s * t]], rtol=1e-12)  # c = i * g
    np.testing.assert_allclose(final.layers[0][0], [[s * np.tanh(s * t)] * 2], rtol=1e-12)  # h = o * tanh(c)


@pytest.mark.parametrize("cell, gates", [("rnn", 1), ("lstm", 4), ("gru", 3)])
def test_parameter_names_and_shapes_follow_pytorch(cell, gates):
    config = ModelConfig(cell=cell, hidden_size=8, num_layers=2, bidirectional=True, encoding="embedding",
                         embedding_dim=5)
    shapes = RNNLM(config, vocab_size=11).param_shapes()
    assert list(shapes)[:3] == ["embedding.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0"]
    assert shapes["embedding.weight"] == (11, 5)
    assert shapes["rnn.weight_ih_l0"] == (gates * 8, 5)
    assert shapes["rnn.weight_ih_l1_reverse"] == (gates * 8, 16)
    assert shapes["rnn.bias_hh_l1_reverse"] == (gates * 8,)
    assert shapes["head.weight"] == (11, 16) and list(shapes)[-1] == "head.bias"


def test_onehot_input_weights_have_one_column_per_token():
    shapes = RNNLM(ModelConfig(cell="lstm", hidden_size=4, num_layers=1), vocab_size=65).param_shapes()
    assert shapes["rnn.weight_ih_l0"] == (16, 65) and "embedding.weight" not in shapes


def test_float32_is_the_default_and_float64_selectable():
    rng = np.random.default_rng(0)
    assert all(p.dtype == np.float32 for p in RNNLM(ModelConfig(), 5).init_params(rng).values())
    assert all(p.dtype == np.float64 for p in RNNLM(ModelConfig(dtype="float64"), 5).init_params(rng).values())


def two_layer_case(cell, encoding, steps, batch):
    """A float64 2-layer model over 7 tokens, its parameters and a (steps, batch) token array."""
    model = RNNLM(ModelConfig(cell=cell, hidden_size=6, num_layers=2, encoding=encoding, dtype="float64"), 7)
    rng = np.random.default_rng(1)
    return model, model.init_params(rng), rng.integers(0, 7, (steps, batch))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("encoding", ["onehot", "bow", "embedding"])
def test_state_carried_over_two_chunks_equals_one_forward(cell, encoding):
    model, params, tokens = two_layer_case(cell, encoding, steps=10, batch=3)
    whole, _, _ = model.forward(params, tokens, model.initial_state(3))
    first, state, _ = model.forward(params, tokens[:4], model.initial_state(3))
    second, _, _ = model.forward(params, tokens[4:], state)
    np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("encoding", ["onehot", "bow", "embedding"])
def test_single_step_api_gives_the_sequence_logits(cell, encoding):
    model, params, tokens = two_layer_case(cell, encoding, steps=9, batch=2)
    expected, _, _ = model.forward(params, tokens, model.initial_state(2))
    stepper = model.stepper(params, batch=2)
    stepped = [stepper.step(t).copy() for t in tokens]
    np.testing.assert_allclose(np.stack(stepped), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", available_layouts())
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("encoding", ["onehot", "bow", "embedding"])
def test_reading_chunks_of_any_length_gives_the_sequence_logits(cell, encoding, layout):
    model, params, tokens = two_layer_case(cell, encoding, steps=10, batch=3)
    expected, _, _ = model.forward(params, tokens, model.initial_state(3))
    stepper = RNNLM(model.config, model.vocab_size, layout).stepper(params, batch=3)
    read = [stepper.read(tokens[a:b]).copy() for a, b in ((0, 4), (4, 8), (8, 9), (9, 10))]
    np.testing.assert_allclose(np.concatenate(read), expected, rtol=1e-12, atol=1e-12)


def test_bag_of_words_with_window_one_equals_onehot():
    rng = np.random.default_rng(3)
    onehot = RNNLM(ModelConfig(hidden_size=5, encoding="onehot", dtype="float64"), 6)
    bow = RNNLM(ModelConfig(hidden_size=5, encoding="bow", bow_window=1, dtype="float64"), 6)
    params = onehot.init_params(rng)
    tokens = rng.integers(0, 6, (5, 2))
    a, _, _ = onehot.forward(params, tokens, onehot.initial_state(2))
    b, _, _ = bow.forward(params, tokens, bow.initial_state(2))
    np.testing.assert_array_equal(a, b)


def test_bag_of_words_averages_the_trailing_window():
    """With identity-like input weights, x_t is the bag: counts of the last k tokens divided by k."""
    model = RNNLM(ModelConfig(cell="rnn", hidden_size=4, num_layers=1, encoding="bow", bow_window=3,
                              dtype="float64"), 4)
    params = {k: np.zeros(s) for k, s in model.param_shapes().items()}
    params["rnn.weight_ih_l0"] = np.eye(4)
    _, final, _ = model.forward(params, np.array([[1], [1], [3], [0]]), model.initial_state(1))
    np.testing.assert_allclose(final.layers[0][0][0], np.tanh([1 / 3, 1 / 3, 0, 1 / 3]))
    assert final.history.ravel().tolist() == [3, 0]


def test_dropout_masks_are_inverted_and_only_between_layers():
    model = RNNLM(ModelConfig(hidden_size=50, num_layers=3, dropout=0.25), 5)
    masks = model.regularisation(np.random.default_rng(0), 20, 8).between
    assert len(masks) == 2 and masks[0].shape == (20, 8, 50)
    assert set(np.unique(masks[0])) == {0.0, np.float32(1 / 0.75)}
    assert abs((masks[0] == 0).mean() - 0.25) < 0.02
    assert model.regularisation(None, 20, 8) is None
    assert RNNLM(ModelConfig(hidden_size=50, num_layers=3), 5).regularisation(np.random.default_rng(0), 20, 8) is None


def test_each_mask_is_drawn_where_the_paper_draws_it():
    config = ModelConfig(cell="gru", hidden_size=40, num_layers=3, locked_dropout=0.3, output_dropout=0.4,
                         weight_drop=0.5, embedding_dropout=0.2, encoding="embedding", embedding_dim=30,
                         input_dropout=0.1)
    model = RNNLM(config, 50)
    reg = model.regularisation(np.random.default_rng(0), 20, 8, activation_penalty=2.0)
    assert [m.shape for m in reg.between] == [(1, 8, 40), (1, 8, 40)]  # one mask per sequence, every step alike
    assert reg.output.shape == (1, 8, 40) and reg.inputs.shape == (1, 8, 30)
    assert set(reg.weight_hh) == {"rnn.weight_hh_l0", "rnn.weight_hh_l1", "rnn.weight_hh_l2"}
    assert reg.weight_hh["rnn.weight_hh_l1"].shape == (120, 40)  # one mask per batch on W_hh
    assert reg.tokens.shape == (50,) and reg.activation_penalty == 2.0
    for mask, p in ((reg.between[0], 0.3), (reg.output, 0.4), (reg.weight_hh["rnn.weight_hh_l0"], 0.5)):
        assert set(np.unique(mask)) == {0.0, np.float32(1 / (1 - p))}
    assert abs((reg.weight_hh["rnn.weight_hh_l0"] == 0).mean() - 0.5) < 0.05
    shard = reg.rows(slice(2, 5))
    assert shard.between[0].shape == (1, 3, 40) and shard.weight_hh is reg.weight_hh


def test_the_regularisers_leave_evaluation_alone():
    config = ModelConfig(cell="lstm", hidden_size=16, num_layers=2, locked_dropout=0.5, output_dropout=0.5,
                         weight_drop=0.5, embedding_dropout=0.5)
    model = RNNLM(config, 11)
    params = model.init_params(np.random.default_rng(0))
    tokens = np.random.default_rng(1).integers(0, 11, (6, 3))
    plain = RNNLM(ModelConfig(cell="lstm", hidden_size=16, num_layers=2), 11)
    np.testing.assert_array_equal(model.forward(params, tokens, model.initial_state(3))[0],
                                  plain.forward(params, tokens, plain.initial_state(3))[0])
    reg = model.regularisation(np.random.default_rng(2), 6, 3)
    assert not np.array_equal(model.forward(params, tokens, model.initial_state(3), reg)[0],
                              plain.forward(params, tokens, plain.initial_state(3))[0])


def test_bidirectional_model_cannot_step():
    model = RNNLM(ModelConfig(bidirectional=True), 5)
    with pytest.raises(Exception, match="bidirectional"):
        model.stepper(model.init_params(np.random.default_rng(0)), 1)
