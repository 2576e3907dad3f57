"""Shared fixtures: one local Ray per test session, one tiny lake generated and merged once,
and cheap copies of its raw zone for tests that corrupt or change data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lake.store import Lake

TINY_SEED = 7


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_lake(ray_session, tmp_path_factory) -> Lake:
    """The tiny synthetic lake, validated and merged. Read-only: copy it before changing it."""
    from jobs import generate, merge, validate

    lake = Lake(tmp_path_factory.mktemp("tiny") / "lake")
    generate.main(generate.GenerateConfig(scale="tiny", seed=TINY_SEED), lake)
    checked = validate.main(validate.ValidateConfig(), lake)
    assert checked.exit_code == 0, [v.line() for v in checked.violations]
    merged = merge.main(merge.MergeConfig(), lake)
    assert merged.exit_code == 0, merged.failed
    return lake


@pytest.fixture
def raw_copy(tiny_lake: Lake, tmp_path: Path) -> Lake:
    """A private copy of the tiny lake's raw zone (no curated tables yet)."""
    target = Lake(tmp_path / "lake")
    shutil.copytree(tiny_lake.root / "raw", target.root / "raw")
    return target


@pytest.fixture
def lake_copy(tiny_lake: Lake, tmp_path: Path) -> Lake:
    """A private copy of the tiny lake with its curated zone."""
    target = Lake(tmp_path / "lake")
    for zone in ("raw", "curated", "truth"):
        shutil.copytree(tiny_lake.root / zone, target.root / zone)
    return target


@pytest.fixture(scope="session")
def chain_lake(ray_session, tmp_path_factory) -> Lake:
    """The `chain` lake (seed 42): 30 cities × 20 stores, a small catalogue, 400 days — what the
    location family needs to learn from (about 90 s to generate and merge). Read-only."""
    from jobs import generate, merge

    lake = Lake(tmp_path_factory.mktemp("chain") / "lake")
    generate.main(generate.GenerateConfig(scale="chain", seed=42), lake)
    merged = merge.main(merge.MergeConfig(), lake)
    assert merged.exit_code == 0, merged.failed
    return lake


@pytest.fixture(scope="session")
def small_lake(ray_session, tmp_path_factory) -> Lake:
    """The small lake (seed 42), generated and merged once for the quality tests (about 100 s).
    Read-only."""
    from jobs import generate, merge

    lake = Lake(tmp_path_factory.mktemp("small") / "lake")
    generate.main(generate.GenerateConfig(scale="small", seed=42), lake)
    assert merge.main(merge.MergeConfig(), lake).exit_code == 0
    return lake
