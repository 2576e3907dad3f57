"""Who becomes champion: the promotion gate, the sanity checks on a candidate's answers, and the
registry moves people make by hand (`quanyu models promote | rollback`).

A candidate is promoted when it (1) beats every baseline its gate names, on the holdout of its own
training run, (2) is not worse than the champion's main metric by more than the tolerance, and
(3) answers sanely when loaded from the registry exactly as serving loads it. A refused candidate
stays registered, tagged with the reason. Every champion move is appended to the registered
model's `champion_history` tag, which is what `rollback` walks back.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from models.families import FAMILIES
from models.family import Gate
from models.registry import CANDIDATE, CHAMPION, registered_name

HISTORY_TAG = "champion_history"


def default_gates() -> dict[str, Gate]:
    """Each family's built-in gate (its `Family.gate`), read from the registry when asked."""
    return {name: family.gate for name, family in FAMILIES.items()}


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    champion_version: str | None = None
    champion_metric: float | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def _better(a: float, b: float, higher_is_better: bool) -> bool:
    return a > b if higher_is_better else a < b


def decide(gate: Gate, metrics: dict[str, float], champion_metrics: dict[str, float] | None,
           champion_version: str | None, sanity: list[str], champion_basis: str = "") -> Decision:
    """The gate's verdict on a candidate's metrics (and its sanity-check failures). The champion's
    metrics are on the candidate's holdout when the caller could score it there; `champion_basis`
    says how they were obtained and goes into the reason."""
    decision = Decision(promote=True, champion_version=champion_version)
    basis = f", {champion_basis}" if champion_basis else ""
    value = metrics.get(gate.metric)
    if value is None or not math.isfinite(value):
        return Decision(False, [f"no finite {gate.metric} in the candidate's run"], champion_version)
    for baseline in gate.beat:
        other = metrics.get(baseline)
        if other is None or not math.isfinite(other):
            decision.reasons.append(f"baseline {baseline} missing: cannot show the candidate beats it")
            decision.promote = False
        elif not _better(value, other, gate.higher_is_better):
            decision.reasons.append(f"{gate.metric} {value:.4f} does not beat {baseline} {other:.4f}")
            decision.promote = False
    if champion_metrics is not None and gate.metric in champion_metrics:
        best = champion_metrics[gate.metric]
        decision.champion_metric = best
        allowed = best * (1 - gate.champion_tolerance) if gate.higher_is_better else best * (1 + gate.champion_tolerance)
        if _better(allowed, value, gate.higher_is_better):
            decision.reasons.append(f"{gate.metric} {value:.4f} is worse than champion v{champion_version}'s "
                                    f"{best:.4f}{basis} beyond the {gate.champion_tolerance:.0%} tolerance")
            decision.promote = False
    for problem in sanity:
        decision.reasons.append(f"sanity: {problem}")
        decision.promote = False
    if decision.promote:
        against = ", ".join(gate.beat) or "no baseline"
        champion = (f"; within tolerance of champion v{champion_version} ({decision.champion_metric:.4f}{basis})"
                    if decision.champion_metric is not None else "; first champion")
        decision.reasons.append(f"{gate.metric} {value:.4f} beats {against}{champion}; sanity checks passed")
    return decision


def below_baseline(family: str, metrics: dict[str, float], gate: Gate | None = None) -> str | None:
    """Why a trained model does not beat the baselines of its gate (the family's built-in gate
    unless given), or None when it does: what `quanyu train` warns about and tags the version with."""
    decision = decide(gate or FAMILIES[family].gate, metrics, None, None, [])
    return None if decision.promote else decision.reason


# --- sanity checks on a loaded candidate --------------------------------------------------------

def sanity_problems(family: str, predictor, sample: int = 20) -> list[str]:
    """What is wrong with a candidate's answers on a sample of real requests (empty: nothing)."""
    try:
        return FAMILIES[family].sanity(predictor, sample)
    except Exception as exc:  # a model that cannot answer at all
        return [f"a sample request failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"]


# --- the registry ---------------------------------------------------------------------------------

def version_metrics(client: MlflowClient, family: str, version: str) -> dict[str, float]:
    info = client.get_model_version(registered_name(family), version)
    try:
        return dict(client.get_run(info.run_id).data.metrics)
    except MlflowException:
        return {}


def alias_version(client: MlflowClient, family: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(registered_name(family), alias).version)
    except MlflowException:
        return None


def history(client: MlflowClient, family: str) -> list[dict]:
    try:
        model = client.get_registered_model(registered_name(family))
    except MlflowException:
        return []
    return json.loads(model.tags.get(HISTORY_TAG, "[]"))


def promote(client: MlflowClient, family: str, version: str, reason: str, by: str) -> str | None:
    """Point `champion` at `version`, record it in the history and on the version; returns the
    previous champion."""
    name = registered_name(family)
    client.get_model_version(name, version)  # raises when there is no such version
    previous = alias_version(client, family, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, version)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    entries = history(client, family) + [{"version": version, "at": now, "by": by, "previous": previous}]
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(entries[-50:]))
    client.set_model_version_tag(name, version, "promoted_at", now)
    client.set_model_version_tag(name, version, "gate", reason[:4000])
    if "refused" in client.get_model_version(name, version).tags:  # promoted by hand after a refusal
        client.delete_model_version_tag(name, version, "refused")
    return previous


def refuse(client: MlflowClient, family: str, version: str, reason: str) -> None:
    client.set_model_version_tag(registered_name(family), version, "refused", reason[:4000])


def rollback(client: MlflowClient, family: str) -> tuple[str, str]:
    """Move `champion` back to the version it pointed at before the current one. Returns (from, to)."""
    current = alias_version(client, family, CHAMPION)
    if current is None:
        raise ValueError(f"quanyu-{family} has no champion to roll back")
    earlier = [e["version"] for e in history(client, family) if e["version"] != current]
    if not earlier:
        raise ValueError(f"quanyu-{family} v{current} is the only champion it has had; nothing to roll back to")
    target = earlier[-1]
    promote(client, family, target, f"rollback from v{current}", by="rollback")
    return current, target


def describe_versions(client: MlflowClient, family: str, metric: str) -> list[dict]:
    """Every version of a family, newest first, with aliases, main metric, gate verdict, lineage."""
    name = registered_name(family)
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), reverse=True)
    aliases = {}
    for alias in (CHAMPION, CANDIDATE):
        version = alias_version(client, family, alias)
        if version:
            aliases.setdefault(version, []).append(alias)
    out = []
    for v in versions:
        metrics = version_metrics(client, family, v.version)
        out.append({"version": str(v.version), "created": dt.datetime.fromtimestamp(v.creation_timestamp / 1000,
                                                                                    dt.timezone.utc).isoformat(timespec="seconds"),
                    "aliases": aliases.get(str(v.version), []), metric: metrics.get(metric),
                    "gate": v.tags.get("refused") and f"refused: {v.tags['refused']}" or v.tags.get("gate", ""),
                    "lake_days": f"{v.tags.get('lake_first_dt', '?')} … {v.tags.get('lake_last_dt', '?')}",
                    "git_commit": v.tags.get("git_commit", "")[:10], "run_id": v.run_id})
    return out
