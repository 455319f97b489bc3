"""Faults that need a real process: permissions, full disks, signals, kill -9, two writers at once,
non-finite and diverging training, and exact resume around early stopping.

Every test here tries to break one promise of the README. `make torture` (CHARRNN_TORTURE=1) runs
the randomised ones for many more iterations.
"""

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.runs import run as runs
from conftest import (
    SHAKESPEARE_LIKE,
    TORTURE,
    assert_one_line_failure,
    charrnn,
    full_disk,
    snapshot,
    without_permission_override,
)

SMALL = ["--hidden-size", "16", "--layers", "1", "--seq-len", "8", "--batch-size", "4", "--quiet",
         "--set", "train.eval_tokens=200"]


def train(*args):
    return CliRunner().invoke(cli, ["train", *map(str, args)])


def wait_for_handlers(process, timeout=20):
    """Wait until charrnn holds or catches stop signals (SIGTERM appears among the blocked or caught
    signals in /proc): before that the interpreter itself is still starting, which no program can
    intercept (`charrnn.launch` says what is left)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            status = open(f"/proc/{process.pid}/status").read()
        except FileNotFoundError:
            return
        masks = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigBlk:", "SigCgt:"))]
        if any(mask & (1 << (signal.SIGTERM - 1)) for mask in masks):
            return
        time.sleep(0.0002)
    raise AssertionError("charrnn never held or caught stop signals")


def leftovers(directory):
    """Temporary files, staging directories and lock files anywhere below `directory`."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob(".*")
                  if p.name.endswith((".tmp", ".lock")) or ".staging-" in p.name or ".old-" in p.name)


@pytest.fixture
def prepared(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SHAKESPEARE_LIKE)
    assert charrnn("prepare", corpus, "--out", tmp_path / "data", "--quiet").returncode == 0
    return tmp_path / "data"


# --- permissions (as root, with the override capabilities dropped) ---

def test_unreadable_files_and_folders_and_unwritable_places_are_one_line(tmp_path, trained_run):
    deny = without_permission_override()
    secret = tmp_path / "secret.txt"
    secret.write_text(SHAKESPEARE_LIKE)
    secret.chmod(0)
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.txt").write_text(SHAKESPEARE_LIKE)
    locked.chmod(0)
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    checkpoint = tmp_path / "private.npz"
    checkpoint.write_bytes((trained_run / "last.npz").read_bytes())
    checkpoint.chmod(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SHAKESPEARE_LIKE)
    before = snapshot(tmp_path)
    cases = [(["prepare", secret, "--out", tmp_path / "d1"], "Permission denied"),
             (["prepare", locked, "--out", tmp_path / "d2"], "Permission denied"),
             (["prepare", corpus, "--out", readonly / "data"], "Permission denied"),
             (["train", corpus, "--out", readonly / "run", *SMALL], "Permission denied"),
             (["sample", checkpoint], "not readable"),
             (["eval", trained_run, corpus, "--html", readonly / "page.html"], "Permission denied"),
             (["plot", trained_run, "-o", readonly / "curve.png"], "Permission denied")]
    try:
        for args, fragment in cases:
            result = charrnn(*args, prefix=deny)
            assert_one_line_failure(result.returncode, result.stderr, fragment)
            assert "truncated" not in result.stderr
    finally:
        for path in (secret, locked, readonly, checkpoint):
            path.chmod(0o755)
    assert snapshot(tmp_path) == before


# --- full disks ---

def test_a_full_disk_during_prepare_leaves_no_partial_preparation(tmp_path):
    corpus = tmp_path / "big.txt"
    corpus.write_text(SHAKESPEARE_LIKE * 40)
    with full_disk(tmp_path / "disk", 64) as (disk, limit):
        result = charrnn("prepare", corpus, "--out", disk / "data", "--quiet", preexec_fn=limit)
        assert_one_line_failure(result.returncode, result.stderr)
        assert any(reason in result.stderr for reason in ("No space left", "too large"))
        assert list(disk.iterdir()) == []


