"""The retrain reserves each family's memory from Ray: families that fit on a node together train
at once, families that do not wait for each other, and a family larger than every node still runs."""

from __future__ import annotations

import time

import pytest

from models.families import FAMILIES
from jobs.retrain import _train_all, memory_reservations

GB = 2**30


def node(cpus: float, memory_gb: float, alive: bool = True) -> dict:
    return {"Alive": alive, "Resources": {"CPU": cpus, "memory": memory_gb * GB}}


def test_reservations_are_capped_at_the_largest_node_with_cpus():
    nodes = [node(0, 64), node(2, 16), node(4, 12), node(8, 100, alive=False)]
    got = memory_reservations({"demand": 17 * GB, "matching": 8 * GB}, nodes)
    assert got == {"demand": 16 * GB, "matching": 8 * GB}


def test_no_reservation_when_no_node_with_cpus_is_up_or_when_turned_off():
    # under the fake autoscaler the head has memory but no CPUs, and its worker types cannot
    # declare memory: a memory request would never be met, so none is made
    assert memory_reservations({"demand": GB}, [node(0, 16)]) == {}
    assert memory_reservations({"demand": GB}, [node(2, 16)], mode="never") == {}
    assert memory_reservations({"demand": 40 * GB}, [node(2, 16)], mode="always") == {"demand": 40 * GB}


def test_footprints_grow_with_the_rows_each_family_reads(tiny_lake):
    for family, job in FAMILIES.items():
        rows = tiny_lake.count_rows("curated", job.memory.table)
        assert rows == tiny_lake.read_all("curated", job.memory.table).num_rows > 0, family
        assert job.memory.bytes(tiny_lake) == int(job.memory.base_gb * GB + job.memory.bytes_per_row * rows)


def _spans(ray_session, share: float) -> dict[str, tuple[float, float]]:
    """Two 1-CPU families, each reserving `share` of the node's memory: when each ran."""
    (only,) = [n for n in ray_session.nodes() if n["Alive"]]
    memory = {f: int(share * only["Resources"]["memory"]) for f in ("demand", "matching")}

    def task(family: str) -> tuple[float, float]:
        started = time.time()
        time.sleep(1.5)
        return started, time.time()

    spans: dict[str, tuple[float, float]] = {}
    _train_all(["demand", "matching"], {f: (f,) for f in memory}, True, spans.__setitem__, memory, task=task)
    return spans


@pytest.mark.parametrize("share, overlap", [(0.3, True), (0.6, False)])
def test_families_that_do_not_fit_together_run_one_after_another(ray_session, share, overlap):
    spans = _spans(ray_session, share)
    (a0, a1), (b0, b1) = sorted(spans.values())
    assert (b0 < a1) is overlap, spans
