"""The retrain reserves each family's memory from Ray: families that fit on a node together train
at once, families that do not wait for each other, and a family larger than every node still runs."""

from __future__ import annotations

import time


from models.families import FAMILIES
from jobs.retrain import train_all, memory_reservations

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


class Signals:
    """What the families' tasks tell each other (a Ray actor): who started, who ended, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []

    def mark(self, event: str, family: str) -> None:
        self.log.append((event, family))

    def started(self, family: str) -> bool:
        return ("start", family) in self.log

    def events(self) -> list[tuple[str, str]]:
        return list(self.log)


def _task(family: str, other: str, signals, patience: float) -> None:
    """Say it started, hold its reservation until the other family has started too (then both ran
    at once: it returns at once) or `patience` seconds passed (the other is waiting), say it ended."""
    import ray

    ray.get(signals.mark.remote("start", family))
    deadline = time.monotonic() + patience
    while not ray.get(signals.started.remote(other)) and time.monotonic() < deadline:
        time.sleep(0.05)
    ray.get(signals.mark.remote("end", family))


def _events(ray_session, share: float, patience: float) -> list[tuple[str, str]]:
    """Two 1-CPU families, each reserving `share` of the node's memory: the order in which they
    started and ended."""
    (only,) = [n for n in ray_session.nodes() if n["Alive"]]
    memory = {f: int(share * only["Resources"]["memory"]) for f in ("demand", "matching")}
    signals = ray_session.remote(num_cpus=0)(Signals).remote()
    args = {"demand": ("demand", "matching", signals, patience), "matching": ("matching", "demand", signals, patience)}
    failed: dict = {}
    train_all(["demand", "matching"], args, True,
              lambda family, got: isinstance(got, Exception) and failed.setdefault(family, got), memory, task=_task)
    assert failed == {}
    return ray_session.get(signals.events.remote())


def test_families_that_fit_together_run_at_once(ray_session):
    events = _events(ray_session, 0.3, patience=120)  # returns as soon as both started: no fixed wait
    assert [e for e, _ in events] == ["start", "start", "end", "end"], events


def test_families_that_do_not_fit_together_run_one_after_another(ray_session):
    events = _events(ray_session, 0.6, patience=3)  # the first holds its memory 3 s: the second may not start
    first, second = events[0][1], events[2][1]
    assert events == [("start", first), ("end", first), ("start", second), ("end", second)] and first != second, events
