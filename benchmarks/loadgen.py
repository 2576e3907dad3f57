"""A bounded, closed-loop HTTP load generator (its own process, loopback only): `concurrency`
clients each send the next request as soon as the previous answer arrives, for `seconds`.

Usage: python -m benchmarks.loadgen URL BODY_JSON CONCURRENCY SECONDS [AUTH_HEADER]
Prints one JSON line: requests, errors (non-2xx or transport), rps, p50_ms, p99_ms."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import urlparse

import aiohttp
import numpy as np


async def run(url: str, body: dict, concurrency: int, seconds: float, auth: str | None) -> dict:
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"loopback only: refusing to load {host}")
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    payload = json.dumps(body).encode()
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                async with session.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    if response.status >= 300:
                        errors += 1
                        continue
            except aiohttp.ClientError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        # warm-up: the first requests pay connection set-up and lazy imports
        for _ in range(3):
            async with session.post(url, data=payload, headers=headers) as response:
                await response.read()
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1e3
    return {"requests": len(latencies), "errors": errors, "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None}


def main(argv: list[str]) -> None:
    url, body, concurrency, seconds = argv[0], json.loads(argv[1]), int(argv[2]), float(argv[3])
    auth = argv[4] if len(argv) > 4 else None
    print(json.dumps(asyncio.run(run(url, body, concurrency, seconds, auth))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
