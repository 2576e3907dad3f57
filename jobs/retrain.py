"""Job: the daily retrain. One command turns a new day of raw data into new champions.

    validate every day about to be merged (new and backfilled days, the dimension tables;
    quarantine what fails, and stop there unless on_quarantine: continue) → incremental merge →
    train the families in parallel (Ray tasks) → sanity-check and gate each candidate → promote
    or refuse → serving follows the `champion` alias by itself

Everything is logged under one parent MLflow run (experiment `quanyu-retrain`); each family's
training run is its child (`mlflow.parentRunId`) in the family's own experiment.

Idempotent and resumable: the state of each date lives in QUANYU_HOME/retrain/<date>.json and is
written after every step. A step whose inputs did not change since it finished is not redone, so
the same date twice promotes nothing new, and a run killed half-way finishes the rest when started
again. Exit status: 0 done (promoted or not), 1 data rejected, 2 failure, 3 partitions
quarantined (stopped before the merge, or trained on what passed with on_quarantine: continue).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Literal

from pydantic import AfterValidator, Field, field_validator

from jobs.promotion import Gate, decide, default_gates, sanity_problems
from lake.location import store_env
from lake.store import Lake
from models.config import FamilyConfig
from models.families import FAMILIES, plugin_env, family as known_family
from models.registry import CHAMPION, Registry

EXIT_DONE, EXIT_REJECTED, EXIT_FAILED, EXIT_QUARANTINED = 0, 1, 2, 3
Family = Annotated[str, AfterValidator(lambda name: known_family(name).name)]  # a family of the registry


class RetrainConfig(FamilyConfig):
    """configs/retrain.yaml."""

    families: list[Family] = Field(default_factory=lambda: list(FAMILIES))
    parallel: bool = Field(True, description="train the families at once (each a Ray task), else one after another")
    configs: dict[Family, str] = Field(default_factory=dict,
                                       description="family config files [default: configs/<family>.yaml]")
    gates: dict[Family, Gate] = Field(default_factory=default_gates, description="each family's gate [default: "
                                      "the family's built-in one, models/<family>/family.py]")
    on_quarantine: Literal["stop", "continue"] = Field(
        "stop", description="when validation quarantines partitions: stop before the merge (exit 3, no alias "
        "moves; a second run goes on without them), or merge and train on what passed (exit 3 at the end)")
    reserve_memory: Literal["auto", "always", "never"] = Field(
        "auto", description="reserve each family's estimated memory from Ray, so families that do not fit "
        "on a node together run one after another: auto when some node with CPUs could hold one family "
        "(not under the fake autoscaler, whose node types cannot declare memory)")

    @field_validator("gates")
    @classmethod
    def _every_family_gated(cls, gates: dict[str, Gate]) -> dict[str, Gate]:
        """A family whose gate the file does not give keeps its built-in one."""
        return {**default_gates(), **gates}


@dataclass
class FamilyOutcome:
    family: str
    status: str = "pending"  # trained → promoted | refused; failed; skipped (done earlier)
    version: str | None = None
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    champion_version: str | None = None
    champion_metric: float | None = None
    reason: str = ""
    seconds: float = 0.0
    rows: int | None = None


@dataclass
class RetrainResult:
    date: str
    exit_code: int = EXIT_DONE
    message: str = ""
    quarantined: list[dict] = field(default_factory=list)
    merged_days: int = 0
    families: dict[str, FamilyOutcome] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)
    parent_run_id: str | None = None
    resumed: list[str] = field(default_factory=list)


# --- state ------------------------------------------------------------------------------------------

class State:
    """What is finished for one date; rewritten (atomically) after every step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, default=None):
        return self.data.get(key, default)

    def put(self, key: str, value) -> None:
        self.data[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_digest(lake: Lake) -> str:
    """What the families would read: the merge manifest of the lake's commit (a fingerprint of
    every merged raw day) and the dimension files."""
    record = lake.tables.commit_record()
    dims = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for t in ("products", "stores", "candidate_sites",
                                                                          "members", "calendar", "promotions", "prices")
            for p in lake.files("raw", t)]
    return _digest([record.manifest if record else {}, dims])


# --- training, in a Ray task --------------------------------------------------------------------------

