"""Optimizers, clipping and schedules."""

import numpy as np
import pytest

from charrnn.config import TrainConfig
from charrnn.training.optim import clip_by_global_norm, learning_rate, make_optimizer


def quadratic_steps(optimizer_name, steps=300, **settings):
    """Minimise 0.5 * |p - 3|^2 from p = 0; returns the final p."""
    cfg = TrainConfig(optimizer=optimizer_name, **settings)
    optimizer = make_optimizer(cfg)
    params = {"p": np.zeros(4)}
    state = optimizer.init(params)
    for _ in range(steps):
        optimizer.step(params, {"p": params["p"] - 3.0}, state, cfg.lr)
    return params["p"]


@pytest.mark.parametrize("name, settings", [
    ("sgd", {"lr": 0.1, "momentum": 0.0}), ("sgd", {"lr": 0.05, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True}), ("adagrad", {"lr": 1.0}),
    ("rmsprop", {"lr": 0.03}), ("adam", {"lr": 0.1}), ("adamw", {"lr": 0.1}),
])
def test_every_optimizer_converges_on_a_quadratic(name, settings):
    np.testing.assert_allclose(quadratic_steps(name, **settings), 3.0, atol=0.05)


def test_adam_first_step_moves_each_parameter_by_lr():
    """With bias correction, Adam's first update is lr * sign(g) (up to eps)."""
    cfg = TrainConfig(optimizer="adam", lr=0.01)
    optimizer = make_optimizer(cfg)
    params = {"p": np.array([1.0, -2.0])}
    state = optimizer.init(params)
    optimizer.step(params, {"p": np.array([0.5, -4.0])}, state, cfg.lr)
    np.testing.assert_allclose(params["p"], [0.99, -1.99], rtol=1e-6)


def test_adamw_decays_weights_decoupled_from_the_gradient():
    cfg = TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.5)
    optimizer = make_optimizer(cfg)
    params = {"p": np.array([2.0])}
    state = optimizer.init(params)
    optimizer.step(params, {"p": np.array([0.0])}, state, cfg.lr)
    np.testing.assert_allclose(params["p"], [2.0 * (1 - 0.05)])


def test_clipping_scales_to_the_global_norm():
    grads = {"a": np.array([3.0]), "b": np.array([4.0])}
    assert clip_by_global_norm(grads, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose([grads["a"][0], grads["b"][0]], [0.6, 0.8], rtol=1e-5)
    assert clip_by_global_norm(grads, 0) == pytest.approx(1.0, rel=1e-5)


def test_step_decay_is_char_rnn_style():
    cfg = TrainConfig(lr=1.0, lr_schedule="step", decay_rate=0.5, decay_after=2, decay_every=1)
    assert [learning_rate(cfg, 0, epoch, 100) for epoch in range(5)] == [1.0, 1.0, 0.5, 0.25, 0.125]


def test_cosine_warms_up_linearly_then_decays_to_min_lr():
    cfg = TrainConfig(lr=1.0, lr_schedule="cosine", warmup_steps=10, max_steps=110, min_lr=0.1)
    assert learning_rate(cfg, 0, 0, 110) == pytest.approx(0.1)
    assert learning_rate(cfg, 9, 0, 110) == pytest.approx(1.0)
    assert learning_rate(cfg, 60, 0, 110) == pytest.approx(0.55)
    assert learning_rate(cfg, 110, 0, 110) == pytest.approx(0.1)
