"""Training on several processes under MPI: `mpiexec -n 2 charrnn train` is the same training as
one process with two threads, resumes on any layout, writes and speaks only from rank 0, and
never leaves a rank waiting when another fails."""

import json
import os
import signal
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from charrnn.extras import install_command
from charrnn.runs.run import read_checkpoint
from charrnn.training.distributed import Solo, launched_rank, launched_size, split_rows
from conftest import SHAKESPEARE_LIKE, assert_one_line_failure, charrnn

MPIEXEC = Path(sys.executable).parent / "mpiexec"
needs_mpi = pytest.mark.skipif(not MPIEXEC.exists() or find_spec("mpi4py") is None,
                               reason="the [mpi] extra is not installed: pip install -e '.[mpi]'")
MODEL = ["--cell", "gru", "--hidden-size", "32", "--layers", "2", "--seq-len", "16", "--batch-size", "8",
         "--set", "model.dropout=0.2", "--set", "train.eval_every=10", "--set", "train.log_every=5", "--quiet"]
FAULT_ON_RANK_1 = """
import sys
from charrnn.training import loop as train
original = train.Trainer.judge
def judge(self, loss, step):
    if step == 4:
        raise RuntimeError("injected fault")
    return original(self, loss, step)
train.Trainer.judge = judge
sys.argv[0] = "charrnn"
from charrnn.launch import main
main()
"""


def mpiexec(n, *args, timeout=120, **kwargs):
    command = [str(MPIEXEC), "-n", str(n), sys.executable, "-m", "charrnn", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture
def data(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SHAKESPEARE_LIKE * 3)
    assert charrnn("prepare", corpus, "--out", tmp_path / "data", "--quiet").returncode == 0
    return tmp_path / "data"


def params(run: Path, name="last.npz") -> dict:
    with np.load(run / name) as saved:
        return {k: saved[k] for k in saved.files if k.startswith("param/")}


def largest_relative_difference(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k])) / (np.max(np.abs(b[k])) + 1e-30)) for k in a)


# --- without MPI ---

def test_the_launcher_is_read_from_its_environment():
    assert launched_size({}) == 1 and launched_rank({}) == 0
    assert launched_size({"PMI_SIZE": "4", "PMI_RANK": "3"}) == 4 and launched_rank({"PMI_RANK": "3"}) == 3
    assert launched_size({"OMPI_COMM_WORLD_SIZE": "2"}) == 2
    assert launched_size({"SLURM_STEP_NUM_TASKS": "16", "SLURM_PROCID": "5"}) == 16


@pytest.mark.parametrize("batch,parts", [(8, 2), (7, 3), (64, 5), (3, 3)])
def test_the_batch_is_split_into_contiguous_blocks(batch, parts):
    blocks = split_rows(batch, parts)
    assert len(blocks) == parts and blocks[0].start == 0 and blocks[-1].stop == batch
    assert all(a.stop == b.start for a, b in zip(blocks, blocks[1:]))
    assert max(b.stop - b.start for b in blocks) - min(b.stop - b.start for b in blocks) <= 1


def test_one_process_owns_every_stream_and_combines_nothing():
    solo = Solo()
    buffer = np.arange(4.0)
    assert solo.rows(8) == slice(0, 8) and solo.sum(buffer) is buffer and solo.writes


