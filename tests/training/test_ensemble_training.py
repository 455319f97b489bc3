"""`charrnn train` with train.members: networks trained one after another, each a run of its own
with its own seed and its share of the time, resumed member by member, bit for bit."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.runs import run as runs
from conftest import assert_one_line_failure

TINY = ["--cell", "gru", "--hidden-size", "16", "--seq-len", "8", "--batch-size", "4", "--quiet",
        "--set", "train.eval_every=4", "--set", "train.checkpoint_every=3", "--set", "train.eval_tokens=200"]


def train(*args):
    return CliRunner().invoke(cli, ["train", *map(str, args)])


def params_of(path):
    return runs.read_checkpoint(path).params


def same_params(a, b) -> bool:
    a, b = params_of(a), params_of(b)
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_each_member_is_a_run_with_its_own_seed_and_share_of_the_time(corpus_file, tmp_path):
    out = tmp_path / "ensemble"
    result = train(corpus_file, "--out", out, "--max-steps", 6, "--max-time", "1h", "--set", "train.members=3", *TINY)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "ensemble.json").read_text())["members"] == ["member-1", "member-2", "member-3"]
    for k in (1, 2, 3):
        member = runs.read_checkpoint(out / f"member-{k}" / "last.npz").meta["config"]["train"]
        assert (member["seed"], member["max_time"], member["members"]) == (1336 + k, "1200s", 1)
        assert json.loads((out / f"member-{k}" / "summary.json").read_text())["steps"] == 6
    assert "member 2 of 3: seed 1338, 1200s of train.max_time" in result.stderr
    assert not same_params(out / "member-1" / "last.npz", out / "member-2" / "last.npz")


def test_a_member_trains_exactly_as_a_run_of_its_own_with_its_seed(corpus_file, tmp_path):
    assert train(corpus_file, "--out", tmp_path / "ensemble", "--max-steps", 6, "--set", "train.members=2",
                 *TINY).exit_code == 0
    assert train(corpus_file, "--out", tmp_path / "alone", "--max-steps", 6, "--set", "train.seed=1338",
                 *TINY).exit_code == 0
    assert same_params(tmp_path / "ensemble" / "member-2" / "last.npz", tmp_path / "alone" / "last.npz")


def test_member_settings_give_a_member_its_own_recipe_and_time_and_it_trains_as_that_run_alone(corpus_file, tmp_path):
    out = tmp_path / "ensemble"
    own = "[{}, {train.lr: 0.005, model.output_dropout: 0.2}, {train.max_time: 30m}]"
    result = train(corpus_file, "--out", out, "--max-steps", 6, "--max-time", "1h", "--set", "train.members=3",
                   "--set", f"train.member_settings={own}", *TINY)
    assert result.exit_code == 0, result.output
    configs = {k: runs.read_checkpoint(out / f"member-{k}" / "last.npz").meta["config"] for k in (1, 2, 3)}
    assert [(c["train"]["seed"], c["train"]["lr"], c["model"]["output_dropout"], c["train"]["max_time"])
            for c in configs.values()] == [(1337, 0.002, 0.0, "900s"), (1338, 0.005, 0.2, "900s"),
                                           (1339, 0.002, 0.0, "30m")]
    assert all(c["train"]["member_settings"] == [] for c in configs.values())
    assert "member 2 of 3: seed 1338, 900s of train.max_time, train.lr 0.005, model.output_dropout 0.2" in result.stderr
    alone = tmp_path / "alone"
    assert train(corpus_file, "--out", alone, "--max-steps", 6, "--max-time", "900s", "--set", "train.seed=1338",
                 "--lr", 0.005, "--set", "model.output_dropout=0.2", *TINY).exit_code == 0
    assert same_params(out / "member-2" / "last.npz", alone / "last.npz")


def test_an_ensemble_stopped_by_a_signal_says_how_to_resume_and_resumes_bit_for_bit(corpus_file, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    settings = ["--set", "train.members=3", "--max-steps", 400, *TINY]
    assert train(corpus_file, "--out", whole, *settings).exit_code == 0
    process = subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(corpus_file), "--out", str(parts),
                                *map(str, settings)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (parts / "member-2" / "last.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"resume with: charrnn train --out {parts} --resume" in stderr
    stopped = runs.read_checkpoint(parts / "member-2" / "last.npz").meta["progress"]["step"]
    assert 0 < stopped < 400 and not (parts / "member-3").exists()
    resumed = train("--out", parts, "--resume")  # no SOURCE: the ensemble's own data
    assert resumed.exit_code == 0, resumed.output
    for k in (1, 2, 3):
        assert same_params(whole / f"member-{k}" / "last.npz", parts / f"member-{k}" / "last.npz")


def test_resuming_an_ensemble_with_more_steps_continues_every_member(corpus_file, tmp_path):
    out = tmp_path / "ensemble"
    assert train(corpus_file, "--out", out, "--max-steps", 4, "--set", "train.members=2", *TINY).exit_code == 0
    resumed = train("--out", out, "--resume", "--max-steps", 7)
    assert resumed.exit_code == 0, resumed.output
    assert [json.loads((out / f"member-{k}" / "summary.json").read_text())["steps"] for k in (1, 2)] == [7, 7]


def test_what_cannot_change_when_resuming_an_ensemble_or_a_run_is_refused(corpus_file, tmp_path):
    ensemble, single = tmp_path / "ensemble", tmp_path / "single"
    assert train(corpus_file, "--out", ensemble, "--max-steps", 2, "--set", "train.members=2", *TINY).exit_code == 0
    assert train(corpus_file, "--out", single, "--max-steps", 2, *TINY).exit_code == 0
    for out, change, said in ((ensemble, "train.members=3", "cannot change when resuming an ensemble"),
                              (ensemble, "model.hidden_size=8", "cannot change when resuming an ensemble"),
                              (ensemble, "train.member_settings=[{model.dropout: 0.5}]",
                               "cannot change when resuming an ensemble"),
                              (single, "train.members=2", "train.members cannot change when resuming")):
        before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        result = train("--out", out, "--resume", "--set", change)
        assert_one_line_failure(result.exit_code, result.stderr, said)
        assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


def test_a_new_ensemble_replaces_a_run_only_with_force_and_leaves_nothing_of_it(corpus_file, tmp_path):
    out = tmp_path / "run"
    assert train(corpus_file, "--out", out, "--max-steps", 2, *TINY).exit_code == 0
    refused = train(corpus_file, "--out", out, "--max-steps", 2, "--set", "train.members=2", *TINY)
    assert_one_line_failure(refused.exit_code, refused.stderr, "already holds a run")
    replaced = train(corpus_file, "--out", out, "--max-steps", 2, "--set", "train.members=2", "--force", *TINY)
    assert replaced.exit_code == 0, replaced.output
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "data", "ensemble.json", "member-1", "member-2",
                                                     "vocab.json"]
    again = train(corpus_file, "--out", out, "--max-steps", 2, *TINY)
    assert_one_line_failure(again.exit_code, again.stderr, "already holds a run")


def test_an_ensemble_refused_before_its_first_member_trains_leaves_nothing_and_loses_nothing(corpus_file, tmp_path,
                                                                                              monkeypatch):
    out, earlier = tmp_path / "ensemble", tmp_path / "earlier"
    assert train(corpus_file, "--out", earlier, "--max-steps", 2, *TINY).exit_code == 0
    before = {p: p.read_bytes() for p in sorted(earlier.rglob("*")) if p.is_file()}
    monkeypatch.setattr("charrnn.compute.memory.available_bytes", lambda: 1000)
    for target, extra in ((out, []), (earlier, ["--force"])):  # a new directory; a run --force would replace
        result = train(corpus_file, "--out", target, "--max-steps", 2, "--set", "train.members=2", *extra, *TINY)
        assert_one_line_failure(result.exit_code, result.stderr, "memory")
    assert not out.exists()
    assert {p: p.read_bytes() for p in sorted(earlier.rglob("*")) if p.is_file()} == before


def test_a_member_whose_own_settings_need_too_much_memory_stops_the_ensemble_before_any_member_trains(
        corpus_file, tmp_path, monkeypatch):
    out = tmp_path / "ensemble"
    monkeypatch.setattr("charrnn.compute.memory.available_bytes", lambda: 50 << 20)  # member 1 needs < 1 MiB
    result = train(corpus_file, "--out", out, "--max-steps", 2, "--set", "train.members=2",
                   "--set", "train.member_settings=[{}, {train.threads: 10000}]", *TINY)  # a gradient per thread
    assert_one_line_failure(result.exit_code, result.stderr, "memory")
    assert not out.exists()


def test_an_ensemble_resumes_with_its_own_data_only(corpus_file, tmp_path):
    out = tmp_path / "ensemble"
    assert train(corpus_file, "--out", out, "--max-steps", 2, "--set", "train.members=2", *TINY).exit_code == 0
    result = train(corpus_file, "--out", out, "--resume")
    assert_one_line_failure(result.exit_code, result.stderr, "leave out SOURCE")
