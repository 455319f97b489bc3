"""Shared fixtures: small corpora written to temporary directories, a trained run, a browser."""

import shutil

import pytest

SHAKESPEARE_LIKE = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n\n"
    "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n\n"
) * 40


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(SHAKESPEARE_LIKE, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """Every test has a cache directory of its own (layout choices are remembered there), never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


def train_tiny(root, *extra):
    """A tiny model (or ensemble) trained for a few steps on the small corpus, in root/run."""
    from click.testing import CliRunner

    from charrnn.cli import cli

    corpus = root / "corpus.txt"
    corpus.write_text(SHAKESPEARE_LIKE, encoding="utf-8")
    result = CliRunner().invoke(cli, ["train", str(corpus), "--out", str(root / "run"), "--hidden-size", "24",
                                      "--seq-len", "16", "--batch-size", "4", "--max-steps", "30", "--quiet",
                                      "--set", "train.eval_every=15", "--set", "train.lr=0.01", *extra])
    assert result.exit_code == 0, result.output
    return root / "run"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny model trained for a few steps on the small corpus (shared by the sample/eval tests)."""
    return train_tiny(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def trained_ensemble(tmp_path_factory):
    """An ensemble of two tiny networks (`train.members`), trained like `trained_run`; the second
    with output dropout of its own (`train.member_settings`)."""
    return train_tiny(tmp_path_factory.mktemp("ensemble"), "--set", "train.members=2",
                      "--set", "train.member_settings=[{}, {model.output_dropout: 0.1}]")


# --- helpers for the fault suite: subprocess runs, one-line failures, snapshots, real faults ---

import contextlib  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

TORTURE = bool(os.environ.get("CHARRNN_TORTURE"))  # `make torture`: many more iterations


def charrnn(*args, cwd=None, prefix=(), preexec_fn=None, timeout=120, input=None, **kwargs):
    """Run `python -m charrnn ARGS` in a subprocess -> CompletedProcess (text)."""
    command = [*prefix, sys.executable, "-m", "charrnn", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec_fn, input=input, **kwargs)


@pytest.fixture
def checkpoint_without_its_data(tmp_path, trained_run):
    """The trained run's best checkpoint, saved alone, naming a prepared corpus that is gone."""
    from charrnn.runs import checkpoint
    from charrnn.runs.run import read_checkpoint

    saved = read_checkpoint(trained_run / "best.npz")
    saved.meta["data"] = str(tmp_path / "gone")
    checkpoint.save(tmp_path / "lonely.npz", saved)
    return tmp_path / "lonely.npz"


def assert_one_line_failure(returncode, stderr, fragment="", code=None):
    """The promise: a non-zero exit, exactly one line on stderr (after progress output), no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returncode != 0, stderr
    assert code is None or returncode == code, (returncode, stderr)
    assert "Traceback" not in stderr, stderr
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], stderr
    assert fragment.lower() in errors[0].lower(), (fragment, errors[0])


def snapshot(root) -> dict:
    """Every path below `root` (hidden ones too) with its size, to check that nothing was left behind."""
    root = Path(root)
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1)
            for p in root.rglob("*") if not p.is_symlink() and not p.is_fifo()}


def without_permission_override():
    """A command prefix under which file permissions apply even to root (CI runs as root)."""
    if os.geteuid() != 0:
        return []
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed to test permission errors as root"
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


@contextlib.contextmanager
def full_disk(directory: Path, size_kb: int):
    """A directory on a tiny tmpfs (a real ENOSPC) where mounting is allowed, else a preexec_fn that
    caps file size with RLIMIT_FSIZE (EFBIG, the same failure path). Yields (directory, preexec_fn)."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(directory)],
                             capture_output=True).returncode == 0 if os.geteuid() == 0 else False
    try:
        if mounted:
            yield directory, None
        else:
            limit = size_kb * 1024
            yield directory, lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(directory)], check=False)


class Served:
    """`charrnn serve RUN --port 0 FLAGS` in a process of its own; `url` once it listens, `stop` to end it."""

    def __init__(self, run: Path, *flags, env=None):
        import re

        self.process = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", str(run), "--port", "0", *flags],
                                        stderr=subprocess.PIPE, text=True, env=env)
        line = self.process.stderr.readline()
        while line.startswith("warning:"):
            self.warning = line
            line = self.process.stderr.readline()
        match = re.search(r"at (http://[^ ]+/) ", line)
        assert match, line + self.process.stderr.read()
        self.url = match[1].rstrip("/")

    def stop(self, signum=None):
        import signal

        self.process.send_signal(signum or signal.SIGTERM)
        rest = self.process.stderr.read()
        self.process.wait(timeout=30)
        return self.process.returncode, rest


CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_browser = pytest.mark.skipif(CHROMEDRIVER is None or CHROMIUM is None,
                                   reason="no Chromium and chromedriver on this machine (.ci/run installs them)")


@pytest.fixture
def browser():
    """Headless Chromium driven by selenium, 1100 x 1100 (a test may resize it)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1100,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()