def test_a_full_disk_during_training_keeps_every_checkpoint_loadable(tmp_path, prepared):
    with full_disk(tmp_path / "disk", 160) as (disk, limit):
        result = charrnn("train", prepared, "--out", disk / "run", *SMALL, "--max-steps", "200",
                         "--set", "train.checkpoint_every=1", "--set", "train.eval_every=1", preexec_fn=limit)
        assert_one_line_failure(result.returncode, result.stderr)
        assert any(reason in result.stderr for reason in ("No space left", "too large"))
        run_dir = disk / "run"
        assert leftovers(run_dir) == []
        for path in run_dir.glob("*.npz"):
            runs.read_checkpoint(path)


def test_a_full_disk_writing_a_page_or_a_plot_leaves_no_truncated_file(tmp_path, trained_run):
    pytest.importorskip("matplotlib")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SHAKESPEARE_LIKE)
    with full_disk(tmp_path / "disk", 16) as (disk, limit):
        page = charrnn("eval", trained_run, corpus, "--html", disk / "page.html", preexec_fn=limit)
        curve = charrnn("plot", trained_run, "-o", disk / "curve.png", preexec_fn=limit)
        cells = charrnn("inspect", trained_run, corpus, "--html", disk / "cells.html", "--states", disk / "s.npz",
                        preexec_fn=limit)
        for result in (page, curve, cells):
            assert_one_line_failure(result.returncode, result.stderr)
        assert list(disk.iterdir()) == []


# --- signals ---

@pytest.mark.parametrize("signal_number, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                       (signal.SIGTERM, 143, "terminated")])
def test_a_stop_signal_at_any_early_moment_ends_cleanly(tmp_path, signal_number, code, word):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SHAKESPEARE_LIKE)
    rng = random.Random(20261206 + signal_number)  # and seeded random moments: a stop once went missing at ~200 ms
    delays = [0, 0.0005, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.8] * (4 if TORTURE else 1) + \
        [rng.uniform(0.1, 0.4) for _ in range(40 if TORTURE else 4)]
    for index, delay in enumerate(delays):
        out = tmp_path / f"run{index}"
        process = subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(out),
                                    *SMALL, "--max-steps", "1000000"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        wait_for_handlers(process)
        time.sleep(delay)
        process.send_signal(signal_number)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == code, (delay, stderr)
        assert "Traceback" not in stderr and "Aborted" not in stderr and "did not finish" not in stderr, stderr
        assert word in stderr or "resume with" in stderr, (delay, stderr)
        if out.exists():  # training had begun: the run is resumable, nothing half-written
            runs.read_checkpoint(out / "last.npz")
            assert leftovers(out) == []
        assert leftovers(tmp_path) == []


@pytest.mark.parametrize("wrapped", [False, True], ids=["as raised", "wrapped by Python"])
@pytest.mark.parametrize("signal_number, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_while_click_parses_the_command_line_ends_in_one_line(monkeypatch, capsys, signal_number, code,
                                                                            wrapped):
    import click

    from charrnn import launch, signals
    from charrnn.errors import Stopped

    def stopped_while_parsing(*args, **kwargs):
        stop = Stopped(signal_number)  # as the handler raises it, less its safety net (which would end pytest)
        if wrapped:  # as Python 3.11 passes on a signal that lands in a class's `__set_name__`
            raise RuntimeError("Error calling __set_name__") from stop
        raise stop

    monkeypatch.setattr(sys, "argv", ["charrnn", "train", "--help"])
    monkeypatch.setattr(click.Group, "make_context", stopped_while_parsing)
    previous = {signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS}
    try:
        with pytest.raises(SystemExit) as exit_:
            launch.main()
    finally:  # the entry point leaves stop signals ignored: give pytest its own handlers back
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert exit_.value.code == code
    assert capsys.readouterr().err == f"Error: {'interrupted' if code == 130 else 'terminated'}\n"


