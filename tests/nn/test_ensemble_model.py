"""An ensemble predicts the mean of its members' probabilities, step by step as in one read, and its
state splits and joins by stream as a model's does."""

import numpy as np

from charrnn.config import ModelConfig
from charrnn.nn.ensemble import Ensemble, EnsembleState, mean_nll
from charrnn.nn.model import RNNLM


def members(cells=("gru", "lstm")):
    models = [RNNLM(ModelConfig(cell=cell, hidden_size=12, num_layers=2), 7) for cell in cells]
    params = [model.init_params(np.random.default_rng(seed)) for seed, model in enumerate(models)]
    return Ensemble(models), params


def softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_the_ensemble_reads_the_log_of_its_members_mean_probability():
    ensemble, params = members()
    tokens = np.random.default_rng(0).integers(0, 7, (9, 3))
    together = ensemble.stepper(params, 3).read(tokens).copy()
    alone = [model.stepper(p, 3).read(tokens).copy() for model, p in zip(ensemble.models, params)]
    expected = np.log((softmax(alone[0]) + softmax(alone[1])) / 2)
    np.testing.assert_allclose(together, expected, atol=1e-6)
    np.testing.assert_allclose(np.exp(together).sum(-1), 1.0, atol=1e-6)


def test_stepping_token_by_token_matches_one_read_and_nll_is_of_the_mixture():
    ensemble, params = members()
    tokens = np.random.default_rng(1).integers(0, 7, (6, 2))
    read = ensemble.stepper(params, 2).read(tokens).copy()
    stepper = ensemble.stepper(params, 2)
    stepped = np.stack([stepper.step(tokens[t]).copy() for t in range(6)])
    np.testing.assert_allclose(stepped, read, atol=1e-6)
    nll = ensemble.stepper(params, 2).nll(tokens[:-1], tokens[1:])
    np.testing.assert_allclose(nll, -np.take_along_axis(read[:-1], tokens[1:, :, None], 2)[..., 0], atol=1e-6)


def test_streams_split_and_join_as_a_models_do():
    ensemble, params = members()
    tokens = np.random.default_rng(2).integers(0, 7, (5, 4))
    stepper = ensemble.stepper(params, 4)
    stepper.read(tokens)
    state = stepper.state
    odd, even = state.rows(np.array([1, 3])), state.rows(np.array([0, 2]))
    joined = EnsembleState.joined([even, odd])  # streams 0, 2, 1, 3
    regrouped = stepper.resized(4)
    regrouped.reset(joined)
    after = regrouped.step(np.array([1, 2, 3, 4])).copy()
    stepper.reset(state.rows(np.array([0, 2, 1, 3])))
    np.testing.assert_allclose(after, stepper.step(np.array([1, 2, 3, 4])), atol=1e-6)
    assert [s.layers[0][0].shape for s in joined.members] == [(4, 12), (4, 12)]


def test_the_mean_of_probabilities_from_nlls_survives_tiny_probabilities():
    nll = np.array([[0.5, 800.0, 2.0], [1.5, 1000.0, 2.0]])
    mixed = mean_nll(nll)
    np.testing.assert_allclose(mixed[[0, 2]], -np.log((np.exp(-nll[0, [0, 2]]) + np.exp(-nll[1, [0, 2]])) / 2))
    np.testing.assert_allclose(mixed[1], 800.0 + np.log(2) - np.log1p(np.exp(-200.0)))
