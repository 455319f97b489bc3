"""The output-path rule (`charrnn.files.outputs`), tried against every command that writes a path a user
names: what exists there is never replaced by surprise, never through a link or a device node,
and never when it is a file of a run or of a prepared corpus; every message names the user's path.

The device node is one the test makes itself (a copy of /dev/null's numbers, as root), never a
system device.
"""

import os
import stat

import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.errors import UserError
from charrnn.files.outputs import OutputFile
from conftest import SHAKESPEARE_LIKE, assert_one_line_failure

FILE_WRITERS = {
    "export html": lambda run, path: ["export", run, "-f", "html", "-o", path],
    "export safetensors": lambda run, path: ["export", run, "-f", "safetensors", "-o", path],
    "eval --html": lambda run, path: ["eval", run, "corpus.txt", "--html", path, "-q"],
    "plot -o": lambda run, path: ["plot", run, "-o", path],
    "inspect --html": lambda run, path: ["inspect", run, "corpus.txt", "--html", path, "-q"],
    "inspect --states": lambda run, path: ["inspect", run, "corpus.txt", "--states", path, "-q"],
    "inspect --plot": lambda run, path: ["inspect", run, "corpus.txt", "--plot", path, "-q"],
}


def needs_extra_of(writer):
    pytest.importorskip("matplotlib" if "plot" in writer else "safetensors" if "safetensors" in writer else "json")


def invoke(*argv):
    return CliRunner().invoke(cli, [str(a) for a in argv])