def test_a_stop_signal_after_the_run_started_but_before_its_first_save_leaves_nothing(tmp_path, monkeypatch):
    from charrnn.cli import console, ranks
    from charrnn.errors import Stopped

    def stopped(*args, **kwargs):
        raise Stopped(signal.SIGINT)  # as the handler raises it, less its safety net (which would end pytest)

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SHAKESPEARE_LIKE)
    before = snapshot(tmp_path)
    for moment in (console, "start_line"), (ranks, "own_streams"):  # writing the run's start line; just after
        with monkeypatch.context() as patch:
            patch.setattr(*moment, stopped)
            result = CliRunner().invoke(cli, ["train", str(corpus), "--out", str(tmp_path / "run"), *SMALL,
                                              "--max-steps", "5"])
        assert_one_line_failure(result.exit_code, result.stderr, "interrupted")
        assert result.exit_code == 130 and snapshot(tmp_path) == before, moment[1]


def test_a_second_ctrl_c_stops_at_once_and_keeps_last_consistent(tmp_path, prepared):
    for attempt in range(8 if TORTURE else 3):
        out = tmp_path / f"run{attempt}"
        process = subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(prepared), "--out", str(out),
                                    *SMALL, "--max-steps", "1000000", "--set", "train.checkpoint_every=1"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        while not (out / "last.npz").exists() and time.time() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        time.sleep(0.001 * attempt)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 130 and "Traceback" not in stderr, stderr
        assert "resume with" in stderr or "second signal" in stderr, stderr
        runs.read_checkpoint(out / "last.npz")
        assert leftovers(out) == []


@pytest.mark.parametrize("command", ["prepare", "sample", "eval", "eval --ngram", "inspect"])
def test_sigterm_during_prepare_sample_eval_or_inspect_says_so_and_leaves_nothing(tmp_path, trained_run, command):
    big = tmp_path / "big.txt"
    big.write_text(SHAKESPEARE_LIKE * (10000 if command != "eval --ngram" else 900))  # 44 MB: prepare reads it
    # twice; 4 MB for --ngram, which scores at most 4,194,304 tokens
    scratch = tmp_path / "scratch"  # the temporary folder, where inspect keeps --states as it reads
    scratch.mkdir()
    args = {"prepare": ["prepare", big, "--out", tmp_path / "data", "--quiet"],
            "sample": ["sample", trained_run, "--length", "100000000", "--seed", "1", "--no-stream"],
            "eval": ["eval", trained_run, big, "--quiet"],
            "eval --ngram": ["eval", trained_run, big, "--quiet", "--ngram", "6", "--html", tmp_path / "page.html"],
            "inspect": ["inspect", trained_run, big, "--max-chars", "5000000", "--html", tmp_path / "cells.html",
                        "--states", tmp_path / "states.npz", "--quiet"]}[command]
    before = snapshot(tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "charrnn", *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(scratch)})
    wait_for_handlers(process)
    if command == "prepare":  # signal while the splits are being written, the phase that must clean up
        deadline = time.time() + 20
        while not list(tmp_path.glob(".data.staging-*")) and time.time() < deadline:
            time.sleep(0.0005)
        assert list(tmp_path.glob(".data.staging-*")), "prepare never started writing"
    else:
        time.sleep(0.6)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert_one_line_failure(process.returncode, stderr, "terminated", code=143)
    assert snapshot(tmp_path) == before


# --- kill -9 ---

