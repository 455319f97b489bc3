"""The Makefile keeps up with the CLI: a run stopped with Ctrl-C is said to be unfinished (not
"made with other settings") and continues with RESUME=1; `make shakespeare` honours RUN=.

Each test runs make in a folder of its own, with the checkout's Makefile, package and configs,
and a stand-in for the virtual environment that runs this interpreter."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SHAKESPEARE_LIKE

CHECKOUT = Path(__file__).parents[2]
FLAGS = 'TRAIN_FLAGS=--hidden-size 8 --seq-len 8 --batch-size 4 --quiet --set train.checkpoint_every=1'


@pytest.fixture
def workspace(tmp_path):
    if not (CHECKOUT / "Makefile").exists():
        pytest.skip("needs the checkout's Makefile")
    for name in ("Makefile", "charrnn", "pyproject.toml"):
        (tmp_path / name).symlink_to(CHECKOUT / name)
    bin_ = tmp_path / "venv" / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "python").symlink_to(sys.executable)
    (bin_ / "charrnn").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m charrnn "$@"\n')
    (bin_ / "charrnn").chmod(0o755)
    for marker in (".installed-demo", ".installed-test", ".installed-plot"):
        (tmp_path / "venv" / marker).touch()
    (tmp_path / "corpus.txt").write_text(SHAKESPEARE_LIKE)
    return tmp_path


def make(workspace, *args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    return subprocess.run(["make", "--no-print-directory", "VENV=venv", *args], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=120, **kwargs)


def test_a_run_stopped_with_ctrl_c_is_said_to_be_unfinished_and_resumes(workspace):
    args = ["train", "CORPUS=corpus.txt", "CONFIG=tiny", FLAGS + " --max-steps 1000000"]
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    process = subprocess.Popen(["make", "--no-print-directory", "VENV=venv", *args], cwd=workspace, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 60
    while not (workspace / "runs" / "corpus" / "last.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C reaches make and charrnn alike
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "resume with" in stderr, stderr
    again = make(workspace, *args)
    assert again.returncode != 0
    assert "holds an unfinished run with these settings" in again.stderr and "RESUME=1" in again.stderr
    assert "other settings" not in again.stderr
    resumed = make(workspace, "train", "CORPUS=corpus.txt", "CONFIG=tiny", "RESUME=1", FLAGS + " --max-steps 3")
    assert resumed.returncode == 0, resumed.stderr
    assert "--resume" in resumed.stdout and "resuming at step" in resumed.stderr


def test_other_settings_are_said_to_be_other(workspace):
    first = make(workspace, "train", "CORPUS=corpus.txt", "CONFIG=tiny", FLAGS + " --max-steps 2")
    assert first.returncode == 0, first.stderr
    other = make(workspace, "train", "CORPUS=corpus.txt", "CONFIG=tiny", FLAGS + " --max-steps 3")
    assert other.returncode != 0 and "made with other settings" in other.stderr
    both = make(workspace, "train", "CORPUS=corpus.txt", "CONFIG=tiny", "RESUME=1", "FORCE=1", FLAGS)
    assert both.returncode != 0 and "give one of them" in both.stderr


def test_make_shakespeare_writes_the_run_that_run_names(workspace):
    dry = make(workspace, "-n", "shakespeare", "CORPUS=corpus.txt", "RUN=runs/mine")
    assert dry.returncode == 0, dry.stderr
    assert "--out runs/mine" in dry.stdout and "plot runs/mine -o runs/mine/curve.png" in dry.stdout
    assert "eval runs/mine --split val --dynamic --ngram 8 --json > runs/mine/eval-adaptive.json" in dry.stdout
    assert "runs/shakespeare" not in dry.stdout


def test_make_shakespeare_2h_trains_its_own_config_into_its_own_run(workspace):
    dry = make(workspace, "-n", "shakespeare-2h", "CORPUS=corpus.txt")
    assert dry.returncode == 0, dry.stderr
    assert "CONFIG=shakespeare-2h" in dry.stdout and "RUN=runs/shakespeare-2h" in dry.stdout
