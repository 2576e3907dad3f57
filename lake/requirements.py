"""Which raw tables each model family reads, and which families a lake can train.

A table that no family the brand wants reads is optional: a demand-only brand writes products,
stores and its sales, nothing else. Validation reports, for each family, what is missing.
"""

from __future__ import annotations

from lake.contract import FACT_TABLES

FAMILY_TABLES: dict[str, tuple[str, ...]] = {
    "demand": ("products", "stores"),
    "matching": ("products", "members", "identities"),
    "location": ("stores", "candidate_sites"),
}
"""The raw dimension tables each family reads (besides the sales of at least one fact table);
calendar, promotions, prices and assortment are used when present by every family that can."""


def missing_for(family: str, present: set[str]) -> list[str]:
    """What `family` needs that a lake with the raw tables `present` (names with at least one
    row) lacks, each as a short sentence; [] when it can train."""
    missing = [f"raw/{t}" for t in FAMILY_TABLES[family] if t not in present]
    if not present & set(FACT_TABLES):
        missing.append("sales (raw/online_orders or raw/pos_transactions)")
    return missing


def readiness(present: set[str]) -> dict[str, list[str]]:
    """For every family, what the lake lacks to train it ([] when nothing)."""
    return {family: missing_for(family, present) for family in FAMILY_TABLES}


def readiness_lines(ready: dict[str, list[str]]) -> list[str]:
    """The report's lines: which families this lake can train, and what each other one needs."""
    can = [f for f, missing in ready.items() if not missing]
    lines = [f"families this lake can train: {', '.join(can) or 'none'}"]
    lines += [f"  {family} needs {', '.join(missing)} (see docs/lake.md, which tables each family needs)"
              for family, missing in ready.items() if missing]
    return lines