def test_kill_9_at_random_moments_never_loses_the_run_and_resume_is_exact(tmp_path, prepared):
    rng = random.Random(20261125)
    settings = [*SMALL, "--set", "train.checkpoint_every=1", "--set", "train.eval_every=5",
                "--set", "train.log_every=1", "--set", "model.dropout=0.0", "--max-steps", "60"]
    whole = tmp_path / "whole"
    assert train(prepared, "--out", whole, *settings).exit_code == 0
    out = tmp_path / "killed"
    for kill in range(40 if TORTURE else 6):
        resume = ["--resume"] if (out / "last.npz").exists() else []
        process = subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(prepared), "--out", str(out),
                                    *settings, *resume], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.2))
        process.kill()
        process.wait()
        if (out / "last.npz").exists():
            runs.read_checkpoint(out / "last.npz")
    resume = ["--resume"] if (out / "last.npz").exists() else []
    final = train(prepared, "--out", out, *settings, *resume)
    assert final.exit_code == 0, final.output
    assert leftovers(out) == [] and leftovers(tmp_path) == []
    a, b = runs.read_checkpoint(whole / "last.npz"), runs.read_checkpoint(out / "last.npz")
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["kind"], r["step"]) for r in records]
    assert len(keys) == len(set(keys)), "metrics repeat steps replayed after a resume"


# --- two writers ---

def test_a_second_writer_of_a_run_directory_is_refused_naming_the_holder(tmp_path, prepared):
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(prepared), "--out", str(out),
                                *SMALL, "--max-steps", "1000000"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while not (out / "last.npz").exists() and time.time() < deadline:
            time.sleep(0.05)
        metrics = (out / "metrics.jsonl").read_bytes()
        for extra in ([], ["--force"], ["--resume"]):
            result = charrnn("train", prepared, "--out", out, *SMALL, "--max-steps", "5", *extra)
            assert_one_line_failure(result.returncode, result.stderr, f"PID {process.pid}")
        assert (out / "last.npz").exists() and (out / "metrics.jsonl").read_bytes().startswith(metrics)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 130


