"""`python -m charrnn.bench.serve RUN [RUN ...]`: tokens/s and latency of `charrnn serve` under
concurrent clients, with continuous batching and without it, side by side in one run.

For each run and each way of serving (`batched`: the default, every request in flight one row of
one batch; `alone`: `--max-batch 0`, each request a batch of its own on the worker threads, as
before batching), starts `charrnn serve` on a free port, then for each count of concurrent
clients sends `/v1/generate` requests of `--length` tokens (each with its own seed, not
streamed) for `--seconds`, after a warm-up request, and reports the completed requests per
second, tokens per second and the 50th and 99th percentile latency from request to answer. The
clients run on the same machine, in processes of at most `CLIENTS_PER_PROCESS` each: they take
CPU time from the server too, and one process's HTTP client pool would otherwise be what limits
the figure (one process of 128 clients completed 47 requests/s where four of 32 completed 179
against the same server: BENCHMARKS.md). A request that fails (a closed connection, an error
status) is counted in the last column.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import subprocess
import sys
import time

import numpy as np

from charrnn.compute.allocator import keep_freed_memory
from charrnn.compute.machine import describe

MODES = {"batched": [], "alone": ["--max-batch", "0"]}
CLIENTS_PER_PROCESS = 32


async def load(url: str, clients: int, seconds: float, length: int) -> tuple[list[float], int]:
    """Latencies (s) of the requests `clients` concurrent clients complete in `seconds`, and how
    many requests failed (a connection closed, an error status): counted, not retried."""
    import httpx

    latencies, failed, deadline = [], 0, time.perf_counter() + seconds

    async def client(http, index):
        seed = index * 100_000
        while time.perf_counter() < deadline:
            begin = time.perf_counter()
            try:
                answer = await http.post(url + "/v1/generate", json={"length": length, "seed": seed, "prime": "ROMEO:"})
                answer.raise_for_status()
                latencies.append(time.perf_counter() - begin)
            except httpx.HTTPError:
                nonlocal failed
                failed += 1
            seed += 1

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as http:
        await http.post(url + "/v1/generate", json={"length": length})
        await asyncio.gather(*(client(http, i) for i in range(clients)))
    return latencies, failed


def run_clients(url: str, clients: int, seconds: float, length: int) -> tuple[list[float], int, float]:
    """`load` in a process of its own -> (latencies, failed requests, the seconds it ran)."""
    begin = time.perf_counter()
    latencies, failed = asyncio.run(load(url, clients, seconds, length))
    return latencies, failed, time.perf_counter() - begin


def client_shares(clients: int) -> list[int]:
    """How many clients each process runs: as few processes as hold `clients`, shared evenly."""
    return [len(part) for part in np.array_split(np.arange(clients), -(-clients // CLIENTS_PER_PROCESS))]


def measure(url: str, clients: int, seconds: float, length: int) -> tuple[float, list[float], int]:
    """`clients` concurrent clients in processes of at most `CLIENTS_PER_PROCESS` -> (requests
    completed per second, all their latencies, failed requests)."""
    shares = client_shares(clients)
    with multiprocessing.get_context("spawn").Pool(len(shares)) as pool:
        results = pool.starmap(run_clients, [(url, share, seconds, length) for share in shares])
    rate = sum(len(latencies) / elapsed for latencies, _, elapsed in results)
    return rate, [s for latencies, _, _ in results for s in latencies], sum(failed for _, failed, _ in results)


def serve(run: str, mode: str) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", run, "--port", "0", "--max-concurrent", "1024",
                               "--max-length", "100000", *MODES[mode]], stderr=subprocess.PIPE, text=True)
    return server, re.search(r"at (http://[^ ]+)/ ", server.stderr.readline())[1]


def main(argv=None):
    keep_freed_memory()  # as the charrnn command does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories or checkpoints to serve")
    parser.add_argument("--clients", default="1,8,32,128")
    parser.add_argument("--modes", default="batched,alone", help="batched, alone, or both (the default)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--length", type=int, default=200)
    args = parser.parse_args(argv)
    print(f"# charrnn bench serve: {describe()}; /v1/generate of {args.length} tokens, {args.seconds:g} s per row\n")
    for run in args.runs:
        print(f"\n{run}\n")
        print("| clients | serving | requests/s | tokens/s | p50 latency ms | p99 latency ms | failed |")
        print("|---|---|---|---|---|---|---|")
        for clients in map(int, args.clients.split(",")):
            for mode in args.modes.split(","):
                server, url = serve(run, mode)
                try:
                    rate, latencies, failed = measure(url, clients, args.seconds, args.length)
                    p50, p99 = np.percentile(latencies, [50, 99]) * 1000 if latencies else (np.nan, np.nan)
                    print(f"| {clients} | {mode} | {rate:.1f} | {rate * args.length:,.0f} | {p50:.0f} | {p99:.0f} "
                          f"| {failed} |", flush=True)
                finally:
                    server.terminate()
                    server.wait()


if __name__ == "__main__":
    main()
