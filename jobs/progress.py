"""Progress for long fan-outs: waits on Ray tasks and prints a line as they finish."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO


def as_completed(refs: list, *, label: str, total_hint: Callable[[Any], str] | None = None,
                 stream: TextIO | None = None, every_s: float = 2.0) -> Iterator[Any]:
    """Yield the results of Ray object refs as they finish, printing `label: k/n done, …`
    at most every `every_s` seconds (and once at the end) to stderr."""
    import ray

    out = stream or sys.stderr
    pending = list(refs)
    done, started, last = 0, time.monotonic(), 0.0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for result in ray.get(ready):
            done += 1
            now = time.monotonic()
            if now - last >= every_s or done == len(refs):
                extra = f", {total_hint(result)}" if total_hint else ""
                print(f"{label}: {done}/{len(refs)} done in {now - started:.1f} s{extra}", file=out, flush=True)
                last = now
            yield result
