"""The stock family as the platform sees it (models/family.py)."""

from __future__ import annotations

import math

from models.family import Family, Footprint, Gate


def smoke_test(levels) -> None:
    if not levels.units:
        raise ValueError("smoke test: no SKU has a level")


def sanity(levels, sample: int) -> list[str]:
    return [f"SKU {sku}: level {units}" for sku, units in list(levels.units.items())[:sample]
            if not (math.isfinite(units) and units >= 0)][:5]


FAMILY = Family(
    name="stock",
    config_ref="tests.families.stock.training:StockConfig",
    gate=Gate(metric="mae", higher_is_better=False, beat=["mae_zero"]),
    headline=("mae", "mae_zero"),
    served_metrics=("mae",),
    date_word="data date",
    memory=Footprint("demand_daily", 0.1, 16.0),
    api_version=1, smoke_test=smoke_test, sanity=sanity,
    api_ref="tests.families.stock.api:API", training_ref="tests.families.stock.training",
    summary="Stock: the units each SKU sells a day, the mean of its last weeks.",
)
