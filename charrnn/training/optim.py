"""Optimizers, global-norm clipping and learning-rate schedules.

An optimizer is a small object holding its hyper-parameters; its state is a plain dict of arrays
(`init(params)`: one array per parameter and slot, `<slot>/<name>`, plus Adam's step count `t`),
updated in place by `step(params, grads, state, lr)`, so exact resume is just saving that dict;
`state_layout` says what that dict holds without allocating it (the checkpoint loader checks it).
Adam and AdamW share one implementation. Schedules are pure functions of the step and epoch, so
a resumed run follows the same curve.
"""

from __future__ import annotations

import math

import numpy as np

from charrnn.config import TrainConfig


class Optimizer:
    """The state every optimizer keeps: `slots` arrays shaped like each parameter, plus `scalars`."""

    slots: tuple[str, ...] = ()
    scalars: dict[str, np.dtype] = {}

    def init(self, params):
        state = {name: np.zeros((), dtype) for name, dtype in self.scalars.items()}
        state.update({f"{slot}/{k}": np.zeros_like(v) for slot in self.slots for k, v in params.items()})
        return state

    def state_layout(self, param_layout: dict[str, tuple[tuple[int, ...], np.dtype]]):
        """{param name: (shape, dtype)} -> {state key: (shape, dtype)}, as `init` would make it."""
        layout = {name: ((), np.dtype(dtype)) for name, dtype in self.scalars.items()}
        layout.update({f"{slot}/{k}": v for slot in self.slots for k, v in param_layout.items()})
        return layout


def with_l2(grad: np.ndarray, param: np.ndarray, weight_decay: float) -> np.ndarray:
    """grad + weight_decay * param (L2 regularisation), or grad itself when there is none."""
    return grad + weight_decay * param if weight_decay else grad


class SGD(Optimizer):
    """p -= lr * v, v = momentum * v + g (Nesterov: p -= lr * (g + momentum * v)); L2 weight decay."""

    def __init__(self, cfg: TrainConfig):
        self.momentum, self.nesterov, self.weight_decay = cfg.momentum, cfg.nesterov, cfg.weight_decay
        self.slots = ("velocity",) if self.momentum else ()

    def step(self, params, grads, state, lr):
        for name, p in params.items():
            g = with_l2(grads[name], p, self.weight_decay)
            if self.momentum:
                v = state[f"velocity/{name}"]
                v *= self.momentum
                v += g
                g = g + self.momentum * v if self.nesterov else v
            p -= lr * g


class Adagrad(Optimizer):
    """sum += g^2;  p -= lr * g / (sqrt(sum) + eps)."""

    slots = ("sum",)

    def __init__(self, cfg: TrainConfig):
        self.eps, self.weight_decay = cfg.eps, cfg.weight_decay

    def step(self, params, grads, state, lr):
        for name, p in params.items():
            g = with_l2(grads[name], p, self.weight_decay)
            total = state[f"sum/{name}"]
            total += g * g
            p -= lr * g / (np.sqrt(total) + self.eps)


class RMSprop(Optimizer):
    """avg = alpha * avg + (1 - alpha) g^2;  p -= lr * g / (sqrt(avg) + eps)."""

    slots = ("square_avg",)

    def __init__(self, cfg: TrainConfig):
        self.alpha, self.eps, self.weight_decay = cfg.alpha, cfg.eps, cfg.weight_decay

    def step(self, params, grads, state, lr):
        for name, p in params.items():
            g = with_l2(grads[name], p, self.weight_decay)
            avg = state[f"square_avg/{name}"]
            avg *= self.alpha
            avg += (1 - self.alpha) * g * g
            p -= lr * g / (np.sqrt(avg) + self.eps)


class Adam(Optimizer):
    """Adam with bias correction; `decoupled` weight decay makes it AdamW (p -= lr * wd * p)."""

    slots = ("m", "v")
    scalars = {"t": np.dtype(np.int64)}

    def __init__(self, cfg: TrainConfig, decoupled: bool):
        (self.beta1, self.beta2), self.eps = cfg.betas, cfg.eps
        self.weight_decay, self.decoupled = cfg.weight_decay, decoupled

    def step(self, params, grads, state, lr):
        state["t"] += 1
        t = int(state["t"])
        step_size = lr * math.sqrt(1 - self.beta2 ** t) / (1 - self.beta1 ** t)
        for name, p in params.items():
            g = grads[name]
            if self.weight_decay and not self.decoupled:
                g = g + self.weight_decay * p
            elif self.weight_decay:
                p *= 1 - lr * self.weight_decay
            m, v = state[f"m/{name}"], state[f"v/{name}"]
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            p -= step_size * m / (np.sqrt(v) + self.eps)


def make_optimizer(cfg: TrainConfig):
    return {"sgd": lambda: SGD(cfg), "adagrad": lambda: Adagrad(cfg), "rmsprop": lambda: RMSprop(cfg),
            "adam": lambda: Adam(cfg, decoupled=False), "adamw": lambda: Adam(cfg, decoupled=True)}[cfg.optimizer]()


def all_finite(arrays) -> bool:
    """True when no floating array among `arrays` holds NaN or infinity."""
    return all(np.isfinite(a).all() for a in arrays if a.dtype.kind == "f")


def clip_by_global_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their joint L2 norm is at most max_norm (0: no clipping).
    Returns the norm before clipping."""
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if max_norm and norm > max_norm:
        for g in grads.values():
            g *= max_norm / (norm + 1e-6)
    return norm


def learning_rate(cfg: TrainConfig, step: int, epoch: int, horizon: int | None) -> float:
    """The lr for optimizer step `step` (0-based) in epoch `epoch` (0-based); the cosine schedule
    reaches min_lr at step `horizon` (max_steps, else max_epochs x steps per epoch, else the steps
    fitted to max_time) and holds its peak while a horizon fitted to max_time is not yet measured."""
    warmup = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_schedule == "step":
        decays = (epoch - cfg.decay_after) // cfg.decay_every + 1 if epoch >= cfg.decay_after else 0
        return cfg.lr * warmup * cfg.decay_rate ** decays
    if cfg.lr_schedule == "cosine":
        if step < cfg.warmup_steps:
            return cfg.lr * warmup
        if horizon is None:
            return cfg.lr
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, horizon - cfg.warmup_steps))
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * warmup
