"""A bounded, closed-loop HTTP load generator (its own process, loopback only): `concurrency`
clients each send the next request as soon as the previous answer arrives, for `seconds`.

Usage: python -m benchmarks.loadgen URL BODY_JSON CONCURRENCY SECONDS [AUTH_HEADER]
       python -m benchmarks.loadgen --mix MIX_JSON CONCURRENCY SECONDS [AUTH_HEADER]
A mix is a JSON list of {"url", "body"}: client i starts at entry i and cycles through them all.
Prints one JSON line: requests, errors (non-2xx or transport), rps, p50_ms, p99_ms; with a mix
also per-url figures and the count of each status code (0 = transport error)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from urllib.parse import urlparse

import aiohttp
import numpy as np


def _summary(latencies: list[float], errors: int, elapsed: float) -> dict:
    lat = np.array(latencies) * 1e3
    return {"requests": len(latencies) + errors, "errors": errors, "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None}


async def run_mix(targets: list[dict], concurrency: int, seconds: float, auth: str | None) -> dict:
    for target in targets:
        host = urlparse(target["url"]).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"loopback only: refusing to load {host}")
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = auth
    payloads = [json.dumps(t["body"]).encode() for t in targets]
    latencies: list[list[float]] = [[] for _ in targets]
    errors = [0] * len(targets)
    statuses: Counter = Counter()
    deadline = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession, start: int) -> None:
        i = start
        while time.perf_counter() < deadline:
            k = i % len(targets)
            i += 1
            started = time.perf_counter()
            try:
                async with session.post(targets[k]["url"], data=payloads[k], headers=headers) as response:
                    await response.read()
                    statuses[response.status] += 1
                    if response.status >= 300:
                        errors[k] += 1
                        continue
            except (aiohttp.ClientError, asyncio.TimeoutError):
                statuses[0] += 1
                errors[k] += 1
                continue
            latencies[k].append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        # warm-up: the first requests pay connection set-up and lazy imports
        for target, payload in zip(targets, payloads):
            async with session.post(target["url"], data=payload, headers=headers) as response:
                await response.read()
        started = time.perf_counter()
        await asyncio.gather(*(client(session, c) for c in range(concurrency)))
        elapsed = time.perf_counter() - started
    result = _summary([x for per in latencies for x in per], sum(errors), elapsed)
    if len(targets) > 1:
        result["statuses"] = {str(k): v for k, v in sorted(statuses.items())}
        result["per_url"] = {t["url"]: _summary(latencies[k], errors[k], elapsed) for k, t in enumerate(targets)}
    return result


async def run(url: str, body: dict, concurrency: int, seconds: float, auth: str | None) -> dict:
    return await run_mix([{"url": url, "body": body}], concurrency, seconds, auth)


def main(argv: list[str]) -> None:
    if argv[0] == "--mix":
        with open(argv[1]) as f:
            targets = json.load(f)
    else:
        targets = [{"url": argv[0], "body": json.loads(argv[1])}]
    concurrency, seconds, *auth = argv[2:]
    print(json.dumps(asyncio.run(run_mix(targets, int(concurrency), float(seconds), auth[0] if auth else None))),
          flush=True)

if __name__ == "__main__":
    main(sys.argv[1:])
