"""The family registry (models/families.py) and the contract each entry keeps (models/family.py):
what the jobs, the gate and serving read from it instead of their own tables."""

from __future__ import annotations

import pydantic
import pytest

from models.config import FamilyConfig
from models.families import FAMILIES, family


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_declares_what_the_platform_reads(name):
    f = FAMILIES[name]
    assert f.name == name and f.registered_name == f"quanyu-{name}"
    config, path = f.config()
    assert isinstance(config, FamilyConfig) and path and path.endswith(f"configs/{name}.yaml")
    # the gate judges metrics the training run logs and the summaries print
    assert f.gate.metric in f.headline and set(f.gate.beat) <= set(f.headline), f.gate
    assert set(f.served_metrics) <= set(f.headline)
    assert f.memory.base_gb > 0 and f.memory.bytes_per_row > 0
    assert all(callable(c) for c in (f.predictor, f.smoke_test, f.sanity))


def test_the_jobs_gates_and_serving_iterate_the_registry():
    from jobs.promotion import default_gates
    from jobs.retrain import RetrainConfig
    from serving.families import FAMILIES as SERVED

    assert list(default_gates()) == list(SERVED) == list(FAMILIES)
    assert RetrainConfig().families == list(FAMILIES)
    with pytest.raises(pydantic.ValidationError, match="unknown family 'stock'; one of demand, matching, location"):
        RetrainConfig(families=["demand", "stock"])
    with pytest.raises(ValueError, match="unknown family 'stock'"):
        family("stock")
