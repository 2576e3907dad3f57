"""The registry of model families: every part of the platform that iterates families reads this
list (models/family.py has the contract). Each entry's module is light: its model code is
imported when a family is trained or loaded."""

from __future__ import annotations

import importlib
import os

from models.demand.family import FAMILY as DEMAND
from models.family import Family
from models.location.family import FAMILY as LOCATION
from models.matching.family import FAMILY as MATCHING

PLUGINS = "QUANYU_FAMILIES"  # "module:NAME,…": families whose packages live outside this repository


def plugins(refs: str | None = None) -> list[Family]:
    """The families that QUANYU_FAMILIES (or `refs`) names, each a `Family` at "module:NAME": a
    brand's own family, in its own package, joins the registry without a change here."""
    found = []
    for ref in (refs if refs is not None else os.environ.get(PLUGINS, "")).split(","):
        if not ref.strip():
            continue
        module, _, name = ref.strip().partition(":")
        try:
            value = getattr(importlib.import_module(module), name or "FAMILY")
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"{PLUGINS}: cannot import the family {ref.strip()!r} ({exc}); give module:NAME of a "
                             "models.family.Family on the Python path") from None
        if not isinstance(value, Family):
            raise ValueError(f"{PLUGINS}: {ref.strip()!r} is a {type(value).__name__}, not a models.family.Family")
        found.append(value)
    return found


def plugin_env() -> dict[str, str]:
    """The environment that carries the plugin families to Ray workers (retrain tasks, serving
    replicas) of a cluster started without it: {} when there are none."""
    refs = os.environ.get(PLUGINS, "")
    return {PLUGINS: refs} if refs.strip() else {}


FAMILIES: dict[str, Family] = {f.name: f for f in (DEMAND, MATCHING, LOCATION, *plugins())}


def family(name: str) -> Family:
    """The family called `name`; ValueError naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; one of {', '.join(FAMILIES)}") from None
