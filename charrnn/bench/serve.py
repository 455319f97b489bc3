"""`python -m charrnn.bench.serve RUN`: requests/s and latency of `charrnn serve` under concurrent clients.

Starts `charrnn serve RUN` on a free port, then for 1, 8 and 32 concurrent clients sends
`/v1/generate` requests of `--length` tokens (each with its own seed, not streamed) for
`--seconds` each, after one warm-up request, and reports the completed requests per second
and the 50th and 99th percentile latency from request to full answer.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time

import numpy as np

from charrnn.compute.allocator import keep_freed_memory
from charrnn.compute.machine import describe


async def load(url: str, clients: int, seconds: float, length: int) -> list[float]:
    """Latencies (s) of the requests `clients` concurrent clients complete in `seconds`."""
    import httpx

    latencies, deadline = [], time.perf_counter() + seconds

    async def client(http, index):
        seed = index * 100_000
        while time.perf_counter() < deadline:
            begin = time.perf_counter()
            answer = await http.post(url + "/v1/generate", json={"length": length, "seed": seed, "prime": "ROMEO:"})
            answer.raise_for_status()
            latencies.append(time.perf_counter() - begin)
            seed += 1

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients + 4)) as http:
        await http.post(url + "/v1/generate", json={"length": length})
        await asyncio.gather(*(client(http, i) for i in range(clients)))
    return latencies


def main():
    keep_freed_memory()  # as the charrnn command does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory or checkpoint to serve")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--length", type=int, default=200)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", args.run, "--port", "0"],
                              stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"at (http://[^ ]+)/ ", server.stderr.readline())[1]
        print(f"# charrnn bench_serve: {args.run}; {describe()}; /v1/generate of {args.length} tokens, "
              f"{args.seconds:g} s per row\n")
        print("| clients | requests/s | tokens/s | p50 latency ms | p99 latency ms |")
        print("|---|---|---|---|---|")
        for clients in map(int, args.clients.split(",")):
            begin = time.perf_counter()
            latencies = asyncio.run(load(url, clients, args.seconds, args.length))
            rate = len(latencies) / (time.perf_counter() - begin)
            p50, p99 = np.percentile(latencies, [50, 99]) * 1000
            print(f"| {clients} | {rate:.1f} | {rate * args.length:,.0f} | {p50:.0f} | {p99:.0f} |", flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
