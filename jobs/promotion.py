"""Who becomes champion: the promotion gate and the sanity checks on a candidate's answers. The
moves themselves (promote, refuse, roll back, the champion's history) are the registry facade's,
models/registry.py: `Registry`.

A candidate is promoted when it (1) beats every baseline its gate names, on the holdout of its own
training run, (2) is not worse than the champion's main metric by more than the tolerance, and
(3) answers sanely when loaded from the registry exactly as serving loads it. A refused candidate
stays registered, tagged with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from models.families import FAMILIES
from models.family import Gate


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