def test_two_prepares_into_one_directory_never_both_succeed(tmp_path):
    texts = []
    for name, text in (("a", SHAKESPEARE_LIKE), ("b", SHAKESPEARE_LIKE.upper())):
        (tmp_path / f"{name}.txt").write_text(text * 600)
        texts.append(tmp_path / f"{name}.txt")
    for attempt in range(10 if TORTURE else 3):
        out = tmp_path / f"data{attempt}"
        processes = [subprocess.Popen([sys.executable, "-m", "charrnn", "prepare", str(text), "--out", str(out),
                                       "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for text in texts]
        results = [(p.wait(timeout=60), p.stderr.read()) for p in processes]
        winners = [i for i, (code, _) in enumerate(results) if code == 0]
        assert len(winners) == 1, results
        loser = results[1 - winners[0]]
        assert_one_line_failure(loser[0], loser[1])
        assert "in use by another" in loser[1] or "different preparation" in loser[1]
        meta = json.loads((out / "meta.json").read_text())
        assert meta["sources"][0]["path"] == str(texts[winners[0]])
    assert leftovers(tmp_path) == []


# --- non-finite and diverging training ---

def test_non_finite_training_never_writes_a_non_finite_checkpoint_and_says_which_step_is_kept(tmp_path, prepared):
    out = tmp_path / "run"
    assert train(prepared, "--out", out, *SMALL, "--max-steps", 20).exit_code == 0
    best = (out / "best.npz").read_bytes()
    result = train(prepared, "--out", out, *SMALL, "--max-steps", 60, "--resume", "--set", "train.optimizer=sgd",
                   "--set", "train.clip_norm=0", "--lr", "1e38", "--set", "train.checkpoint_every=1",
                   "--set", "train.diverge_ratio=null")
    assert_one_line_failure(result.exit_code, result.stderr, "non-finite")
    kept = int(re.search(r"nothing was saved after step ([\d,]+)", result.stderr)[1].replace(",", ""))
    failed = int(re.search(r"non-finite at step ([\d,]+)", result.stderr)[1].replace(",", ""))
    assert kept < failed
    assert runs.read_checkpoint(out / "last.npz").meta["progress"]["step"] == kept
    assert (out / "best.npz").read_bytes() == best


def test_a_diverging_run_is_stopped_with_the_rule_named(tmp_path, prepared):
    out = tmp_path / "run"
    assert train(prepared, "--out", out, *SMALL, "--max-steps", 10).exit_code == 0
    good = (out / "last.npz").read_bytes()
    result = train(prepared, "--out", out, *SMALL, "--max-steps", 200, "--resume", "--lr", "1e6",
                   "--set", "train.clip_norm=0", "--set", "train.checkpoint_every=1", "--set", "train.eval_every=1")
    assert_one_line_failure(result.exit_code, result.stderr, "diverged")
    assert "diverge_ratio" in result.stderr
    assert (out / "last.npz").read_bytes() == good
    fresh = train(prepared, "--out", tmp_path / "fresh", *SMALL, "--max-steps", 200, "--lr", "1e6",
                  "--set", "train.clip_norm=0", "--set", "train.checkpoint_every=1")
    assert_one_line_failure(fresh.exit_code, fresh.stderr, "diverged")
    assert not (tmp_path / "fresh").exists()


def test_a_nan_validation_loss_is_never_best(monkeypatch):
    from charrnn.config import Config
    from charrnn.nn.model import RNNLM
    from charrnn.nn.scoring import Score
    from charrnn.training import loop as training
    from charrnn.training.parallel import ShardedModel

    config = Config()
    config.model.hidden_size, config.model.num_layers = 8, 1
    config.train.batch_size, config.train.seq_len, config.train.eval_every, config.train.max_steps = 2, 4, 1, 5
    monkeypatch.setattr(ShardedModel, "score", lambda *args, **kwargs: Score(float("nan"), 10))
    saved = []
    trainer = training.Trainer(config, RNNLM(config.model, 4), np.arange(200) % 4, np.arange(50) % 4,
                               lambda kind, record: None, lambda state, names: saved.append(names))
    state = trainer.initial_state()
    assert trainer.run(state) == "non_finite"
    assert saved == [] and state.progress.best_val is None


# --- exact resume ---

@pytest.fixture
def overfitting_data(tmp_path):
    """Train on a repeated text, validate on random letters: the val loss rises, so patience fires."""
    rng = random.Random(3)
    noise = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(1500))
    corpus = tmp_path / "overfit.txt"
    corpus.write_text(SHAKESPEARE_LIKE * 3 + noise)
    assert charrnn("prepare", corpus, "--out", tmp_path / "data", "--val-frac", "0.1", "--test-frac", "0",
                   "--quiet").returncode == 0
    return tmp_path / "data"


def test_early_stopping_stops_at_the_same_step_whatever_the_interruptions(tmp_path, overfitting_data):
    settings = [*SMALL, "--lr", "0.02", "--set", "train.patience=2", "--set", "train.eval_every=4",
                "--set", "train.checkpoint_every=1000", "--max-steps", "400"]
    whole = tmp_path / "whole"
    assert train(overfitting_data, "--out", whole, *settings).exit_code == 0
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["reason"] == "early_stop"
    stop = summary["steps"]
    rng = random.Random(7)
    points = range(1, stop) if TORTURE else sorted(rng.sample(range(1, stop), min(6, stop - 1)))
    for point in points:
        out = tmp_path / f"split{point}"
        first = train(overfitting_data, "--out", out, *settings, "--max-steps", point)
        assert first.exit_code == 0, first.output
        resumed = train(overfitting_data, "--out", out, *settings, "--resume")
        assert resumed.exit_code == 0, resumed.output
        assert json.loads((out / "summary.json").read_text())["steps"] == stop, point
        a, b = runs.read_checkpoint(whole / "last.npz"), runs.read_checkpoint(out / "last.npz")
        assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params), point


def test_resuming_with_a_new_horizon_warns_that_the_schedule_bends(tmp_path, prepared):
    out = tmp_path / "run"
    assert train(prepared, "--out", out, *SMALL, "--max-steps", 6, "--set", "train.lr_schedule=cosine").exit_code == 0
    result = train("--out", out, "--resume", "--max-steps", 12, "--quiet")
    assert result.exit_code == 0, result.output
    assert "train.max_steps: 6 -> 12" in result.stderr and "horizon" in result.stderr


def test_a_run_can_be_bounded_by_epochs_alone(tmp_path, prepared):
    out = tmp_path / "run"
    result = train(prepared, "--out", out, *SMALL, "--set", "train.max_steps=null", "--set", "train.max_epochs=1")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["reason"] == "max_epochs"
    assert "steps of 4 x 8 tokens per epoch" in result.stderr and "parameters" in result.stderr


@pytest.mark.parametrize("signal_number, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                       (signal.SIGTERM, 143, "terminated")])
def test_a_stop_signal_while_an_ensembles_members_adapt_side_by_side_ends_at_once(tmp_path, trained_ensemble,
                                                                                  signal_number, code, word):
    text, scratch = tmp_path / "long.txt", tmp_path / "tmp"
    text.write_text(SHAKESPEARE_LIKE * 500)  # 2 million characters: minutes of adapting for each member
    scratch.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "charrnn", "eval", str(trained_ensemble), str(text), "--dynamic"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(scratch)})
    wait_for_handlers(process)
    time.sleep(4)  # the text read and the members calibrated: they are adapting now
    assert process.poll() is None
    process.send_signal(signal_number)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code and time.monotonic() - sent < 8, stderr  # within a block, not the safety net
    assert word in stderr and "Traceback" not in stderr and "did not finish" not in stderr, stderr
    assert list(scratch.iterdir()) == []  # its scratch files (the text's ids, each member's NLL) are gone


