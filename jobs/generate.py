"""Job: generate a synthetic omnichannel lake.

Steps:
1. draw the world (cities, sites, stores, catalogue, consumers, identities) from the seed;
2. calibrate the demand level so the lake has about the scale's number of sales lines;
3. write the dimension tables to raw/ and the hidden parameters to truth/;
4. simulate sales as Ray tasks over date chunks (every city of a chunk in one task, each city
   with its own random stream), each writing one Parquet file per day and table;
5. return a summary (lines per table, chunks, seconds).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from jobs.progress import as_completed
from lake.generate.sales import CityContext, calibrate_base_rate, city_contexts, simulate_chunk
from lake.generate.scales import get_scale
from lake.generate.world import build_world
from lake.generate.writer import chunk_days, write_chunk, write_dimensions
from lake.location import task_options
from lake.store import Lake


class GenerateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scale: str = Field("tiny", description="tiny, small, medium or large")
    seed: int = Field(42, ge=0)
    start: dt.date | None = None
    days: int | None = Field(None, ge=28)


@dataclass
class GenerateResult:
    lake: str
    scale: str
    seed: int
    start: dt.date
    end: dt.date
    lines: dict[str, int] = field(default_factory=dict)
    dimensions: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    seconds: float = 0.0


def _simulate_and_write(lake: Lake, chunk_no: int, days: np.ndarray, seed: int,
                        *contexts: CityContext) -> dict[str, int]:
    # one stream per (city, chunk): the lines do not depend on how cities are grouped into tasks
    sales = [simulate_chunk(ctx, days, np.random.default_rng([seed, 1, ctx.city_index, chunk_no]))
             for ctx in contexts]
    return write_chunk(lake, chunk_no, sales)


def main(config: GenerateConfig, lake: Lake) -> GenerateResult:
    """Generate the lake; Ray must already be initialised (jobs.runtime.ensure_ray)."""
    import ray

    started = time.monotonic()
    scale = get_scale(config.scale, start=config.start, days=config.days)
    world = build_world(scale, config.seed)
    contexts = city_contexts(world)
    world.base_rate = calibrate_base_rate(contexts, world.days.values.astype("datetime64[D]"), scale.target_lines)
    for ctx in contexts:
        ctx.base_rate = world.base_rate
    dims = write_dimensions(lake, world)

    task = ray.remote(_simulate_and_write).options(**task_options(lake.root))  # a lake on a store: its keys go along
    chunks = chunk_days(world.days, scale.chunk_days)
    context_refs = [ray.put(ctx) for ctx in contexts]  # top-level arguments: Ray resolves them
    refs = [task.remote(lake, k, days, config.seed, *context_refs) for k, days in enumerate(chunks)]
    totals: dict[str, int] = {"online_orders": 0, "pos_transactions": 0}

    def hint(result: dict[str, int]) -> str:  # called before `result` is added below
        return f"{sum(totals.values()) + sum(result.values()):,} lines"

    for written in as_completed(refs, label=f"generate {scale.name}", total_hint=hint):
        for table, n in written.items():
            totals[table] += n
    return GenerateResult(lake=str(lake.root), scale=scale.name, seed=config.seed, start=world.start,
                          end=world.end, lines=totals, dimensions=dims, chunks=len(refs),
                          seconds=round(time.monotonic() - started, 1))
