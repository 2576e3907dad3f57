"""The registry of model families: every part of the platform that iterates families reads this
list (models/family.py has the contract). Each entry's module is light: its model code is
imported when a family is trained or loaded."""

from __future__ import annotations

from models.demand.family import FAMILY as DEMAND
from models.family import Family
from models.location.family import FAMILY as LOCATION
from models.matching.family import FAMILY as MATCHING

FAMILIES: dict[str, Family] = {f.name: f for f in (DEMAND, MATCHING, LOCATION)}


def family(name: str) -> Family:
    """The family called `name`; ValueError naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; one of {', '.join(FAMILIES)}") from None
