"""What one family's deployment holds: the served version of `models:/quanyu-<family>@champion`
(or another alias), and how it moves to a new one without dropping a request.

`FamilyModel.check()` asks the registry where the alias points. When it moved, the new version is
loaded beside the old one, smoke-tested on a request the family knows how to make, and only then
swapped in (one assignment: requests in flight finish on the object they started with). If the
load or the smoke test fails, the old version keeps serving and `last_error` says why. This class
knows nothing about Ray Serve, so it is tested on its own.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from models.families import FAMILIES as REGISTRY
from models.registry import Registry

FAMILIES = REGISTRY  # the served families: the registry itself (plugins included), in its order
# what the registry answers when the model or its alias does not exist (yet): the store is fine
NOT_THERE_YET = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


@dataclass
class Loaded:
    """One loaded version: the pyfunc model and the family's predictor inside it."""

    version: str
    pyfunc: Any
    predictor: Any
    loaded_at: str
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None


def smoke_test(family: str, predictor) -> None:
    """One real request against a freshly loaded predictor. Raises when it cannot answer."""
    if family not in REGISTRY:
        raise ValueError(f"unknown family {family!r}")
    REGISTRY[family].smoke_test(predictor)


class FamilyModel:
    """The served version of one family, following an alias in the MLflow registry."""

    def __init__(self, family: str, tracking_uri: str, alias: str = "champion",
                 loader: Callable[[str], Any] | None = None) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
        self.family = family
        self.tracking_uri = tracking_uri
        self.alias = alias
        self.current: Loaded | None = None
        self.champion: str | None = None  # the version the alias named at the last read of the registry
        self.last_error: str | None = None
        self.last_check: str | None = None
        self.store_down = False  # the last check could not read the registry (not: the alias is missing)
        self._lock = threading.Lock()
        self._loader = loader

    @property
    def name(self) -> str:
        return f"quanyu-{self.family}"

    def _registry(self) -> Registry:
        return Registry(self.tracking_uri)

    def _load(self, version: str) -> Loaded:
        loaded = self._registry().load(self.family, version=version, loader=self._loader)
        smoke_test(self.family, loaded.predictor)
        metrics: dict[str, float] = {}
        try:
            logged = self._registry().metrics(self.family, version)  # {} for a run deleted from the store
            metrics = {k: logged[k] for k in REGISTRY[self.family].served_metrics if k in logged}
        except Exception:  # the store went down meanwhile: serve the model, show no metrics
            pass
        return Loaded(version=loaded.version, pyfunc=loaded.pyfunc, predictor=loaded.predictor,
                      loaded_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), metrics=metrics,
                      run_id=loaded.run_id)

    def check(self) -> bool:
        """Follow the alias: load, smoke-test and swap in a new version. True when it swapped.
        Never raises: a failure is kept in `last_error` and the served version stays."""
        with self._lock:
            self.last_check = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            try:
                version = self._registry().version(self.family, self.alias, missing_ok=False)
            except Exception as exc:  # no alias yet, or the tracking store is down or locked
                self.store_down = getattr(exc, "error_code", None) not in NOT_THERE_YET
                self.last_error = f"cannot read {self.name}@{self.alias}: {_first_line(exc)}"
                return False
            self.store_down = False
            self.champion = version
            if self.current is not None and self.current.version == version:
                # the store is back, or the alias is back on the served version; its artifacts must
                # still be readable, or a replica that restarts could not load what this one serves
                self.last_error = self._unreadable(version)
                return False
            try:
                loaded = self._load(version)
            except Exception as exc:
                self.last_error = f"version {version} refused: {_first_line(exc)}"
                return False
            self.current = loaded  # the swap: one reference assignment
            self.last_error = None
            return True

    def _unreadable(self, version: str) -> str | None:
        """None when the version's model files can still be read from the artifact store, else
        what a restarted replica would meet. Reads the small MLmodel file only."""
        if self._loader is not None:  # a test's own loader: no artifact store behind it
            return None
        try:
            self._registry().check_artifacts(self.family, version)
        except Exception as exc:
            return (f"version {version}'s artifacts cannot be read ({_first_line(exc)}); this replica serves it "
                    "from memory, a restarted one could not load it: restore the artifacts or promote another version")
        return None

    @property
    def ready(self) -> bool:
        """False when the family has a champion this replica does not hold (its load failed):
        Serve's health check then replaces the replica and routes around it. A family that has
        never had a champion is ready: every replica answers 503 alike until one is promoted."""
        return self.current is not None or self.champion is None

    def status(self) -> dict:
        c = self.current
        return {"family": self.family, "alias": self.alias, "version": c.version if c else None,
                "loaded_at": c.loaded_at if c else None, "metrics": c.metrics if c else {},
                "last_check": self.last_check, "last_error": self.last_error}


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc) or type(exc).__name__
    return text.strip().splitlines()[0][:300]


class Poller:
    """Calls `check()` every `interval` seconds in a daemon thread, backing off (×2, up to
    `max_interval`) while the registry cannot be read."""

    def __init__(self, model: FamilyModel, interval: float, max_interval: float = 60.0) -> None:
        self.model, self.interval, self.max_interval = model, interval, max_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reload-{model.family}", daemon=True)

    def start(self) -> "Poller":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            self.model.check()
            failing = bool(self.model.last_error and self.model.last_error.startswith("cannot read"))
            wait = min(wait * 2, self.max_interval) if failing else self.interval


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