@pytest.mark.parametrize("shown", [False, True], ids=["quiet", "CHARRNN_TRACEBACK=1"])
def test_an_object_that_a_signal_left_half_built_reports_nothing_as_the_process_exits(tmp_path, shown):
    """A second Ctrl-C that lands inside `ZipFile.__init__` (a checkpoint being saved) leaves an
    object whose `__del__` raises AttributeError when the interpreter frees it, after the command's
    one line: Python would print that with a traceback (seen once, in the second-Ctrl-C test of a full suite run)."""
    script = tmp_path / "debris.py"
    script.write_text("import sys\nfrom charrnn import launch\n\n\nclass HalfBuilt:\n    def __del__(self):\n"
                      "        raise AttributeError(\"'ZipFile' object has no attribute '_writing'\")\n\n\n"
                      "left = HalfBuilt()\nsys.argv = ['charrnn', '--version']\nlaunch.main()\n")
    env = {**os.environ, "CHARRNN_TRACEBACK": "1"} if shown else {k: v for k, v in os.environ.items()
                                                                   if k != "CHARRNN_TRACEBACK"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0 and "version" in result.stdout
    reported = "Traceback" in result.stderr and "_writing" in result.stderr
    assert reported if shown else result.stderr == "", result.stderr


def test_a_clean_up_that_deadlocks_after_a_signal_still_exits(tmp_path):
    """The safety net: a signal that lands inside library code holding a lock can leave the clean-up
    waiting on that lock; the process must still end, with its exit code and a line saying why."""
    script = ("import threading, time\nfrom charrnn import signals\nsignals.GRACE_SECONDS = 1\nsignals.install()\n"
              "lock = threading.Lock()\nlock.acquire()\ntry:\n    print('ready', flush=True)\n    time.sleep(30)\n"
              "finally:\n    lock.acquire()\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130 and "clean-up did not finish within 1 s" in stderr


@contextlib.contextmanager
def signals_raised():
    """SIGTERM raises Stopped, as under `charrnn.signals.raised` less its safety net (which would end pytest)."""
    from charrnn.errors import Stopped

    def handler(signum, frame):
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_stop_signal_while_a_run_directory_is_locked_or_unlocked_leaves_no_lock_file(tmp_path, monkeypatch):
    from charrnn.errors import Stopped
    from charrnn.files import lock

    def signalled_then(step):
        def run(*args, **kwargs):
            signal.raise_signal(signal.SIGTERM)  # lands inside the step, where it must wait for the lock to be noted
            return step(*args, **kwargs)
        return run

    for name in ("flock", "close"):
        target = lock.fcntl if name == "flock" else lock.os
        with monkeypatch.context() as patch, signals_raised():
            patch.setattr(target, name, signalled_then(getattr(target, name)))
            with pytest.raises(Stopped):
                with lock.DirectoryLock(tmp_path / "run"):
                    pass
        assert leftovers(tmp_path) == [], name


def test_a_stop_signal_that_lands_in_a_callback_python_only_reports_is_delivered_again():
    import types

    from charrnn import signals
    from charrnn.errors import Stopped

    reported = []
    hook = signals.redelivering(reported.append)
    other = types.SimpleNamespace(exc_value=ValueError("a callback's own error"))
    hook(other)
    assert reported == [other]
    with signals_raised(), pytest.raises(Stopped) as stopped:
        hook(types.SimpleNamespace(exc_value=Stopped(signal.SIGTERM)))  # swallowed where it landed
        time.sleep(5)  # it arrives again within a moment
    assert stopped.value.signum == signal.SIGTERM and reported == [other]


def test_a_stop_signal_python_wrapped_in_another_error_still_ends_in_its_one_line():
    from charrnn.cli.group import as_failure
    from charrnn.errors import Stopped

    try:
        try:
            raise Stopped(signal.SIGTERM)
        except Stopped as stop:
            raise RuntimeError("Error calling __set_name__ on 'Field' instance") from stop
    except RuntimeError as error:
        failure = as_failure(error)
    assert failure.exit_code == 143 and failure.format_message() == "terminated"


def test_an_error_raised_while_a_stop_signal_was_on_its_way_out_ends_as_the_stop():
    """A SIGTERM inside importlib's module lock made its `finally` raise a KeyError, which carried the
    Stopped only as its context: the command ended with a traceback and exit 1 (the early-moment
    test under `make torture`, once). The prompt's Ctrl-C, consumed on purpose, is no stop."""
    from charrnn.cli.group import as_failure
    from charrnn.errors import Stopped

    def error_after(stop):
        try:
            try:
                raise stop
            finally:
                {}[139791673490304]  # as `del _blocking_on[tid]` did
        except KeyError as error:
            return error

    failure = as_failure(error_after(Stopped(signal.SIGTERM)))
    assert failure.exit_code == 143 and failure.format_message() == "terminated"
    assert "internal error (KeyError" in as_failure(error_after(Stopped(signal.SIGINT).consume())).format_message()


SWALLOWED = """
import signal, sys, time
from charrnn import signals
from charrnn.errors import Stopped
signals.install()
try:
    signal.raise_signal(signal.SIGTERM)  # raised here, inside code that catches it
    time.sleep(1)
except Stopped as stop:
    {catch}
print("went on", flush=True)
try:
    time.sleep(5)
    print("never stopped", flush=True)
except Stopped as again:
    print("stopped again", flush=True)
"""


@pytest.mark.parametrize("settled", [False, True], ids=["swallowed", "consumed on purpose"])
def test_a_stop_signal_swallowed_by_library_code_is_sent_again(settled):
    """A `Stopped` freed before anything settled it was swallowed (numpy's lazy import of
    numpy.random did this, and the run trained on as if no Ctrl-C had come): it is sent again.
    One consumed on purpose (`settle()`, as the prompt does for Ctrl-C) is not."""
    script = SWALLOWED.format(catch="stop.settle()" if settled else "pass")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.stdout.splitlines() == ["went on", "never stopped" if settled else "stopped again"], result
