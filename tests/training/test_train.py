"""`charrnn train`: determinism, exact resume, signals, crash safety, failure modes, learning."""

import copy
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.compute.mkl import mkl_products
from charrnn.config import Config
from charrnn.data.splits import StreamBatcher
from charrnn.nn.model import RNNLM
from charrnn.nn.products import LAYOUTS
from charrnn.runs import run as runs
from charrnn.training.loop import Trainer

TINY = ["--cell", "lstm", "--hidden-size", "16", "--layers", "2", "--seq-len", "8", "--batch-size", "4",
        "--set", "model.dropout=0.2", "--set", "train.eval_every=4", "--set", "train.log_every=2",
        "--set", "train.checkpoint_every=3", "--set", "train.eval_tokens=200", "--quiet"]


def train(*args):
    return CliRunner().invoke(cli, ["train", *map(str, args)])


def params_of(path):
    return runs.read_checkpoint(path).params


def test_batches_continue_each_stream_from_one_step_to_the_next():
    batcher = StreamBatcher(np.arange(100), batch_size=3, seq_len=4)
    x0, y0 = batcher.batch(0)
    x1, _ = batcher.batch(1)
    assert batcher.stream_len == 33 and batcher.steps_per_epoch == 8
    assert x0[:, 1].tolist() == [33, 34, 35, 36] and y0[:, 1].tolist() == [34, 35, 36, 37]
    assert x1[0].tolist() == [x0[-1, b] + 1 for b in range(3)]


def test_same_config_and_seed_give_identical_parameters(corpus_file, tmp_path):
    for name in ("a", "b"):
        assert train(corpus_file, "--out", tmp_path / name, "--max-steps", 10, *TINY).exit_code == 0
    a, b = params_of(tmp_path / "a" / "last.npz"), params_of(tmp_path / "b" / "last.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_stopped_and_resumed_run_ends_identical_to_an_uninterrupted_one(corpus_file, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(corpus_file, "--out", whole, "--max-steps", 14, *TINY).exit_code == 0
    assert train(corpus_file, "--out", parts, "--max-steps", 5, *TINY).exit_code == 0
    resumed = train(corpus_file, "--out", parts, "--max-steps", 14, "--resume", *TINY)
    assert resumed.exit_code == 0, resumed.output
    a, b = params_of(whole / "last.npz"), params_of(parts / "last.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    meta = runs.read_checkpoint(parts / "last.npz").meta
    assert meta["progress"]["step"] == 14 and meta["progress"]["tokens"] == 14 * 8 * 4


REGULARISED = ["--set", "model.locked_dropout=0.2", "--set", "model.output_dropout=0.2",
               "--set", "model.weight_drop=0.3", "--set", "model.embedding_dropout=0.1", "--set", "train.activation_penalty=1",
               "--set", "train.temporal_penalty=1", "--set", "train.average_start=0"]


@pytest.mark.parametrize("average", ["ema", "tail"])
def test_a_regularised_and_averaged_run_resumes_bit_for_bit_and_is_used_by_its_average(corpus_file, tmp_path,
                                                                                       average):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    settings = [*TINY, *REGULARISED, "--set", f"train.average={average}", "--set", "train.average_decay=0.9"]
    assert train(corpus_file, "--out", whole, "--max-steps", 14, *settings).exit_code == 0
    assert train(corpus_file, "--out", parts, "--max-steps", 5, *settings).exit_code == 0
    assert train(corpus_file, "--out", parts, "--max-steps", 14, "--resume", *settings).exit_code == 0
    a, b = runs.read_checkpoint(whole / "last.npz"), runs.read_checkpoint(parts / "last.npz")
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name]) and np.array_equal(a.average[name], b.average[name])
    assert a.meta["progress"]["averaged"] == 14
    assert not np.array_equal(a.average["head.weight"], a.params["head.weight"])
    _, used, _, _ = runs.load_model(whole / "last.npz")
    assert all(used[k] is a.average[k] or np.array_equal(used[k], a.average[k]) for k in used)


