"""How far back a model remembers: the memory curve and the gradient's decay.

The memory curve's windows are read side by side in batches; each point must equal reading each
window alone, its full-context point must be `charrnn eval --exact`'s figure, and on a trained
model it falls as the model may read more. The gradient's decay must agree with central finite
differences of one token's loss with respect to an earlier hidden state, in float64.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.config import ModelConfig
from charrnn.data.vocab import Vocabulary
from charrnn.inspect import memory as memory_module
from charrnn.inspect import report as report_module
from charrnn.inspect.memory import gradient_decay, lags_up_to, memory_curve, spread, thinned
from charrnn.inspect.report import Settings, inspect
from charrnn.inspect.values import Recorder
from charrnn.nn.head import token_nll
from charrnn.nn.model import RNNLM
from conftest import SHAKESPEARE_LIKE

V = 6


def tiny(cell, layers=2, hidden=3, encoding="onehot", seed=0):
    config = ModelConfig(cell=cell, hidden_size=hidden, num_layers=layers, encoding=encoding, embedding_dim=3,
                         bow_window=3, dtype="float64")
    model = RNNLM(config, V)
    params = {name: value * 2.5 for name, value in model.init_params(np.random.default_rng(seed)).items()}
    return model, params


def nll_alone(model, params, ids, position, k):
    """The loss on ids[position] reading only the k tokens before it, one window by itself."""
    start = max(0, position - k)
    z, _, _ = model.forward(params, ids[start:position, None], model.initial_state(1))
    return float(token_nll(z[-1].astype(np.float64), ids[position:position + 1])[0])


@pytest.mark.parametrize("cell, encoding", [("rnn", "onehot"), ("lstm", "onehot"), ("gru", "onehot"),
                                            ("gru", "bow"), ("lstm", "embedding")])
def test_each_point_of_the_batched_curve_is_the_loss_of_each_window_read_alone(cell, encoding):
    model, params = tiny(cell, encoding=encoding)
    ids = np.random.default_rng(1).integers(0, V, 90)
    full = np.full(len(ids), np.nan)
    z, _, _ = model.forward(params, ids[:-1, None], model.initial_state(1))
    full[1:] = token_nll(z[:, 0].astype(np.float64), ids[1:])
    positions = spread(len(ids), 30)
    curve = memory_curve(model, params, ids, positions, full, [1, 2, 3, 8, 40, 64])
    for k, nats in curve[:-1]:
        alone = [nll_alone(model, params, ids, int(p), k) for p in positions]
        expected = np.nanmean(full[1:]) + np.mean(np.array(alone) - full[positions])
        assert nats == pytest.approx(expected, abs=1e-12), k
    assert curve[-1] == ("full", pytest.approx(np.nanmean(full[1:]), abs=1e-15))


def test_a_long_lag_scores_every_second_fourth_or_later_position_within_the_step_budget(monkeypatch):
    monkeypatch.setattr(memory_module, "STEPS_PER_LAG", 200)
    positions = spread(1000, 30)
    assert list(thinned(positions, 6)) == list(positions)  # 30 x 6 steps fit
    assert list(thinned(positions, 8)) == list(positions[::2])  # 240 do not: 15 x 8 do
    assert list(thinned(positions, 64)) == list(positions[::16])  # 2 x 64 fit
    assert list(thinned(positions, 500)) == list(positions[::16])  # never fewer than two
    model, params = tiny("lstm")
    ids = np.random.default_rng(1).integers(0, V, 90)
    full = np.full(len(ids), np.nan)
    z, _, _ = model.forward(params, ids[:-1, None], model.initial_state(1))
    full[1:] = token_nll(z[:, 0].astype(np.float64), ids[1:])
    positions = spread(len(ids), 30)
    for k, nats in memory_curve(model, params, ids, positions, full, [2, 8, 40])[:-1]:
        scored = thinned(positions, k)
        alone = [nll_alone(model, params, ids, int(p), k) for p in scored]
        expected = np.nanmean(full[1:]) + np.mean(np.array(alone) - full[scored])
        assert nats == pytest.approx(expected, abs=1e-12), k


def test_the_states_recorded_while_reading_are_those_of_reading_the_text_so_far():
    model, params = tiny("lstm", encoding="bow")
    ids = np.random.default_rng(2).integers(0, V, 50)
    recorder = Recorder(model, params, ids, chunk=7, states_at=[0, 1, 6, 7, 8, 20, 49])
    assert sum(len(chunk.log_probs) for chunk in recorder) == 50
    for position, state in recorder.states.items():
        _, expected, _ = model.forward(params, ids[:position, None], model.initial_state(1)) if position else \
            (None, model.initial_state(1), None)
        for got, want in zip(state.layers, expected.layers):
            for a, b in zip(got, want):
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
        np.testing.assert_array_equal(state.history, expected.history)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_gradient_decay_is_the_norm_of_finite_differences_of_one_tokens_loss(cell):
    model, params = tiny(cell)
    ids = np.random.default_rng(3).integers(0, V, 40)
    targets, lags = np.array([20, 33, 39]), [1, 2, 5, 16]
    recorder = Recorder(model, params, ids, chunk=9, states_at={t - k for t in targets for k in lags})
    for _ in recorder:
        pass
    decay = dict(gradient_decay(model, params, ids, recorder.states, targets, lags))
    step = 1e-5
    for k in lags:
        norms = []
        for t in targets:
            state = recorder.states[t - k]
            gradient = []
            for layer in state.layers:
                h = layer[0]
                for unit in range(h.shape[1]):
                    losses = []
                    for sign in (1, -1):
                        h[0, unit] += sign * step
                        z, _, _ = model.forward(params, ids[t - k:t, None], state)
                        losses.append(token_nll(z[-1].astype(np.float64), ids[t:t + 1])[0])
                        h[0, unit] -= sign * step
                    gradient.append((losses[0] - losses[1]) / (2 * step))
            norms.append(np.linalg.norm(gradient))
        assert decay[k] == pytest.approx(np.mean(norms), rel=1e-6), k


def test_the_full_context_point_is_eval_exact_and_the_curve_falls_with_context(trained_run, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(SHAKESPEARE_LIKE[:3000])
    exact = CliRunner().invoke(cli, ["eval", str(trained_run), str(text), "--exact", "--json"])
    shown = CliRunner().invoke(cli, ["inspect", str(trained_run), str(text), "--json", "-q"])
    assert exact.exit_code == 0 and shown.exit_code == 0, shown.output
    curve = json.loads(shown.stdout)["memory"]
    assert curve[-1]["context"] == "full"
    assert curve[-1]["nats"] == pytest.approx(json.loads(exact.stdout)["nats_per_token"], abs=1e-6)
    nats = [point["nats"] for point in curve]
    assert all(later <= earlier + 0.01 for earlier, later in zip(nats, nats[1:])), nats
    assert nats[0] > nats[-1] + 0.1  # even 30 steps of training teach the model to use its context


def test_a_long_text_does_not_keep_its_states_in_memory(monkeypatch):
    tracemalloc = pytest.importorskip("tracemalloc")
    monkeypatch.setattr(report_module, "MEMORY_POSITIONS", 64)  # the curve's and the decay's costs do not grow
    monkeypatch.setattr(report_module, "DECAY_POSITIONS", 4)  # with the text: they are measured elsewhere
    model = RNNLM(ModelConfig(cell="lstm", hidden_size=16, num_layers=2), V)
    params = model.init_params(np.random.default_rng(0))
    vocab = Vocabulary("char", tuple("abcdef"), (1,) * V)

    def peak_reading(n):
        ids = np.random.default_rng(4).integers(0, V, n)
        tracemalloc.start()
        report = inspect(model, params, vocab, ids, Settings(page_kinds=("h",), page_tokens=1000))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert report.tokens == n
        return peak

    per_token = (peak_reading(12_000) - peak_reading(2_000)) / 10_000
    every_value = 2 * 16 * 7 * 8  # bytes a token would add if every value were kept in float64
    assert per_token < every_value / 10, per_token


def test_lags_double_up_to_the_longest():
    assert lags_up_to(1024) == [2 ** i for i in range(11)]
    assert lags_up_to(5) == [1, 2, 4]