def _train_one(family: str, config_json: str, config_path: str | None, lake: Lake, tracking_uri: str,
               artifact_root: str | None, run_tags: dict) -> dict:
    from jobs import train

    config = known_family(family).config_class().model_validate_json(config_json)
    result = train.main(family, config, lake, tracking_uri, config_path=config_path,
                        artifact_root=artifact_root, run_tags=run_tags)
    return {"version": result.version, "run_id": result.run_id, "metrics": result.metrics,
            "seconds": result.seconds}


def plugins_travel(lake: Lake | None = None) -> dict:
    """Ray options that carry the plugin families (QUANYU_FAMILIES), and what reaches a lake on a
    store (its endpoint and keys), to the retrain's tasks on a cluster started without them."""
    env = {**plugin_env(), **(store_env(lake.root) if lake is not None else {})}
    return {"runtime_env": {"env_vars": env}} if env else {}


def memory_reservations(estimates: dict[str, int], nodes: list[dict], mode: str = "auto") -> dict[str, int]:
    """What each family reserves from Ray's `memory` resource: its estimate, capped at the largest
    node with CPUs (a family bigger than every node then runs alone on the largest one instead of
    waiting forever). `nodes` are ray.nodes() entries. Under "auto", nothing is reserved when no
    node with CPUs is up: an autoscaler then adds nodes for the CPUs the tasks ask for, and the fake
    multi-node provider's node types cannot declare memory, so a memory request would never be
    met there. "always" reserves the estimates as they are (a cloud autoscaler whose node types
    declare memory); "never" reserves nothing."""
    if mode == "never":
        return {}
    if mode == "always":
        return dict(estimates)
    largest = max((n["Resources"].get("memory", 0) for n in nodes
                   if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1), default=0)
    return {f: int(min(b, largest)) for f, b in estimates.items()} if largest else {}


def train_all(todo: list[str], args: dict[str, tuple], parallel: bool, on_done, memory: dict[str, int] | None = None,
              task=None, lake: Lake | None = None) -> None:
    """Run task(*args[family]) (default `_train_one`) for each family as a Ray task (all at once
    when parallel, else one after another), each reserving memory[family] bytes when given, and
    call on_done(family, result or exception) as each one ends, so a finished family is gated and
    recorded while the others still train."""
    import ray

    # SPREAD: one family per node while there are nodes. A family's task waits, CPU released, on
    # its training task; without SPREAD the next family could land on the same node, and one lost
    # node would take several families (or, by luck, none) with it
    remote = ray.remote(num_cpus=1, max_retries=0, scheduling_strategy="SPREAD", **plugins_travel(lake))(task or _train_one)
    memory = memory or {}
    queue = list(todo)
    running: dict = {}
    while queue or running:
        while queue and (parallel or not running):
            family = queue.pop(0)
            options = {"memory": memory[family]} if memory.get(family) else {}
            running[remote.options(**options).remote(*args[family])] = family
        done, _ = ray.wait(list(running), num_returns=1)
        family = running.pop(done[0])
        try:
            got = ray.get(done[0])
        except Exception as exc:  # the task's error, or its worker / node died
            got = exc
        on_done(family, got)


def _reserve(todo: list[str], lake: Lake, mode: str, say) -> dict[str, int]:
    """The families' memory reservations on the cluster Ray is connected to, said aloud."""
    import ray

    if mode == "never":
        return {}
    estimates = {f: known_family(f).memory.bytes(lake) for f in todo}
    memory = memory_reservations(estimates, ray.nodes(), mode)
    if memory:
        say("memory reserved: " + ", ".join(
            f"{f} {memory[f] / 2**30:.1f} GB" + (f" (estimate {estimates[f] / 2**30:.1f} GB, capped at the largest node)"
                                                 if memory[f] < estimates[f] else "") for f in todo))
    else:
        say("memory not reserved: no node with CPUs is up yet (an autoscaler adds them for the CPUs asked)")
    return memory


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    # a Ray task error ends with the original exception's line
    return (lines[-1] if lines else type(exc).__name__)[:300]


# --- gate -------------------------------------------------------------------------------------------

def _holdout_one(family: str, config_json: str, lake: Lake) -> dict[str, float]:
    from jobs import train

    config = known_family(family).config_class().model_validate_json(config_json)
    return train.holdout_metrics(family, config, lake)