def test_averages_are_an_ema_or_the_plain_mean_of_the_steps_folded_in():
    from charrnn.training.loop import update_average

    steps = [{"w": np.array([float(v)])} for v in (4, 8, 16)]
    for kind, expected in (("ema", 0.5 * (0.5 * 4 + 0.5 * 8) + 0.5 * 16), ("tail", (4 + 8 + 16) / 3)):
        average = {"w": np.zeros(1)}
        for count, params in enumerate(steps, start=1):
            update_average(average, params, kind, 0.5, count)
        assert average["w"][0] == pytest.approx(expected)


def test_averaging_begins_at_its_share_of_the_run_and_can_be_turned_on_when_resuming(corpus_file, tmp_path):
    run = tmp_path / "run"
    assert train(corpus_file, "--out", run, "--max-steps", 10, *TINY, "--set", "train.average=tail",
                 "--set", "train.average_start=0.6").exit_code == 0
    assert runs.read_checkpoint(run / "last.npz").meta["progress"]["averaged"] == 4  # steps 7 to 10
    plain = tmp_path / "plain"
    assert train(corpus_file, "--out", plain, "--max-steps", 4, *TINY).exit_code == 0
    resumed = train(corpus_file, "--out", plain, "--max-steps", 8, "--resume", *TINY, "--set", "train.average=ema",
                    "--set", "train.average_start=0")
    assert resumed.exit_code == 0, resumed.output
    saved = runs.read_checkpoint(plain / "last.npz")
    assert saved.meta["progress"]["averaged"] == 4 and saved.average is not None


