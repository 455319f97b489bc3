"""`charrnn serve` under clients that misbehave, on loopback, bounded in count and time: heads sent
a byte at a time, bodies that stall, crowds of idle connections, clients that vanish, a stop
signal while a client stalls, more requests than may be in flight. The server answers the others
throughout, stops when told, and its log holds no traceback and no flood."""

import asyncio
import signal
import socket
import time

import pytest

from conftest import Served

httpx = pytest.importorskip("httpx", reason="the test extra is not installed: pip install -e '.[test]'")


def address(served):
    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def connect(served, sent: bytes = b"") -> socket.socket:
    sock = socket.create_connection(address(served), timeout=5)
    if sent:
        sock.sendall(sent)
    return sock


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes the connection within `within` seconds (a 4xx answer counts)."""
    sock.settimeout(within)
    try:
        while data := sock.recv(4096):
            if data.startswith(b"HTTP/1.1 4"):
                return True
        return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionError:
        return True


def healthy(served) -> bool:
    return httpx.get(served.url + "/healthz", timeout=5).json()["status"] == "ok"


@pytest.fixture
def served(trained_run):
    server = Served(trained_run, "--request-timeout", "1", "--max-connections", "40", "--max-concurrent", "3")
    yield server
    if server.process.poll() is None:
        code, log = server.stop()
        assert code == 143, log
        assert "Traceback" not in log and len(log.splitlines()) < 12, log


def test_heads_sent_a_byte_at_a_time_are_cut_off_and_others_are_answered(served):
    slow = [connect(served, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(20)]
    assert healthy(served)  # the others are answered meanwhile
    started = time.time()
    for sock in slow:
        sock.sendall(b"X-A: b\r\n")  # still no end of head
    assert all(closed_by_server(sock, 3) for sock in slow) and time.time() - started < 4
    assert healthy(served)


def test_a_crowd_of_idle_connections_past_the_cap_is_turned_away_and_then_let_go(served):
    crowd = [connect(served) for _ in range(60)]
    refused = sum(closed_by_server(sock, 0.3) for sock in crowd[45:])
    assert refused == 15  # past the cap of 40: closed at once, their descriptors given back
    assert all(closed_by_server(sock, 3) for sock in crowd[:40])  # no head within the timeout
    assert healthy(served)


def test_a_body_that_stalls_gets_a_408_and_a_client_gone_mid_body_is_no_traceback(served):
    head = b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    stalled = connect(served, head + b'{"length": 5, ')
    stalled.settimeout(5)
    answer = b""
    while b"did not arrive" not in answer and (data := stalled.recv(4096)):
        answer += data
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in answer
    gone = connect(served, head + b'{"length"')
    gone.close()
    time.sleep(0.2)
    assert healthy(served)


def test_deeply_nested_json_and_lone_surrogates_are_400s(served):
    deep = httpx.post(served.url + "/v1/generate", content=b'{"stop": ' + b"[" * 30000 + b"]" * 30000 + b"}")
    assert deep.status_code == 400 and "nests" in deep.json()["error"]
    lone = httpx.post(served.url + "/v1/generate", content=b'{"prime": "\\ud800"}')
    assert lone.status_code == 400 and lone.json()["field"] == "prime"


def test_more_requests_than_may_be_in_flight_get_429(served):
    async def crowd(path, body):
        async with httpx.AsyncClient(timeout=30) as http:
            answers = await asyncio.gather(*(http.post(served.url + path, json={**body, "seed": i}) for i in range(8)))
            return answers
    answers = asyncio.run(crowd("/v1/generate", {"length": 400}))
    codes = [a.status_code for a in answers]
    assert codes.count(200) >= 3 and 429 in codes and set(codes) <= {200, 429}
    busy = next(a for a in answers if a.status_code == 429)
    assert busy.json()["error"].startswith("the server is busy: 3 requests are in flight")
    assert busy.headers["retry-after"] == "1"  # what OpenAI's client waits before it tries again
    answers = asyncio.run(crowd("/v1/completions", {"model": "run", "prompt": "R", "max_tokens": 400}))
    busy = next(a for a in answers if a.status_code == 429)
    assert busy.json()["error"]["code"] == "rate_limit_exceeded"  # OpenAI's shape on OpenAI's route
    assert healthy(served)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_one_stop_signal_ends_the_server_within_seconds_whatever_a_client_does(trained_run, signum):
    served = Served(trained_run, "--request-timeout", "60")
    head = b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    stalled = connect(served, head + b'{"len')  # holds its request open: the body never comes
    streaming = connect(served, b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 34\r\n\r\n"
                                b'{"length": 2000, "stream": true}  ')
    time.sleep(0.3)
    started = time.time()
    code, log = served.stop(signum)
    assert time.time() - started < 8, log
    assert code == (143 if signum == signal.SIGTERM else 130)
    assert "Traceback" not in log and "CancelledError" not in log
    assert log.strip().splitlines()[-1] == f"server stopped ({'terminated' if signum == signal.SIGTERM else 'interrupted'})"
    stalled.close()
    streaming.close()