def champion_on_fresh_holdout(family: str, champion: str, candidate_config, candidate_metrics: dict[str, float],
                              lake: Lake, registry: Registry, memory: int | None = None) -> tuple[dict[str, float], str]:
    """The champion's metrics on the candidate's holdout, and how they were obtained.

    Each family's holdout is a backtest that refits its recipe (config + code) at past origins: a
    fixed model trained yesterday has already seen most of today's holdout, so scoring the model
    itself there would flatter it. The champion is therefore re-scored as its recipe: the same
    recipe as the candidate's (same config, same code) scores exactly what the candidate scored;
    another config with the same code is evaluated here, in a Ray task, on the same data. A
    champion trained with other code cannot be re-run, and is compared by its logged holdout.
    `memory`: what the re-scoring task reserves (the family's reservation: it refits the recipe)."""
    from jobs.tracking import git_commit

    run = registry.run_of(family, champion)
    logged = dict(run.data.metrics)
    recorded = run.data.tags.get("config")
    commit = run.data.tags.get("git_commit", "unknown")
    if recorded is None:
        return logged, "its logged holdout (no recipe recorded)"
    if commit != git_commit() or commit == "unknown":
        return logged, f"its logged holdout (trained with other code, {commit[:12]})"
    champion_config = known_family(family).config_class().model_validate_json(recorded)
    if champion_config == candidate_config:
        return candidate_metrics, "the same recipe, so the candidate's score on this holdout"
    import ray

    task = ray.remote(num_cpus=1, max_retries=0, **plugins_travel(lake))(_holdout_one).options(**({"memory": memory} if memory else {}))
    fresh = ray.get(task.remote(family, recorded, lake))
    return fresh, "its recipe re-scored on this holdout"