class SteadyClock:
    """The training loop's clock: each reading 1/64 s after the last, so every step takes 1/64 s of
    training time (from the reading after the last step's to the one after its own), whatever the
    machine does."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1 / 64
        return self.now


FITTED = [*TINY, "--set", "train.max_steps=null", "--max-time", "2s", "--set", "train.lr_schedule=cosine",
          "--set", "train.warmup_steps=60", "--set", "train.min_lr=0.0001", "--set", "train.average=tail"]


def test_without_max_steps_a_cosine_schedule_and_its_average_are_fitted_to_max_time(corpus_file, tmp_path,
                                                                                     monkeypatch):
    monkeypatch.setattr("charrnn.training.loop.time", SteadyClock())
    run = tmp_path / "run"
    result = train(corpus_file, "--out", run, *FITTED)
    assert result.exit_code == 0, result.output
    horizon = int(0.97 * 2 * 64)  # the steps of 1/64 s that fit in 97% of two seconds
    assert horizon == 124
    assert "fitted the schedule to train.max_time 2s: 124 steps at 0.016 s a step (measured by step 60)" \
        in result.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if r["kind"] == "horizon"] == [
        {"kind": "horizon", "step": 60, "horizon": 124, "step_seconds": 1 / 64, "max_time": "2s"}]
    lrs = {r["step"]: r["lr"] for r in records if r["kind"] == "log"}
    assert lrs[30] < lrs[60] == 2e-3  # the warm-up, then the cosine, down to min_lr by the last step
    assert 1.99e-3 < lrs[62] < lrs[60] and lrs[124] == pytest.approx(1e-4, rel=0.02)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["reason"] == "max_time" and summary["steps"] == 124
    assert runs.read_checkpoint(run / "last.npz").meta["progress"]["averaged"] == 124 - 62


def test_a_fitted_run_whose_time_runs_out_before_its_pace_is_measured_stops_by_max_time(corpus_file, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setattr("charrnn.training.loop.time", SteadyClock())
    run = tmp_path / "run"
    result = train(corpus_file, "--out", run, *FITTED, "--max-time", "0.5s")  # 32 steps; the pace needs 60
    assert result.exit_code == 0, result.output
    assert json.loads((run / "summary.json").read_text())["reason"] == "max_time"
    assert "fitted the schedule" not in result.stderr
    assert runs.read_checkpoint(run / "last.npz").meta["progress"]["step"] == 32


def test_a_run_resumed_with_another_max_time_moves_its_fitted_horizon_and_says_so(corpus_file, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setattr("charrnn.training.loop.time", SteadyClock())
    run = tmp_path / "run"
    assert train(corpus_file, "--out", run, *FITTED, "--max-time", "1.25s").exit_code == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == int(0.97 * 1.25 * 64)
    resumed = train(corpus_file, "--out", run, "--resume", *FITTED)
    assert resumed.exit_code == 0, resumed.output
    assert "train.max_time: '1.25s' -> '2s'" in resumed.stderr and "horizon" in resumed.stderr
    assert json.loads((run / "summary.json").read_text())["steps"] == 124


@pytest.mark.parametrize("stop_at", [30, 90])  # before the pace is measured (step 60) and after
def test_a_run_fitted_to_max_time_resumes_bit_for_bit(monkeypatch, stop_at):
    config = Config()
    config.model.cell, config.model.hidden_size, config.model.num_layers = "gru", 16, 1
    config.train.batch_size, config.train.seq_len, config.train.eval_every = 4, 8, 25
    config.train.max_steps, config.train.max_time, config.train.lr_schedule = None, "2s", "cosine"
    config.train.warmup_steps, config.train.average = 60, "tail"
    tokens = np.tile(np.arange(5), 300)

    def finish(state=None, should_stop=lambda state: None):
        monkeypatch.setattr("charrnn.training.loop.time", SteadyClock())
        saved = []
        trainer = Trainer(config, RNNLM(config.model, 5), tokens, tokens[:100], lambda kind, record: None,
                          lambda state, names: saved.append(copy.deepcopy(state)))
        state = state or trainer.initial_state()
        return trainer.run(state, lambda: should_stop(state)), saved[-1]

    reason, whole = finish()
    assert reason == "max_time"
    reason, stopped = finish(should_stop=lambda state: "interrupted" if state.progress.step == stop_at else None)
    assert reason == "interrupted" and stopped.progress.step == stop_at + 1
    reason, resumed = finish(stopped)
    assert reason == "max_time" and resumed.progress.step == whole.progress.step == 124
    assert all(np.array_equal(whole.params[k], resumed.params[k]) and np.array_equal(whole.average[k],
                                                                                      resumed.average[k])
               for k in whole.params)


@pytest.mark.parametrize("layout", ["gate_major", pytest.param("packed", marks=pytest.mark.skipif(
    mkl_products() is None, reason="packed step products need the mkl extra"))])
def test_the_step_products_layout_is_recorded_and_a_resumed_run_keeps_it(corpus_file, tmp_path, layout):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    fixed = ["--set", f"train.step_products={layout}"]
    assert train(corpus_file, "--out", whole, "--max-steps", 14, *TINY, *fixed).exit_code == 0
    assert train(corpus_file, "--out", parts, "--max-steps", 5, *TINY, *fixed).exit_code == 0
    assert f"step_products: {layout}" in (parts / "config.yaml").read_text()
    resumed = train(corpus_file, "--out", parts, "--max-steps", 14, "--resume", "--quiet")
    assert resumed.exit_code == 0 and "warning" not in resumed.stderr, resumed.output
    a, b = params_of(whole / "last.npz"), params_of(parts / "last.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert json.loads((parts / "summary.json").read_text())["step_products"] == layout
    automatic = tmp_path / "automatic"
    assert train(corpus_file, "--out", automatic, "--max-steps", 2, *TINY).exit_code == 0
    recorded = runs.read_checkpoint(automatic / "last.npz").meta["config"]["train"]["step_products"]
    assert recorded in LAYOUTS  # "auto" is settled before the first step


def test_run_files_and_metrics(corpus_file, tmp_path):
    out = tmp_path / "run"
    result = train(corpus_file, "--out", out, "--max-steps", 8, *TINY, "--set", "train.keep_checkpoints=1")
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "vocab.json", "last.npz", "best.npz", "step-6.npz",
                                                "metrics.jsonl", "summary.json", "data"}
    assert not (out / "step-3.npz").exists()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "epoch", "tokens", "train_loss", "val_loss", "lr", "tokens_per_s", "wall_time"} <= set(records[0])
    assert [r["step"] for r in records if r["kind"] == "eval"] == [4, 8]
    assert "charrnn sample" in result.stdout and "best val" in result.stdout
    assert json.loads((out / "summary.json").read_text())["steps"] == 8


def test_an_existing_run_is_not_overwritten_without_resume_or_force(corpus_file, tmp_path):
    out = tmp_path / "run"
    assert train(corpus_file, "--out", out, "--max-steps", 2, *TINY).exit_code == 0
    before = (out / "last.npz").read_bytes()
    again = train(corpus_file, "--out", out, "--max-steps", 2, *TINY)
    assert again.exit_code == 1 and "--resume" in again.output
    assert (out / "last.npz").read_bytes() == before
    changed = train(corpus_file, "--out", out, "--max-steps", 4, "--resume", *TINY, "--hidden-size", "8")
    assert changed.exit_code == 1 and "model settings cannot change" in changed.output


def test_bidirectional_models_are_refused_for_language_modelling(corpus_file, tmp_path):
    result = train(corpus_file, "--out", tmp_path / "r", "--set", "model.bidirectional=true")
    assert result.exit_code == 1 and "must not see the text it predicts" in result.output


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(corpus_file, tmp_path):
    out = tmp_path / "run"
    assert train(corpus_file, "--out", out, "--max-steps", 3, *TINY).exit_code == 0
    good = (out / "last.npz").read_bytes()
    result = train(corpus_file, "--out", out, "--max-steps", 40, "--resume", *TINY, "--set", "train.optimizer=sgd",
                   "--set", "train.clip_norm=0", "--lr", "1e300")
    assert result.exit_code == 1 and "non-finite" in result.output
    assert (out / "last.npz").read_bytes() == good


@pytest.mark.parametrize("signal_number, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_saves_last_and_exits_and_resume_continues(corpus_file, tmp_path, signal_number, exit_code):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "charrnn", "train", str(corpus_file), "--out", str(out), "--max-steps",
               "1000000", *TINY]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not (out / "last.npz").exists() and time.time() < deadline:
        time.sleep(0.1)
    process.send_signal(signal_number)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == exit_code, stderr
    assert "resume with: charrnn train" in stderr and "Traceback" not in stderr
    step = runs.read_checkpoint(out / "last.npz").meta["progress"]["step"]
    assert step > 0
    resumed = train(corpus_file, "--out", out, "--max-steps", step + 2, "--resume", *TINY)
    assert resumed.exit_code == 0
    assert runs.read_checkpoint(out / "last.npz").meta["progress"]["step"] == step + 2


def test_a_tiny_model_learns_a_repetitive_corpus():
    config = Config()
    config.model.cell, config.model.hidden_size, config.model.num_layers = "gru", 32, 1
    config.train.batch_size, config.train.seq_len, config.train.max_steps = 8, 16, 150
    config.train.lr, config.train.eval_every, config.train.log_every = 0.01, 150, 10
    tokens = np.tile(np.array([0, 1, 2, 3, 1, 2, 0, 3]), 400)
    model = RNNLM(config.model, 4)
    logged = []
    trainer = Trainer(config, model, tokens, tokens[:500], lambda kind, r: logged.append((kind, r)),
                      lambda state, names: None)
    assert trainer.run(trainer.initial_state()) == "max_steps"
    final = [r for kind, r in logged if kind == "eval"][-1]
    assert final["train_loss"] < 0.05  # the pattern needs two tokens of context: val streams start without it
    assert final["val_loss"] < 0.2
