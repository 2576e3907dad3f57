"""The catalogue: the lake's tables by name, read for a family's training as the family declares
them (models/training.py: Input). The only place a training reads the lake, so a family is
fitted on frames (in a notebook too) and where the lake lives is the catalogue's business."""

from __future__ import annotations

import datetime as dt
import json
from functools import cached_property
from typing import Any

from lake.contract import RAW_TABLES, complete
from lake.store import TABLE_ZONES, Lake, LakeError
from models.training import Input


class Frames(dict):
    """Each input by its name; `days`: the days each partitioned input covers; `snapshots`: the
    Iceberg snapshot of each curated table read (lineage); `settings`: the brand's settings kept
    with the lake (its currency, …)."""

    def __init__(self, lake: Lake) -> None:
        super().__init__()
        self.days: dict[str, list[dt.date]] = {}
        self.snapshots: dict[str, int] = {}
        self._lake = lake

    @cached_property
    def settings(self):
        return self._lake.settings()


def read(lake: Lake, inputs: dict[str, Input], as_of: dt.date | None = None) -> Frames:
    """Each input by its name: a pandas frame, a parsed JSON document, or None for an optional
    input the lake does not have. With `as_of`, the lake as it was that day: no day after it.
    Curated tables are read as `lake`'s commit shows them (`lake.at(commit)` pins one). Raises
    LakeError naming a needed table the lake lacks."""
    frames = Frames(lake)
    for name, spec in inputs.items():
        frames[name], days = read_input(lake, spec, as_of)
        if days:
            frames.days[name] = days
        if spec.zone in TABLE_ZONES and frames[name] is not None:
            frames.snapshots[spec.table] = lake.tables.snapshot(spec.table)
    return frames


def read_input(lake: Lake, spec: Input, as_of: dt.date | None = None) -> tuple[Any, list[dt.date]]:
    """One input and the days it covers ([] for a table not partitioned by day)."""
    if spec.json is not None:
        path = lake.table_dir(spec.zone, spec.table) / spec.json
        return (json.loads(path.read_text()) if path.is_file() else _absent(lake, spec)), []
    held = lake.partitions(spec.zone, spec.table)
    days = [d for d in held if as_of is None or d <= as_of]
    if days:
        if spec.days is not None:
            days = [d for d in days if d > days[-1] - dt.timedelta(days=spec.days)]
        # `dt` comes from the partition when the files do not hold it
        columns = [c for c in spec.columns if c != "dt"] if spec.columns else None
        table = lake.read_all(spec.zone, spec.table, columns=columns, days=days)
    elif not held and lake.has(spec.zone, spec.table):  # a table not partitioned by day
        table = lake.read(spec.zone, spec.table)
    else:
        return _absent(lake, spec, as_of), []
    if spec.contract:
        table = complete(table, RAW_TABLES[spec.table], keep_extra=spec.keep_extra)
    if spec.columns:
        table = table.select(list(spec.columns))
    return table.to_pandas(strings_to_categorical=spec.categorical), days


def _absent(lake: Lake, spec: Input, as_of: dt.date | None = None) -> None:
    if spec.needed is None:
        return None
    when = f" on or before {as_of}" if as_of else ""
    raise LakeError(f"no {spec.zone}/{spec.table}{when} under {lake.root}; {spec.needed}")
