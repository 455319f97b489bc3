"""Dynamic evaluation: adapting while scoring, never scoring a token after learning from it."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.runs.run import load_model
from charrnn.score.dynamic import RMS_FLOOR, RMSAdapter, SGDAdapter
from charrnn.score.evaluate import StreamScorer
from charrnn.score.pieces import Method
from conftest import assert_one_line_failure

REPEATED = "thou art Romeo, wherefore? " * 60


def evaluate(*args):
    result = CliRunner().invoke(cli, ["eval", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("method", ["sgd", "rms"])
def test_with_learning_rate_0_the_result_equals_plain_eval_exactly(trained_run, method):
    plain = evaluate(trained_run, "--split", "val", "--chunk", 50)
    still = evaluate(trained_run, "--split", "val", "--dynamic", "--dynamic-method", method,
                     "--dynamic-lr", 0, "--dynamic-decay", 0, "--dynamic-seq", 50)
    assert still["nats_per_token"] == plain["nats_per_token"] and still["tokens"] == plain["tokens"]
    assert still["dynamic"] == {"method": method, "lr": 0.0, "decay": 0.0, "seq": 50} and plain["dynamic"] is None


@pytest.mark.parametrize("method, defaults", [("rms", {"lr": 2e-4, "decay": 1e-3, "seq": 20}),
                                               ("sgd", {"lr": 0.03, "decay": 0.0, "seq": 50})])
def test_each_method_has_its_own_tuned_defaults_and_a_flag_overrides_one(trained_run, method, defaults):
    assert evaluate(trained_run, "--split", "val", "--dynamic", "--dynamic-method", method)["dynamic"] == \
        {"method": method, **defaults}
    assert evaluate(trained_run, "--split", "val", "--dynamic", "--dynamic-method", method,
                    "--dynamic-seq", 7)["dynamic"] == {"method": method, **defaults, "seq": 7}


class Recorder:
    """Wraps a model and an adapter, noting which targets each forward scored and at which weight version."""

    def __init__(self, model, params):
        self.model, self.version, self.scored, self.learned = model, 0, [], []
        self.inner = SGDAdapter(params, lr=0.1, decay=0.0)
        self.position = 0

    def initial_state(self, batch):
        return self.model.initial_state(batch)

    def nll_and_grads(self, params, inputs, targets, state):
        positions = list(range(self.position, self.position + len(targets)))
        self.position += len(targets)
        self.scored.append((self.version, positions))
        return self.model.nll_and_grads(params, inputs, targets, state)

    def update(self, params, grads):
        self.learned.append((self.version, self.scored[-1][1]))
        self.inner.update(params, grads)
        self.version += 1


def test_no_token_is_scored_after_an_update_that_used_it(trained_run):
    model, params, vocab, _ = load_model(trained_run)
    recorder = Recorder(model, params)
    scorer = StreamScorer(recorder, params, chunk=7, adapter=recorder)
    ids = vocab.encode(REPEATED[:300])
    for piece in np.array_split(ids, 5):
        scorer.feed(piece)
    learned_before = {}
    for version, positions in recorder.learned:
        for position in positions:
            learned_before[position] = version + 1  # the first weight version that had learned it
    for version, positions in recorder.scored:
        assert all(version < learned_before[p] for p in positions)
    assert sum(len(p) for _, p in recorder.scored) == len(ids) - 1 == scorer.score.tokens


def test_a_text_adapted_block_by_block_is_cut_into_the_segments_of_one_read(trained_run, monkeypatch):
    from charrnn.score import eval_text

    model, params, vocab, _ = load_model(trained_run)
    ids = np.asarray(vocab.encode(REPEATED), np.int64)  # 1,620 tokens
    at_once = StreamScorer(model, {k: v.copy() for k, v in params.items()}, chunk=7,
                           adapter=SGDAdapter(params, lr=0.1, decay=0.01)).feed(ids)
    monkeypatch.setattr(eval_text, "ADAPT_BLOCK", 3)  # blocks of 21 predictions: 77 of them
    in_blocks = np.full(len(ids), np.nan, np.float32)
    adapted = {k: v.copy() for k, v in params.items()}
    score = eval_text.score_ids(model, adapted, ids, Method(), 7, SGDAdapter(adapted, lr=0.1, decay=0.01), in_blocks)
    assert np.array_equal(in_blocks[1:], at_once.astype(np.float32)) and score.tokens == len(ids) - 1


@pytest.mark.parametrize("method", ["sgd", "rms"])
def test_adapting_to_a_repetitive_text_lowers_its_loss_and_leaves_the_checkpoint_alone(tmp_path, trained_run, method):
    text = tmp_path / "repeated.txt"
    text.write_text(REPEATED)
    before = {p.name: p.read_bytes() for p in trained_run.glob("*.npz")}
    static = evaluate(trained_run, text, "--chunk", 50)
    lr = {"sgd": 0.5, "rms": 3e-3}[method]
    adapted = evaluate(trained_run, text, "--dynamic", "--dynamic-method", method, "--dynamic-lr", lr)
    assert adapted["nats_per_token"] < static["nats_per_token"] - 0.05
    assert {p.name: p.read_bytes() for p in trained_run.glob("*.npz")} == before


def test_a_weight_the_calibration_never_saw_move_takes_a_bounded_step_and_is_pulled_back():
    # column 2 is the input weight of a character absent from every calibration segment
    mean_square = {"w": np.array([[1e-6, 1e-6, 0.0], [1e-6, 1e-6, 0.0]])}
    params = {"w": np.zeros((2, 3), np.float32)}
    adapter = RMSAdapter(params, mean_square, lr=1e-3, decay=0.1)
    adapter.update(params, {"w": np.ones((2, 3), np.float32)})
    floor = RMS_FLOOR * 4 * 1e-3 / 6  # a tenth of the tensor's mean root
    floored_mean = (4 * 1e-3 + 2 * floor) / 6
    np.testing.assert_allclose(params["w"][:, :2], -1.0 * (1 - 0.1 * 1e-3 / floored_mean), rtol=1e-5)
    moved = 1e-3 / floor * (1 - 0.1 * floor / floored_mean)
    np.testing.assert_allclose(params["w"][:, 2], -moved, rtol=1e-5)
    adapter.update(params, {"w": np.zeros((2, 3), np.float32)})
    assert (np.abs(params["w"][:, 2]) < moved).all()  # the decay pulls it back


def test_a_tensor_the_calibration_never_saw_move_at_all_takes_plain_steps():
    params = {"w": np.zeros(3, np.float32)}
    adapter = RMSAdapter(params, {"w": np.zeros(3)}, lr=1e-3, decay=0.1)
    adapter.update(params, {"w": np.ones(3, np.float32)})
    np.testing.assert_allclose(params["w"], -1e-3 * (1 - 0.1), rtol=1e-5)


def test_bad_dynamic_settings_are_one_line(tmp_path, trained_run):
    text = tmp_path / "text.txt"
    text.write_text(REPEATED)
    cases = [(["--dynamic", "--dynamic-lr", "nan"], "--dynamic-lr"),
             (["--dynamic", "--dynamic-decay", "-1"], "--dynamic-decay"),
             (["--dynamic", "--dynamic-seq", "0"], "--dynamic-seq")]
    for extra, fragment in cases:
        result = CliRunner().invoke(cli, ["eval", str(trained_run), str(text), *extra])
        assert_one_line_failure(result.exit_code, result.stderr, fragment)


def test_rms_needs_the_training_split_and_sgd_does_not(tmp_path, checkpoint_without_its_data):
    text = tmp_path / "text.txt"
    text.write_text(REPEATED)
    result = CliRunner().invoke(cli, ["eval", str(checkpoint_without_its_data), str(text), "--dynamic"])
    assert_one_line_failure(result.exit_code, result.stderr, "use --dynamic-method sgd")
    assert evaluate(checkpoint_without_its_data, text, "--dynamic", "--dynamic-method", "sgd")["tokens"] > 0