def gate_candidate(family: str, version: str, metrics: dict[str, float], gate: Gate, tracking_uri: str,
                   config=None, lake: Lake | None = None, memory: int | None = None) -> FamilyOutcome:
    """Load the candidate as serving would, sanity-check it, compare with the champion scored on
    the same holdout (when `config` and `lake` are given), and move the alias (or tag the refusal)."""
    import mlflow

    registry = Registry(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    outcome = FamilyOutcome(family, version=version, metrics=metrics)
    champion = registry.version(family, CHAMPION)
    if champion == version:
        outcome.status, outcome.reason = "promoted", "already the champion"
        return outcome
    champion_metrics, basis = None, ""
    if champion and config is not None and lake is not None:
        try:
            champion_metrics, basis = champion_on_fresh_holdout(family, champion, config, metrics, lake, registry,
                                                                memory)
        except Exception as exc:  # its run deleted, its config no longer valid: fall back, and say so
            champion_metrics = registry.metrics(family, champion)
            basis = f"its logged holdout (could not re-score: {_first_line(exc)[:120]})"
    elif champion:
        champion_metrics = registry.metrics(family, champion)
    try:
        problems = sanity_problems(family, registry.load(family, version=version).predictor)
    except Exception as exc:
        problems = [f"the registered version does not load: {_first_line(exc)}"]
    decision = decide(gate, metrics, champion_metrics, champion, problems, basis)
    outcome.champion_version, outcome.champion_metric = champion, decision.champion_metric
    outcome.reason = decision.reason
    if decision.promote:
        registry.promote(family, version, decision.reason, by="retrain")
        outcome.status = "promoted"
    else:
        registry.refuse(family, version, decision.reason)
        outcome.status = "refused"
    return outcome


# --- validation -------------------------------------------------------------------------------------

def dimension_fingerprint(lake: Lake) -> list:
    """Name, size and modification time of every dimension file: changes when a table does."""
    from lake.contract import DIMENSION_TABLES

    return [[p.parent.name, p.name, p.stat().st_size, p.stat().st_mtime_ns]
            for t in DIMENSION_TABLES for p in lake.files("raw", t)]


def _validate_pending(lake: Lake, date: dt.date, state: State):
    """Validate (quarantining what fails) the days the merge would take now plus `date`, and the
    dimension tables; None when every one of them was validated earlier for this date with the
    same files. Returns the validation result, its quarantined entries naming their rules."""
    from jobs import merge, validate

    days = sorted(set(merge.pending_days(lake)) | {date})
    dims = dimension_fingerprint(lake)
    earlier = state.get("validated")
    earlier = earlier if isinstance(earlier, dict) and earlier.get("dims") == dims else {"days": {}}
    need = [d for d in days if earlier["days"].get(str(d)) != merge.day_fingerprint(lake, d)]
    if not need:
        return None
    checked = validate.main(validate.ValidateConfig(quarantine=True, dates=need, required_dates=[date]), lake)
    checked.quarantined = [{**q, "partition": str(q["partition"]), "rules": sorted(
        {v.rule for v in checked.violations if v.table == q["table"] and str(v.partition) == str(q["partition"])})}
        for q in checked.quarantined]
    if not checked.rejected:
        state.put("validated", {"dims": dims, "days": {**earlier["days"], **{
            str(d): merge.day_fingerprint(lake, d) for d in need}}})
    return checked


def _named(violations: list) -> str:
    """Each broken rule once, with where: what the retrain's message says."""
    seen = dict.fromkeys(f"{v.table}{' dt=' + v.partition if v.partition else ''} {v.rule}" for v in violations)
    names = list(seen)
    return "; ".join(names[:12]) + (f"; and {len(names) - 12} more (quanyu data validate lists them)"
                                    if len(names) > 12 else "")


# --- the job ----------------------------------------------------------------------------------------

def latest_raw_day(lake: Lake) -> dt.date | None:
    """The newest raw day that is not dated in the future (beyond the lake's `future_days`)."""
    from lake.contract import FACT_TABLES

    latest = lake.settings().latest_allowed_day()
    days = [d for t in FACT_TABLES for d in lake.partitions("raw", t) if d <= latest]
    return max(days) if days else None


def main(config: RetrainConfig, lake: Lake, tracking_uri: str, home: Path, date: dt.date | None = None,
         families: list[str] | None = None, artifact_root: str | None = None, say=None) -> RetrainResult:
    """Run (or finish) the daily retrain for `date`. Ray must be initialised."""
    from lake.contract import FACT_TABLES

    started = time.monotonic()
    say = say or (lambda line: print(f"retrain: {line} [{time.monotonic() - started:.0f} s]", file=sys.stderr,
                                     flush=True))
    families = families or list(config.families)
    date = date or latest_raw_day(lake)
    result = RetrainResult(date=str(date))
    if date is None or not any(lake.files("raw", t, date) for t in FACT_TABLES):
        result.exit_code = EXIT_REJECTED
        result.message = (f"no raw sales for {date or 'any day'} under {lake.root}/raw; load the day's "
                          "online_orders / pos_transactions partitions first")
        return result
    state = State(home / "retrain" / f"{date}.json")
    if _validate(config, lake, date, state, result, say) and _merge(lake, result, say):
        from jobs.train import pinned

        lake = pinned(lake)  # every family trains and is gated on the merge's commit
        plan = _plan(config, lake, families, state, result)
        with _parent_run(tracking_uri, artifact_root, date, state, result) as parent:
            mlflow_tags = {"retrain_date": str(date), "families": ",".join(families), "data_digest": plan.data}
            _train_and_gate(plan, config, lake, tracking_uri, artifact_root, parent, mlflow_tags, result, say)
            result.families = {f: result.families[f] for f in families if f in result.families}  # the asked order
            _record(result)
    result.steps["total"] = round(time.monotonic() - started, 1)
    return result


def _validate(config: RetrainConfig, lake: Lake, date: dt.date, state: State, result: RetrainResult, say) -> bool:
    """1. Validate every day the merge is about to take (new and backfilled days, and the date)
    with the dimension tables; quarantine the fact partitions that fail. False: stop here."""
    t0 = time.monotonic()
    checked = _validate_pending(lake, date, state)
    if checked is None:
        result.resumed.append("validate")
    else:
        result.quarantined = checked.quarantined
        for q in result.quarantined:
            say(f"quarantined {q['table']} {q['partition']} ({', '.join(q['rules'])}) to {q['to']}")
        if checked.rejected:
            result.exit_code = EXIT_REJECTED
            result.message = "the lake was rejected: " + _named(checked.violations)
            return False
        if result.quarantined and config.on_quarantine == "stop":
            result.exit_code = EXIT_QUARANTINED
            result.message = (f"stopped before the merge: {len(result.quarantined)} partition(s) failed validation "
                              "and were quarantined, so no model learns from them and no alias moves; re-land "
                              "those days fixed and run again, or run again to go on without them")
            result.steps["validate"] = round(time.monotonic() - t0, 1)
            return False
    result.steps["validate"] = round(time.monotonic() - t0, 1)
    return True


def _merge(lake: Lake, result: RetrainResult, say) -> bool:
    """2. The incremental merge (unchanged days are skipped by their fingerprints). False: it failed."""
    from jobs import merge

    t0 = time.monotonic()
    merged = merge.main(merge.MergeConfig(), lake)
    if merged.exit_code:
        result.exit_code = EXIT_FAILED
        result.message = "merge failed: " + "; ".join(f"{k}: {v}" for k, v in merged.failed.items())
        return False
    result.merged_days = len(merged.merged)
    result.steps["merge"] = round(time.monotonic() - t0, 1)
    say(f"merged {len(merged.merged)} new or changed day(s), {merged.skipped} unchanged")
    return True


@dataclass
class Plan:
    """What the retrain trains: each family's config (and its file), the key of its data, config,
    gate and code, the families finished earlier for this date (from the state file), and those
    still to do."""

    state: State
    data: str  # the data digest
    configs: dict[str, tuple[FamilyConfig, str | None]]
    keys: dict[str, str]
    finished: dict[str, dict]
    todo: list[str]


def _plan(config: RetrainConfig, lake: Lake, families: list[str], state: State, result: RetrainResult) -> Plan:
    """3. Which families still need work: not finished on these data with this config and code."""
    from jobs.tracking import git_commit

    data = data_digest(lake)
    configs = {f: known_family(f).config(config.configs.get(f)) for f in families}
    keys = {f: _digest([data, configs[f][0].model_dump(mode="json"), config.gates[f].model_dump(), git_commit()])
            for f in families}
    finished = state.get("families", {})
    todo = []
    for f in families:
        done = finished.get(f)
        if done and done.get("key") == keys[f] and done.get("status") in ("promoted", "refused"):
            result.families[f] = FamilyOutcome(**{k: v for k, v in done.items() if k != "key"})
            result.families[f].status = f"{done['status']} (earlier run)"
            result.resumed.append(f)
        else:
            todo.append(f)
    return Plan(state, data, configs, keys, finished, todo)


def _parent_run(tracking_uri: str, artifact_root: str | None, date: dt.date, state: State, result: RetrainResult):
    """4. The parent run of the families' runs, resumed when this date's run was interrupted."""
    import mlflow

    from models.registry import use_experiment

    mlflow.set_tracking_uri(tracking_uri)
    use_experiment("quanyu-retrain", artifact_root)
    parent_id = state.get("parent_run_id")
    try:
        parent = mlflow.start_run(run_id=parent_id) if parent_id else mlflow.start_run(run_name=f"retrain {date}")
    except Exception:
        parent = mlflow.start_run(run_name=f"retrain {date}")
    result.parent_run_id = parent.info.run_id
    state.put("parent_run_id", parent.info.run_id)
    return parent


@dataclass
class Gatekeeper:
    """Gates and records each family as soon as its training ends, while the others still train."""

    plan: Plan
    config: RetrainConfig
    lake: Lake
    tracking_uri: str
    result: RetrainResult
    say: Callable[[str], None]
    memory: dict[str, int] = field(default_factory=dict)  # each family's reservation

    def __call__(self, family: str, got) -> None:
        if isinstance(got, Exception):
            self.say(f"{family}: training failed: {_first_line(got)}")
            self.result.families[family] = FamilyOutcome(family, status="failed", reason=_first_line(got))
            return
        self.say(f"{family}: trained v{got['version']} in {got['seconds']:.0f} s")
        outcome = gate_candidate(family, got["version"], got["metrics"], self.config.gates[family], self.tracking_uri,
                                 self.plan.configs[family][0], self.lake, self.memory.get(family))
        outcome.run_id, outcome.seconds = got["run_id"], got["seconds"]
        self.result.families[family] = outcome
        self.plan.finished[family] = {**asdict(outcome), "key": self.plan.keys[family]}
        self.plan.state.put("families", self.plan.finished)
        self.say(f"{family}: v{outcome.version} {outcome.status}: {outcome.reason}")


def _train_and_gate(plan: Plan, config: RetrainConfig, lake: Lake, tracking_uri: str, artifact_root: str | None,
                    parent, tags: dict, result: RetrainResult, say) -> None:
    """5. Train the families still to do, each a Ray task, and gate each as it ends."""
    import mlflow

    mlflow.set_tags(tags)
    t0 = time.monotonic()
    if plan.todo:
        say(f"training {', '.join(plan.todo)}" + (" in parallel as memory allows"
                                                  if config.parallel and len(plan.todo) > 1 else ""))
        run_tags = {"mlflow.parentRunId": parent.info.run_id, "retrain_date": tags["retrain_date"]}
        args = {f: (f, plan.configs[f][0].model_dump_json(), plan.configs[f][1], lake, tracking_uri,
                    artifact_root, run_tags) for f in plan.todo}
        gatekeeper = Gatekeeper(plan, config, lake, tracking_uri, result, say)
        gatekeeper.memory.update(_reserve(plan.todo, lake, config.reserve_memory, say))
        train_all(plan.todo, args, config.parallel, gatekeeper, gatekeeper.memory, lake=lake)
    result.steps["train_and_gate"] = round(time.monotonic() - t0, 1)


def _record(result: RetrainResult) -> None:
    """6. The outcomes on the parent run, and the exit code they make."""
    import mlflow

    for f, outcome in result.families.items():
        mlflow.set_tag(f"{f}.outcome", f"{outcome.status}: {outcome.reason}"[:4000])
        mlflow.log_metric(f"{f}_promoted", float(outcome.status == "promoted"))
        if outcome.seconds:
            mlflow.log_metric(f"{f}_seconds", outcome.seconds)
    mlflow.log_metrics({f"step_{k}_seconds": v for k, v in result.steps.items()})
    mlflow.log_dict({"date": result.date, "quarantined": result.quarantined,
                     "families": {f: asdict(o) for f, o in result.families.items()}}, "summary.json")
    if any(o.status == "failed" for o in result.families.values()):
        result.exit_code = EXIT_FAILED
        result.message = "; ".join(f"{f} failed: {o.reason}" for f, o in result.families.items()
                                   if o.status == "failed")
    elif result.quarantined:
        result.exit_code = EXIT_QUARANTINED
        result.message = (f"{len(result.quarantined)} partition(s) quarantined; the families trained on "
                          "the rest (on_quarantine: continue)")


def summary_lines(result: RetrainResult, gates: dict[str, Gate]) -> list[str]:
    """The table `quanyu retrain` prints."""
    lines = [f"retrain {result.date}: " + {EXIT_DONE: "done", EXIT_REJECTED: "data rejected",
                                          EXIT_FAILED: "failed", EXIT_QUARANTINED: "partitions quarantined"}[result.exit_code]
             + (f" — {result.message}" if result.message else "")]
    for q in result.quarantined:
        lines.append(f"  quarantined: {q['table']} {q['partition']} ({', '.join(q['rules'])}), {q['rows']:,} rows, "
                     f"moved to {q['to']}")
    if result.resumed:
        lines.append(f"  already done earlier for these data: {', '.join(result.resumed)}")
    if not result.families:
        return lines
    lines.append(f"  {'family':<9} {'version':>7}  {'metric':<28} {'baselines':<40} {'champion':<16} "
                 f"{'outcome':<10} {'seconds':>7}")
    for f, o in result.families.items():
        gate = gates[f]
        metric = o.metrics.get(gate.metric)
        base = ", ".join(f"{b.removeprefix(gate.metric + '_')} {o.metrics[b]:.3f}" for b in gate.beat
                         if b in o.metrics)
        champion = (f"v{o.champion_version} {o.champion_metric:.3f}" if o.champion_version and o.champion_metric
                    is not None else "none")
        shown = f"{gate.metric} {metric:.4f}" if metric is not None else "-"
        lines.append(f"  {f:<9} {('v' + o.version) if o.version else '-':>7}  {shown:<28} {base:<40} "
                     f"{champion:<16} {o.status.split(' ')[0]:<10} {o.seconds:>7.0f}")
        lines.append(f"  {'':<9} {'':>7}  why: {o.reason}")
    lines.append("  steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.steps.items()))
    if result.parent_run_id:
        lines.append(f"  MLflow parent run {result.parent_run_id} (experiment quanyu-retrain)")
    return lines