def state(path):
    """What is at `path`, without following a link: (kind, size or link target, content of a file)."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(found.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISREG(found.st_mode):
        return ("file", open(path, "rb").read())
    return (stat.S_IFMT(found.st_mode), found.st_rdev)


@pytest.fixture
def place(tmp_path, monkeypatch, trained_run):
    """A working directory with a corpus, the trained run (copied, so it may be attacked) and a prepared corpus."""
    import shutil

    shutil.copytree(trained_run, tmp_path / "run")
    (tmp_path / "corpus.txt").write_text(SHAKESPEARE_LIKE)
    (tmp_path / "mine.txt").write_text("the user's own file")
    monkeypatch.chdir(tmp_path)
    result = invoke("prepare", "corpus.txt", "--out", "data", "-q")
    assert result.exit_code == 0, result.output
    return tmp_path


def make(kind, path, place):
    """Put a `kind` of thing at `path`; returns a fragment the refusal must contain."""
    if kind == "existing file":
        path.write_text("an earlier output")
        return "already exists; pass --force"
    if kind == "symlink to a file":
        path.symlink_to(place / "mine.txt")
        return "is a symbolic link"
    if kind == "dangling symlink":
        path.symlink_to(place / "nowhere")
        return "is a symbolic link"
    if kind == "fifo":
        os.mkfifo(path)
        return "is a FIFO"
    if kind == "device":
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root (CI runs as root)")
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        return "is a device"
    if kind == "directory":
        path.mkdir()
        return "is a directory"
    raise AssertionError(kind)


KINDS = ["existing file", "symlink to a file", "dangling symlink", "fifo", "device", "directory"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("writer", list(FILE_WRITERS))
def test_a_path_that_exists_is_refused_and_left_as_it_was(place, writer, kind):
    needs_extra_of(writer)
    path = place / "out.png"
    fragment = make(kind, path, place)
    before, theirs = state(path), state(place / "mine.txt")
    result = invoke(*FILE_WRITERS[writer]("run", path))
    assert_one_line_failure(result.exit_code, result.stderr, fragment)
    assert str(path) in result.stderr and ".tmp" not in result.stderr
    assert state(path) == before and state(place / "mine.txt") == theirs
    if kind != "existing file":  # --force replaces only a regular file
        result = invoke(*FILE_WRITERS[writer]("run", path), "--force")
        assert_one_line_failure(result.exit_code, result.stderr, fragment)
        assert state(path) == before and state(place / "mine.txt") == theirs
    assert not [p for p in place.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("writer", list(FILE_WRITERS))
def test_force_replaces_an_existing_regular_file(place, writer):
    needs_extra_of(writer)
    path = place / "out.png"
    path.write_text("an earlier output")
    result = invoke(*FILE_WRITERS[writer]("run", path), "--force")
    assert result.exit_code == 0, result.output
    assert path.read_bytes() != b"an earlier output" and stat.S_ISREG(os.lstat(path).st_mode)


@pytest.mark.parametrize("name", ["best.npz", "last.npz", "config.yaml", "vocab.json", "metrics.jsonl", "step-9.npz"])
@pytest.mark.parametrize("writer", list(FILE_WRITERS))
def test_a_file_of_a_run_is_never_replaced_even_with_force(place, writer, name):
    needs_extra_of(writer)
    path = place / "run" / name
    before = state(path)
    for extra in ([], ["--force"]):
        result = invoke(*FILE_WRITERS[writer]("run", path), *extra)
        assert_one_line_failure(result.exit_code, result.stderr, "a file of the run")
        assert state(path) == before
    assert invoke("sample", "run", "--length", "5", "--seed", "1").exit_code == 0  # the model is still there


@pytest.mark.parametrize("writer", list(FILE_WRITERS))
def test_nothing_is_written_into_a_prepared_corpus(place, writer):
    needs_extra_of(writer)
    for name in ("train.bin", "meta.json", "new.html"):
        before = state(place / "data" / name)
        result = invoke(*FILE_WRITERS[writer]("run", place / "data" / name), "--force")
        assert_one_line_failure(result.exit_code, result.stderr, "inside the prepared corpus")
        assert state(place / "data" / name) == before


@pytest.mark.parametrize("writer", list(FILE_WRITERS))
def test_a_missing_folder_is_named_as_the_user_gave_it(place, writer):
    needs_extra_of(writer)
    result = invoke(*FILE_WRITERS[writer]("run", "missing/dir/m.out"))
    assert_one_line_failure(result.exit_code, result.stderr, "missing/dir/m.out: the folder missing/dir does not exist")
    assert ".tmp" not in result.stderr and not (place / "missing").exists()


def test_export_to_its_default_path_twice_needs_force(place):
    assert invoke("export", "run", "-f", "html").exit_code == 0
    page = (place / "run" / "model.html").read_bytes()
    result = invoke("export", "run", "-f", "html")
    assert_one_line_failure(result.exit_code, result.stderr, "run/model.html already exists; pass --force")
    assert invoke("export", "run", "-f", "html", "--float16", "--force").exit_code == 0
    assert (place / "run" / "model.html").read_bytes() != page


def test_a_file_that_appears_while_writing_is_not_replaced(tmp_path):
    path = tmp_path / "out.html"
    with pytest.raises(UserError, match="appeared while charrnn was writing it"):
        with OutputFile(path, "--output").writer() as handle:
            handle.write(b"charrnn's page")
            path.write_text("someone else's file")
    assert path.read_text() == "someone else's file" and sorted(p.name for p in tmp_path.iterdir()) == ["out.html"]


def test_a_link_that_appears_while_writing_with_force_is_not_followed_or_replaced(tmp_path):
    path, theirs = tmp_path / "out.html", tmp_path / "theirs.txt"
    theirs.write_text("theirs")
    with pytest.raises(UserError, match="became a symbolic link"):
        with OutputFile(path, "--output", force=True).writer() as handle:
            handle.write(b"charrnn's page")
            path.symlink_to(theirs)
    assert os.readlink(path) == str(theirs) and theirs.read_text() == "theirs"


# --- output directories: prepare --out and train --out ---

DIRECTORY_WRITERS = {
    "prepare --out": lambda path: ["prepare", "corpus.txt", "--out", path, "-q"],
    "train --out": lambda path: ["train", "corpus.txt", "--out", path, "-q", "--hidden-size", "8", "--max-steps", "2"],
    "train --out, an ensemble": lambda path: ["train", "corpus.txt", "--out", path, "-q", "--hidden-size", "8",
                                              "--max-steps", "2", "--set", "train.members=2"],
}


@pytest.mark.parametrize("kind", ["fifo", "device", "existing file"])
@pytest.mark.parametrize("writer", list(DIRECTORY_WRITERS))
def test_an_output_directory_that_is_not_a_directory_is_refused(place, writer, kind):
    path = place / "target"
    make(kind, path, place)
    before = state(path)
    for extra in ([], ["--force"]):
        result = invoke(*DIRECTORY_WRITERS[writer](path), *extra)
        expected = {"fifo": "is a FIFO, not a directory", "device": "is a device, not a directory",
                    "existing file": "is a regular file, not a directory"}[kind]
        assert_one_line_failure(result.exit_code, result.stderr, expected)
        assert state(path) == before


@pytest.mark.parametrize("writer", list(DIRECTORY_WRITERS))
def test_a_folder_of_the_users_own_files_is_never_emptied_even_with_force(place, writer):
    folder = place / "documents"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    (folder / "weights.npz").write_bytes(b"not charrnn's")
    for extra in ([], ["--force"]):
        result = invoke(*DIRECTORY_WRITERS[writer](folder), *extra)
        assert_one_line_failure(result.exit_code, result.stderr, "holds files that are not a charrnn")
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex", "weights.npz"]
    assert (folder / "thesis.tex").read_text() == "years of work"


def test_prepare_never_replaces_a_run_or_a_link(place):
    checkpoints = {p.name: p.read_bytes() for p in (place / "run").glob("*.npz")}
    result = invoke("prepare", "corpus.txt", "--out", "run", "--force", "-q")
    assert_one_line_failure(result.exit_code, result.stderr, "holds a run (checkpoints)")
    assert {p.name: p.read_bytes() for p in (place / "run").glob("*.npz")} == checkpoints
    (place / "linked").symlink_to(place / "data", target_is_directory=True)
    result = invoke("prepare", "corpus.txt", "--out", "linked", "--force", "-q")
    assert_one_line_failure(result.exit_code, result.stderr, "is a symbolic link")
    assert os.path.islink(place / "linked") and (place / "data" / "meta.json").is_file()
    result = invoke("prepare", "corpus.txt", "--out", "data/inner", "-q")
    assert_one_line_failure(result.exit_code, result.stderr, "inside the prepared corpus")


def test_train_never_turns_a_prepared_corpus_into_a_run(place):
    before = {p.name: p.read_bytes() for p in (place / "data").iterdir()}
    for extra in ([], ["--force"]):
        result = invoke("train", "data", "--out", "data", "-q", "--hidden-size", "8", "--max-steps", "2", *extra)
        assert_one_line_failure(result.exit_code, result.stderr, "holds a prepared corpus, not a run")
    assert {p.name: p.read_bytes() for p in (place / "data").iterdir()} == before
