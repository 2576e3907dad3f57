"""The MLflow registry as Quanyu uses it: one registered model per family (`quanyu-<family>`),
aliases `candidate` and `champion`. `Registry` is the one facade serving, batch scoring, the
retrain and the command line go through: load a version's predictor by alias or number, read
aliases, metrics, lineage and the champion's history, promote, refuse and roll back. Who may
become champion (the gate) is the jobs' business (jobs/promotion.py); how a move is recorded is
this module's."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

CANDIDATE, CHAMPION = "candidate", "champion"
HISTORY_TAG = "champion_history"  # every champion move, on the registered model: what rollback walks back


def registered_name(family: str) -> str:
    return f"quanyu-{family}"


def set_alias(family: str, version: str | int, alias: str, client: MlflowClient | None = None) -> None:
    """Point `models:/quanyu-<family>@<alias>` at `version`."""
    (client or MlflowClient()).set_registered_model_alias(registered_name(family), alias, str(version))


def model_uri(family: str, alias: str = CHAMPION) -> str:
    return f"models:/{registered_name(family)}@{alias}"


def use_experiment(name: str, artifact_root: str | None) -> None:
    """Make `name` the active experiment, creating it with its artifacts under `artifact_root`
    (a local folder or object-store URI) when it does not exist yet."""
    client = MlflowClient()
    if client.get_experiment_by_name(name) is None:
        location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
        if location and "://" not in location:
            location = Path(location).resolve().as_uri()
        client.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(name)


@dataclass(frozen=True)
class LoadedVersion:
    """A registered version loaded through its own code: the pyfunc MLflow loaded and the
    family's predictor inside it (checked against the family's contract)."""

    family: str
    version: str
    run_id: str | None
    pyfunc: Any
    predictor: Any
    path: str | None = None  # the local copy of its artifacts, when load_version was told where


def load_version(family: str, tracking_uri: str | None = None, *, alias: str | None = None,
                 version: str | int | None = None, download_to: str | Path | None = None,
                 loader: Callable[[str], Any] | None = None) -> LoadedVersion:
    """The one way jobs, serving and benchmarks get a family's model from the registry: the
    version `alias` points at (looked up once, so a moving alias cannot mix two versions) or the
    numbered `version`, loaded as MLflow loads it (its pyfunc, its logged code on sys.path; in a
    process that already imported Quanyu's `models`, those modules answer) and its predictor taken
    through the family's contract — the same path serving, batch scoring and the gate take, so
    one version answers alike in all three.
    `tracking_uri` (else the current one) becomes the current one: MLflow resolves `models:/`
    URIs there. `download_to`: copy its artifacts into that folder first and load from there
    (workers then load the same copy with load_local). `loader` replaces
    mlflow.pyfunc.load_model.
    Raises MlflowException when the alias or version does not exist, IncompatibleVersion when
    the version speaks another predictor contract."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    name = registered_name(family)
    if version is None:
        version = client.get_model_version_by_alias(name, alias or CHAMPION).version
    info = client.get_model_version(name, str(version))
    uri = f"models:/{name}/{version}"
    path = None
    if download_to is not None:
        path = mlflow.artifacts.download_artifacts(uri, dst_path=str(download_to))
        uri = path
    pyfunc = (loader or mlflow.pyfunc.load_model)(uri)
    return LoadedVersion(family, str(version), info.run_id, pyfunc, _predictor(family, pyfunc), path)


def load_local(family: str, path: str | Path) -> Any:
    """The predictor of a version whose artifacts load_version(download_to=…) copied to `path`."""
    return _predictor(family, mlflow.pyfunc.load_model(str(path)))


def _predictor(family: str, pyfunc) -> Any:
    from models.families import family as family_of  # the registry of families imports every package

    return family_of(family).predictor(pyfunc)


class Registry:
    """The registry at `tracking_uri` (else the current one), as every caller uses it."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)

    # --- reading ---------------------------------------------------------------------------------
    def load(self, family: str, *, alias: str | None = None, version: str | int | None = None,
             download_to: str | Path | None = None, loader: Callable[[str], Any] | None = None) -> LoadedVersion:
        """A version and its predictor, as serving, batch scoring and the gate load it (load_version)."""
        return load_version(family, self.tracking_uri, alias=alias, version=version, download_to=download_to,
                            loader=loader)

    def version(self, family: str, alias: str, missing_ok: bool = True) -> str | None:
        """The version `alias` points at; None when the model or the alias does not exist (with
        `missing_ok=False`, MLflow's exception: its error code tells a missing alias from a store
        that is down)."""
        try:
            return str(self.client.get_model_version_by_alias(registered_name(family), alias).version)
        except MlflowException:
            if missing_ok:
                return None
            raise

    def run_of(self, family: str, version: str):
        """The training run that registered `version`."""
        return self.client.get_run(self.client.get_model_version(registered_name(family), version).run_id)

    def metrics(self, family: str, version: str) -> dict[str, float]:
        """The metrics its training run logged ({} when the run is gone)."""
        info = self.client.get_model_version(registered_name(family), version)
        try:
            return dict(self.client.get_run(info.run_id).data.metrics)
        except MlflowException:
            return {}

    def tags(self, family: str, version: str) -> dict[str, str]:
        """The version's tags: its lineage (lake days, datasets, commit, config), gate verdicts."""
        return dict(self.client.get_model_version(registered_name(family), version).tags)

    def check_artifacts(self, family: str, version: str) -> None:
        """Raises when the version's model files cannot be read from the artifact store (reads
        its small MLmodel file only)."""
        import tempfile

        source = self.client.get_model_version_download_uri(registered_name(family), version)
        with tempfile.TemporaryDirectory() as scratch:
            mlflow.artifacts.download_artifacts(artifact_uri=f"{source.rstrip('/')}/MLmodel", dst_path=scratch,
                                                tracking_uri=self.tracking_uri)

    def history(self, family: str) -> list[dict]:
        """Every champion move, oldest first: version, when, by whom, the previous champion."""
        try:
            model = self.client.get_registered_model(registered_name(family))
        except MlflowException:
            return []
        return json.loads(model.tags.get(HISTORY_TAG, "[]"))

    def versions(self, family: str, metric: str) -> list[dict]:
        """Every version, newest first, with aliases, `metric`, gate verdict and lineage."""
        name = registered_name(family)
        found = sorted(self.client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), reverse=True)
        aliases: dict[str, list[str]] = {}
        for alias in (CHAMPION, CANDIDATE):
            version = self.version(family, alias)
            if version:
                aliases.setdefault(version, []).append(alias)
        out = []
        for v in found:
            created = dt.datetime.fromtimestamp(v.creation_timestamp / 1000, dt.timezone.utc)
            out.append({"version": str(v.version), "created": created.isoformat(timespec="seconds"),
                        "aliases": aliases.get(str(v.version), []),
                        metric: self.metrics(family, str(v.version)).get(metric),
                        "gate": v.tags.get("refused") and f"refused: {v.tags['refused']}" or v.tags.get("gate", ""),
                        "lake_days": f"{v.tags.get('lake_first_dt', '?')} … {v.tags.get('lake_last_dt', '?')}",
                        "git_commit": v.tags.get("git_commit", "")[:10], "run_id": v.run_id,
                        "lake_commit": v.tags.get("lake_commit"),
                        "lake_snapshots": json.loads(v.tags.get("lake_snapshots") or "{}")})
        return out

    # --- moving ----------------------------------------------------------------------------------
    def set_alias(self, family: str, version: str | int, alias: str) -> None:
        set_alias(family, version, alias, self.client)

    def tag(self, family: str, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(registered_name(family), version, key, value)

    def promote(self, family: str, version: str, reason: str, by: str) -> str | None:
        """Point `champion` at `version`, record it in the history and on the version; returns the
        previous champion. Raises MlflowException when there is no such version."""
        name = registered_name(family)
        self.client.get_model_version(name, version)
        previous = self.version(family, CHAMPION)
        self.client.set_registered_model_alias(name, CHAMPION, version)
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        entries = self.history(family) + [{"version": version, "at": now, "by": by, "previous": previous}]
        self.client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(entries[-50:]))
        self.tag(family, version, "promoted_at", now)
        self.tag(family, version, "gate", reason[:4000])
        if "refused" in self.tags(family, version):  # promoted by hand after a refusal
            self.client.delete_model_version_tag(name, version, "refused")
        return previous

    def refuse(self, family: str, version: str, reason: str) -> None:
        """Tag the version with why it may not become champion."""
        self.tag(family, version, "refused", reason[:4000])

    def rollback(self, family: str) -> tuple[str, str]:
        """Move `champion` back to the version it pointed at before the current one. Returns
        (from, to); ValueError when there is nothing to roll back to."""
        current = self.version(family, CHAMPION)
        if current is None:
            raise ValueError(f"quanyu-{family} has no champion to roll back")
        earlier = [e["version"] for e in self.history(family) if e["version"] != current]
        if not earlier:
            raise ValueError(f"quanyu-{family} v{current} is the only champion it has had; nothing to roll back to")
        target = earlier[-1]
        self.promote(family, target, f"rollback from v{current}", by="rollback")
        return current, target
