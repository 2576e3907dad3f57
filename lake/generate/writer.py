"""Writes a generated world and its simulated sales into a lake: contract columns to `raw/`,
hidden parameters to `truth/`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa

from lake.contract import RAW_TABLES, conform
from lake.generate import world as w
from lake.generate.sales import ChunkSales
from lake.store import Lake


def write_dimensions(lake: Lake, world: w.World) -> dict[str, int]:
    """Write every dimension table to raw/ and the world's hidden parameters to truth/.
    Returns rows written per raw table."""
    members = world.consumers[world.consumers["is_member"]]
    raw = {
        "products": world.products, "stores": world.stores, "members": members,
        "identities": world.identities, "promotions": world.promotions, "prices": world.prices,
        "calendar": world.calendar, "candidate_sites": world.sites, "assortment": world.assortment,
    }
    for name, frame in raw.items():
        lake.write("raw", name, conform(frame, RAW_TABLES[name]))

    truth = {
        "site_potential": world.sites[["site_id", "city", "true_segment_match", "true_potential"]],
        "stores": world.stores[["store_id", "channel", "true_level"]],
        "products": world.products[["sku_id", "category", "price_band", "combo", "true_popularity", "true_elasticity"]],
        "consumers": world.consumers.drop(columns=["join_date"]),
    }
    for name, frame in truth.items():
        lake.write("truth", name, pa.Table.from_pandas(frame, preserve_index=False))
    params = {
        "seed": world.seed, "scale": world.scale.model_dump(mode="json"), "base_rate": world.base_rate,
        "categories": list(w.CATEGORY_NAMES), "price_bands": list(w.PRICE_BANDS), "styles": list(w.STYLES),
        "age_bands": list(w.AGE_BANDS), "sensitivities": list(w.SENSITIVITIES),
        "age_category_pref": w.AGE_CATEGORY_PREF.tolist(), "sensitivity_band_pref": w.SENSITIVITY_BAND_PREF.tolist(),
        "favourite_category_boost": w.FAVOURITE_CATEGORY_BOOST, "favourite_style_boost": w.FAVOURITE_STYLE_BOOST,
        "affinity": "age_category_pref[age, cat] × boost(fav categories) × sensitivity_band_pref[sens, band] "
                    "× boost(fav style); P(buy sku) ∝ affinity × products.true_popularity",
        # a consumer's weight in each channel (rows: channel_prefs; columns: online, offline)
        "channel_prefs": list(w.CHANNEL_PREFS), "channel_weight": w.CHANNEL_WEIGHT.tolist(),
    }
    (lake.table_dir("truth", "params")).mkdir(parents=True, exist_ok=True)
    (lake.table_dir("truth", "params") / "world.json").write_text(json.dumps(params, indent=2, default=str))
    return {name: len(frame) for name, frame in raw.items()}


def write_chunk(lake: Lake, chunk_no: int, sales: list[ChunkSales]) -> dict[str, int]:
    """Write one date chunk's lines (every city's) into their dt partitions: one file per table,
    day and chunk, so chunks never collide and a rerun replaces its own files. Few large files
    rather than one per city: readers pay per file (a 30-city lake had 36,000 files of a few KB).
    Returns lines per table."""
    part = f"part-{chunk_no:04d}"
    written = {}
    for table in ("online_orders", "pos_transactions"):
        frame = pd.concat([getattr(s, table) for s in sales], ignore_index=True)
        for day, rows in _by_day(frame, lambda f: conform(f, RAW_TABLES[table])):
            lake.add_file("raw", table, rows, day, part)
        written[table] = len(frame)
    expected = pd.concat([s.expected for s in sales], ignore_index=True)
    for day, rows in _by_day(expected, lambda f: pa.Table.from_pandas(f, preserve_index=False)):
        lake.add_file("truth", "expected_demand", rows, day, part)
    return written


def _by_day(frame: pd.DataFrame, to_arrow) -> list[tuple[object, pa.Table]]:
    """(day, rows) per value of `dt`, days in order and rows in their order within a day; the
    frame converted to Arrow once, then sliced (a conversion per day cost more than the writes)."""
    codes, days = pd.factorize(frame["dt"], sort=True)
    order = np.argsort(codes, kind="stable")
    table = to_arrow(frame.drop(columns="dt")).take(order)
    ends = np.cumsum(np.bincount(codes, minlength=len(days)))
    return [(day, table.slice(end - n, n)) for day, end, n in zip(days, ends, np.diff(ends, prepend=0))]


def chunk_days(days: pd.DatetimeIndex, size: int) -> list[np.ndarray]:
    """Consecutive runs of `size` days as datetime64[D] arrays."""
    values = days.values.astype("datetime64[D]")
    return [values[i:i + size] for i in range(0, len(values), size)]
