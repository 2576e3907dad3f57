"""Where a model's work runs: in this process (`Local`, the default, so that a model can be fitted
in a notebook without a cluster) or as Ray tasks (`OnRay`, what the jobs pass). A model says what
its pieces need (CPUs, data shared by every piece); the executor decides where they run.

    forecaster = DemandForecaster(config).fit(data)                      # here, all cores
    forecaster = DemandForecaster(config, executor=OnRay()).fit(data)    # on the cluster
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Executor:
    """Runs a model's independent pieces of work."""

    distributed = False  # whether pieces may run on other machines (data-parallel training needs it)

    def node_cpus(self) -> list[int]:
        """Whole CPUs of each machine work can go to."""
        raise NotImplementedError

    def call(self, fn: Callable[..., R], *args: Any, num_cpus: int = 1) -> R:
        """fn(*args) as one piece that uses `num_cpus` threads."""
        raise NotImplementedError

    def map(self, fn: Callable[[Any, T], R], shared: Any, items: Sequence[T], num_cpus: int = 1) -> list[R]:
        """[fn(shared, item) for item in items], `shared` handed to the pieces once."""
        raise NotImplementedError


class Local(Executor):
    """Everything in this process, one piece after the other (each may use every core)."""

    def node_cpus(self) -> list[int]:
        return [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1]

    def call(self, fn: Callable[..., R], *args: Any, num_cpus: int = 1) -> R:
        return fn(*args)

    def map(self, fn: Callable[[Any, T], R], shared: Any, items: Sequence[T], num_cpus: int = 1) -> list[R]:
        return [fn(shared, item) for item in items]


class OnRay(Executor):
    """Ray tasks on the cluster this process is connected to (`ray.init` first): each piece
    asks for its CPUs, shared data goes to the object store once."""

    distributed = True

    def __init__(self) -> None:
        import ray

        if not ray.is_initialized():
            raise RuntimeError("OnRay needs a connected Ray cluster: call ray.init() (the jobs do) or use Local()")

    def node_cpus(self) -> list[int]:
        import ray

        return [int(n["Resources"].get("CPU", 0)) for n in ray.nodes()
                if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1]

    def call(self, fn: Callable[..., R], *args: Any, num_cpus: int = 1) -> R:
        import ray

        return ray.get(ray.remote(num_cpus=num_cpus)(fn).remote(*args))

    def map(self, fn: Callable[[Any, T], R], shared: Any, items: Sequence[T], num_cpus: int = 1) -> list[R]:
        import ray

        if len(items) < 2:  # nothing to spread: no object-store round trip
            return [fn(shared, item) for item in items]
        task, ref = ray.remote(num_cpus=num_cpus)(fn), ray.put(shared)
        return ray.get([task.remote(ref, item) for item in items])
