"""Job: train the matching family and register a candidate version.

Steps:
1. read the members' purchases (curated interactions) of the last year and the holdouts, the
   members and the catalogue (and truth/ when the lake has it: the oracle, for evaluation only);
2. evaluate on the last 14 days: a ranker trained as of 28 days before the end ranks the
   candidates of every sampled holdout member; global and segment popularity and the oracle on
   the same members; candidate recall per source; audience AUC for new SKUs;
3. train the production ranker with the most recent labels and snapshot members, items and
   candidate indexes as of the lake's last day;
4. log params, metrics (ndcg_at_10, ndcg_at_10_popularity, ndcg_at_10_segment_popularity,
   ndcg_at_10_oracle, recall_at_10, candidate_recall, …), dataset digests and the NDCG-by-activity
   plot to MLflow;
5. register `quanyu-matching` (ranker + snapshots + candidate indexes), alias `candidate`.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

import pandas as pd

from jobs.runtime import executor
from jobs.tracking import TrainResult, family_run, log_inputs, register
from lake.store import Lake
from models.executor import Executor
from models.matching.model import Evaluation, MatchingConfig, MatchingData, evaluate, fit_ranker, read_matching_data
from models.matching.recommender import MatchingRecommender
from models.matching.state import MatchingState

HEADLINE = ("ndcg_at_10", "ndcg_at_10_popularity", "ndcg_at_10_segment_popularity", "ndcg_at_10_oracle",
            "recall_at_10", "candidate_recall")


def history_days(config: MatchingConfig) -> int:
    """Days of purchases the family reads: the history of the earliest snapshot plus its labels
    and the holdout."""
    return config.candidates.history_days + 3 * config.evaluation.holdout_days


def build_recommender(data: MatchingData, config: MatchingConfig, progress=lambda line: None,
                      meta: dict | None = None, executor: Executor | None = None) -> MatchingRecommender:
    """The production ranker (labels: the last holdout_days) and the snapshot as of the data date."""
    h = config.evaluation.holdout_days
    ranker, _ = fit_ranker(data, data.data_date - dt.timedelta(days=h), config, progress, executor)
    state = MatchingState.build(data.interactions, data.members, data.products, data.data_date, config.candidates)
    return MatchingRecommender(state, ranker, config, {"data_date": str(data.data_date), **(meta or {})})


def _plot(evaluation: Evaluation, folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = evaluation.by_activity.set_index("bucket")
    columns = [c for c in ("model", "popularity", "segment_popularity", "oracle") if c in frame]
    ax = frame[columns].plot.bar(figsize=(8, 4.5), rot=0)
    for i, n in enumerate(frame["members"]):
        ax.annotate(f"n={n:,}", (i, 0), xytext=(0, -28), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xlabel("member's purchase lines in the history before the holdout")
    ax.set_ylabel("NDCG@10 on the 14-day holdout")
    ax.set_title("Matching: NDCG@10 by member activity")
    ax.figure.tight_layout()
    path = folder / "ndcg_by_activity.png"
    ax.figure.savefig(path, dpi=110)
    plt.close(ax.figure)
    return path


def holdout_metrics(config: MatchingConfig, lake: Lake) -> dict[str, float]:
    """The holdout's metrics of `config` on the lake, without training the production model or
    logging: how the retrain's gate re-scores a champion's recipe."""
    data = read_matching_data(lake, history_days(config))
    return {k: v for k, v in evaluate(data, config, executor=executor()).metrics.items() if v == v}


def main(config: MatchingConfig, lake: Lake, tracking_uri: str, config_path: str | None = None,
         artifact_root: str | None = None, run_tags: dict | None = None) -> TrainResult:
    """Train, evaluate, log and register; Ray should be initialised (candidates run as tasks)."""
    import mlflow

    from mlflow.types import ColSpec, DataType, Schema

    from models.matching.pyfunc import MatchingPyfunc

    started = time.monotonic()

    def say(line: str) -> None:
        print(f"train matching: {line} [{time.monotonic() - started:.0f} s]", file=sys.stderr, flush=True)

    data = read_matching_data(lake, history_days(config))
    say(f"read {len(data.interactions):,} member purchases up to {data.data_date}, {len(data.members):,} members, "
        f"{len(data.products):,} SKUs")
    where = executor()
    evaluation = evaluate(data, config, progress=say, executor=where)
    metrics = {k: v for k, v in evaluation.metrics.items() if v == v}
    say(f"holdout: ndcg_at_10 {metrics['ndcg_at_10']:.4f} (popularity {metrics['ndcg_at_10_popularity']:.4f}), "
        f"candidate_recall {metrics['candidate_recall']:.3f}")
    served = evaluation.extra["served"]
    recommender = build_recommender(data, config, say, {**{k: metrics[k] for k in HEADLINE if k in metrics},
                                                        "served": served}, where)
    say("fitted the production ranker and snapshot; it serves "
        + ("the ranker" if served == "ranker" else f"{served.replace('_', ' ')}, which beat the ranker on the holdout"))

    tags = {"lake": str(lake.root), "data_date": str(data.data_date), "config_path": config_path or "defaults"}
    params = {"members": len(data.members), "skus": len(data.products), "served": served}
    tags.update(run_tags or {})  # e.g. the daily retrain's parent run
    with family_run("matching", tracking_uri, artifact_root, f"matching {data.data_date}", config, tags, params,
                    metrics) as (run, folder):
        log_inputs(lake, [("interactions", data.interactions, "curated"), ("members", data.members, "raw"),
                          ("products", data.products, "raw")])
        mlflow.log_artifact(str(_plot(evaluation, folder)), artifact_path="plots")
        evaluation.by_activity.to_csv(folder / "ndcg_by_activity.csv", index=False)
        mlflow.log_artifact(str(folder / "ndcg_by_activity.csv"))
        example = pd.DataFrame({"member_id": recommender.state.members["member_id"].head(2).astype(str),
                                "channel": ["online", "offline"], "k": [5, 5]})
        # channel and k may be left out of a row (any channel, 10 items): optional in the signature
        inputs = Schema([ColSpec(DataType.string, "member_id"), ColSpec(DataType.string, "channel", required=False),
                         ColSpec(DataType.long, "k", required=False)])
        version = register("matching", MatchingPyfunc(), {"recommender": str(recommender.save(folder / "recommender"))},
                           example, ("scipy",), inputs)
    return TrainResult(run_id=run.info.run_id, version=version, metrics=metrics, origin=data.data_date,
                       seconds=round(time.monotonic() - started, 1))
