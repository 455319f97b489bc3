"""`charrnn sample --interactive` as a user meets it, under a pseudo-terminal: line editing and
history, Ctrl-C that clears the line without losing the conversation, Ctrl-D that leaves, and
settings changed with the rules and limits of `charrnn sample`'s flags, said plainly."""

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from charrnn.cli.interactive import command, escape, settings_lines, unescape
from charrnn.errors import UserError
from charrnn.generate.generation import GenerationRequest


class Terminal:
    """`charrnn ARGS` on a pseudo-terminal of its own (its controlling terminal, so Ctrl-C is SIGINT)."""

    def __init__(self, *args, grace=None):
        launch = ["-m", "charrnn"] if grace is None else \
            ["-c", f"import sys; from charrnn import signals; signals.GRACE_SECONDS = {grace}; sys.argv[0] = "
                   f"'charrnn'; from charrnn.launch import main; main()"]
        self.fd, terminal = pty.openpty()
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # a terminal's size, not 0 x 0
        # spawned without Python in the child (no preexec_fn: a fork of this threaded process could hang in
        # an at-fork handler of a library a test imported); util-linux's setsid makes the terminal the
        # child's controlling one, so that Ctrl-C is SIGINT
        self.process = subprocess.Popen(["setsid", "--ctty", sys.executable, *launch, *map(str, args)],
                                        stdin=terminal, stdout=terminal, stderr=terminal,
                                        env={**os.environ, "TERM": "xterm"})
        os.close(terminal)
        self.pid = self.process.pid
        self.seen = b""

    def expect(self, text: str, timeout: float = 30) -> str:
        """Read until `text` appears; everything read up to it."""
        deadline = time.time() + timeout
        while text.encode() not in self.seen:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.time()))
            if not ready:
                raise AssertionError(f"never saw {text!r}; saw {self.seen.decode(errors='replace')!r}")
            try:
                self.seen += os.read(self.fd, 4096)
            except OSError:  # the child has gone
                raise AssertionError(f"ended before {text!r}; saw {self.seen.decode(errors='replace')!r}") from None
        before, _, self.seen = self.seen.partition(text.encode())
        return before.decode(errors="replace")

    def send(self, keys: str):
        os.write(self.fd, keys.encode())

    def interrupt(self):
        """Ctrl-C, once readline is back waiting for keys: CPython's readline waits in select() with
        no wake-up for a signal that lands just before it (the instant after it echoed a key), so
        such a Ctrl-C acts at the next key; a person cannot type that fast, a test can."""
        time.sleep(0.2)
        self.send("\x03")

    def leave(self):
        """Ctrl-D at the prompt, once readline waits for keys (see `interrupt`)."""
        time.sleep(0.2)
        self.send("\x04")

    def exit_code(self, timeout: float = 30) -> int:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if (code := self.process.poll()) is not None:
                return code
            if select.select([self.fd], [], [], 0.02)[0]:
                try:
                    os.read(self.fd, 4096)
                except OSError:  # the terminal's other end closed as the child left
                    pass
        self.process.kill()
        raise AssertionError("the prompt did not leave")


@pytest.fixture
def terminal(trained_run):
    session = Terminal("sample", trained_run, "-i", "--length", 12, "--seed", 3, "--temperature", 0)
    session.expect("Ctrl-D to leave")
    yield session
    session.process.kill()
    session.process.wait()
    os.close(session.fd)


def test_the_prompt_edits_lines_recalls_history_and_leaves_on_ctrl_d(terminal):
    terminal.expect("> ")
    terminal.send("ROMEO\r")
    first = terminal.expect("> ")
    terminal.send("\x1b[A")  # the up arrow recalls the line, as readline does
    terminal.expect("ROMEO")
    terminal.send("\x01\x0bJULIET\r")  # Ctrl-A, Ctrl-K: the line is edited, then sent
    terminal.expect("JULIET")
    second = terminal.expect("> ")
    assert first.strip() and second.strip() and "^[[A" not in first + second
    terminal.leave()
    assert terminal.exit_code() == 0


def test_ctrl_c_at_the_prompt_clears_the_line_and_keeps_the_conversation(terminal):
    terminal.expect("> ")
    terminal.send("half a line")
    terminal.expect("half a line")
    terminal.interrupt()  # Ctrl-C: the line is dropped, the prompt comes back
    terminal.expect("> ")
    terminal.send("/settings\r")
    shown = terminal.expect("> ")
    assert "/length 12" in shown and "/temperature 0" in shown and "/seed 3" in shown
    terminal.send("y")
    terminal.expect("y")
    terminal.interrupt()
    terminal.expect("> ")
    terminal.leave()
    assert terminal.exit_code() == 0


def test_a_ctrl_c_at_the_prompt_leaves_no_timer_that_ends_the_session_later(trained_run):
    session = Terminal("sample", trained_run, "-i", "--length", 5, "--seed", 1, grace=1)
    try:
        session.expect("> ")
        session.send("x")
        session.expect("x")
        session.interrupt()
        session.expect("> ")
        time.sleep(2)  # past the grace a stop signal's safety net would allow
        session.send("ROMEO\r")
        session.expect("> ")
        session.leave()
        assert session.exit_code() == 0
    finally:
        session.process.kill()
        os.close(session.fd)


def test_settings_are_said_plainly_and_keep_the_flags_limits(terminal):
    for line, said in [("/top-k x", "/top-k needs a whole number, not 'x'"),
                       ("/length 99999999999999999999999", "/length must be between 1 and 1,099,511,627,776"),
                       ("/temperature -1", "/temperature must be 0 (greedy)"),
                       ("/length", "/length needs a whole number, e.g. /length 12"),
                       ("/bogus", "unknown command /bogus")]:
        terminal.expect("> ")
        terminal.send(line + "\r")
        terminal.expect(said)
    terminal.expect("> ")
    terminal.leave()
    assert terminal.exit_code() == 0


def test_a_line_that_is_not_utf8_is_refused_and_the_prompt_goes_on(trained_run):
    session = "caf\xe9\n/length 4\nROMEO\n".encode("latin-1")
    result = subprocess.run([sys.executable, "-m", "charrnn", "sample", str(trained_run), "-i", "--length", "5",
                             "--seed", "1"], input=session, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert b"error: the line is not UTF-8 text (byte 3)" in result.stderr and b"Traceback" not in result.stderr
    assert len(result.stdout.decode().strip()) == 4


def test_stop_strings_are_typed_with_escapes_and_checked_as_the_flag_is():
    request = GenerationRequest(length=10)
    request, _ = command(r"stop \n\n", request)
    assert request.stop == ("\n\n",) and r"/stop \n\n" in settings_lines(request)
    assert unescape(escape("a\\b\tc\n")) == "a\\b\tc\n"
    cleared, _ = command("stop", request)
    assert cleared.stop == ()

    def too_long(length):
        raise UserError(f"a continuation of {length:,} tokens needs about 800.0 GB of memory")

    assert command("length 100000000000", request, check_length=too_long) == (request, False)


def test_only_the_main_thread_takes_stop_signals(terminal):
    """A Ctrl-C the kernel hands to another thread (BLAS's own) would not wake the prompt's wait
    for a key: every other thread blocks the stop signals, BLAS's too."""
    terminal.expect("> ")
    masks = {}
    for task in Path(f"/proc/{terminal.pid}/task").iterdir():
        status = (task / "status").read_text()
        masks[int(task.name)] = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")), 16)
    stop = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    assert masks.pop(terminal.pid) & stop == 0
    assert all(mask & stop == stop for mask in masks.values()), masks
    terminal.leave()
    assert terminal.exit_code() == 0