@pytest.mark.parametrize("rank,says", [("0", True), ("1", False)])
def test_a_launcher_without_the_extra_says_how_to_install_it_once(tmp_path, corpus_file, rank, says):
    hide = "import sys; sys.modules['mpi4py'] = None; sys.argv[0] = 'charrnn'; from charrnn.launch import main; main()"
    env = {**os.environ, "PMI_SIZE": "2", "PMI_RANK": rank}
    result = subprocess.run([sys.executable, "-c", hide, "train", str(corpus_file), "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, env=env, timeout=60)
    if says:
        assert_one_line_failure(result.returncode, result.stderr, install_command("mpi"))
    else:
        assert result.returncode == 1 and result.stderr == ""
    assert not (tmp_path / "run").exists()


# --- under mpiexec ---

@needs_mpi
def test_two_ranks_train_as_two_threads_do(tmp_path, data):
    ranks = mpiexec(2, "train", data, "--out", tmp_path / "ranks", "--max-steps", 50, "--set", "train.threads=1", *MODEL)
    assert ranks.returncode == 0, ranks.stderr
    threads = charrnn("train", data, "--out", tmp_path / "threads", "--max-steps", 50, "--set", "train.threads=2",
                      *MODEL)
    assert threads.returncode == 0, threads.stderr
    assert largest_relative_difference(params(tmp_path / "ranks"), params(tmp_path / "threads")) < 1e-5
    curves = [[r["train_loss"] for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
               if r["kind"] == "log"] for run in ("ranks", "threads")]
    assert len(curves[0]) == 10 and np.allclose(*curves, rtol=1e-5)
    summary = json.loads((tmp_path / "ranks" / "summary.json").read_text())
    assert summary["layout"] == "2 ranks x 1 worker x 1 BLAS thread" and summary["tokens"] == 50 * 8 * 16


@needs_mpi
def test_the_same_layout_is_bit_identical_and_resumes_exactly_or_on_another_layout(tmp_path, data):
    def train(out, n, steps, *extra):
        result = mpiexec(n, "train", data, "--out", tmp_path / out, "--max-steps", steps, "--set", "train.threads=1",
                         *MODEL, *extra)
        assert result.returncode == 0, result.stderr

    train("whole", 2, 30)
    train("again", 2, 30)
    assert all(np.array_equal(a, b) for a, b in zip(params(tmp_path / "whole").values(),
                                                    params(tmp_path / "again").values()))
    for out, n in (("same", 2), ("fewer", 1)):
        train(out, 2, 15)
        train(out, n, 30, "--resume")
    assert all(np.array_equal(a, b) for a, b in zip(params(tmp_path / "whole").values(),
                                                    params(tmp_path / "same").values()))
    assert largest_relative_difference(params(tmp_path / "fewer"), params(tmp_path / "whole")) < 1e-4


@needs_mpi
def test_only_rank_0_writes_and_speaks(tmp_path, corpus_file):
    result = mpiexec(2, "train", corpus_file, "--out", tmp_path / "run", "--max-steps", 20, *MODEL)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "best.npz", "config.yaml", "data", "last.npz", "metrics.jsonl", "summary.json", "vocab.json"]
    records = [(r["kind"], r["step"]) for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())]
    assert records and len(records) == len(set(records))  # each record once, not once per rank
    assert result.stdout.count("stopped (max steps)") == 1
    assert [line for line in result.stderr.splitlines() if "ranks x" in line][0].endswith("2 ranks x 1 worker x 1 BLAS thread")


@needs_mpi
def test_a_mistake_found_by_rank_0_ends_every_rank_with_its_one_line(tmp_path, data):
    result = mpiexec(2, "train", data, "--out", tmp_path / "run", "--set", "train.lerning_rate=1", timeout=60)
    assert_one_line_failure(result.returncode, result.stderr, "train.lr")
    too_few = mpiexec(2, "train", data, "--out", tmp_path / "run", "--batch-size", 1, timeout=60)
    assert_one_line_failure(too_few.returncode, too_few.stderr, "at least one stream")
    ensemble = mpiexec(2, "train", data, "--out", tmp_path / "run", "--set", "train.members=2", timeout=60)
    assert_one_line_failure(ensemble.returncode, ensemble.stderr, "train each network as a run of its own")
    assert not (tmp_path / "run").exists()


@needs_mpi
def test_a_crash_on_one_rank_ends_every_rank(tmp_path, data):
    args = ["train", str(data), "--out", str(tmp_path / "run"), "--max-steps", "1000", "--set", "train.threads=1",
            "--set", "train.checkpoint_every=2", *MODEL]
    command = [str(MPIEXEC), "-n", "1", sys.executable, "-m", "charrnn", *args,
               ":", "-n", "1", sys.executable, "-c", FAULT_ON_RANK_1, *args]
    begin = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and time.monotonic() - begin < 60
    assert "Traceback" not in result.stderr
    assert "Error: rank 1 of 2: internal error (RuntimeError: injected fault)" in result.stderr
    assert read_checkpoint(tmp_path / "run" / "last.npz").meta["progress"]["step"] == 2  # intact


@needs_mpi
def test_ctrl_c_stops_every_rank_at_the_same_step_and_saves(tmp_path, data):
    command = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "charrnn", "train", str(data), "--out",
               str(tmp_path / "run"), "--max-steps", "100000", "--set", "train.threads=1", *MODEL]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while not (metrics.exists() and metrics.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "stopped (interrupted)" in stdout and "--resume" in stderr
    resumed = mpiexec(2, "train", "--out", tmp_path / "run", "--resume", "--max-steps", 1, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
