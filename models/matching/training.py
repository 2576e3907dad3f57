"""The matching family's training (models/training.py), run by the generic job jobs/train.py:

1. the inputs: the members' purchases (curated interactions) of the last year and the holdouts,
   the members and the catalogue (and truth/ when the lake has it: the oracle, for evaluation only);
2. evaluate on the last 14 days: a ranker trained as of 28 days before the end ranks the
   candidates of every sampled holdout member; global and segment popularity and the oracle on
   the same members; candidate recall per source; audience AUC for new SKUs;
3. train the production ranker with the most recent labels and snapshot members, items and
   candidate indexes as of the last day;
4. hand back the recommender, metrics (ndcg_at_10, ndcg_at_10_popularity,
   ndcg_at_10_segment_popularity, ndcg_at_10_oracle, recall_at_10, candidate_recall, …) and the
   NDCG-by-activity plot.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from lake.store import LakeError
from models.executor import Executor
from models.matching.config import MatchingConfig
from models.matching.model import INTERACTION_COLUMNS, Evaluation, MatchingData, evaluate, fit_ranker
from models.matching.recommender import MatchingRecommender
from models.matching.state import MatchingState
from models.report import Report
from models.training import Input, Trained, last_day

HEADLINE = ("ndcg_at_10", "ndcg_at_10_popularity", "ndcg_at_10_segment_popularity", "ndcg_at_10_oracle",
            "recall_at_10", "candidate_recall")


def history_days(config: MatchingConfig) -> int:
    """Days of purchases the family reads: the history of the earliest snapshot plus its labels
    and the holdout."""
    return config.candidates.history_days + 3 * config.evaluation.holdout_days


def inputs(config: MatchingConfig, holdout: bool = False) -> dict[str, Input]:
    # the brand's own member columns too: a segment may be made of them (candidates.segment_by)
    return {"interactions": Input("curated", "interactions", ("dt", *INTERACTION_COLUMNS), days=history_days(config),
                                  needed="run quanyu data merge first"),
            "members": Input("raw", "members", contract=True, keep_extra=True,
                             needed="the matching family needs the brand's members"),
            "products": Input("raw", "products", contract=True, needed="the matching family needs the catalogue"),
            "truth_consumers": Input("truth", "consumers"), "truth_products": Input("truth", "products"),
            "truth_params": Input("truth", "params", json="world.json"),
            # the oracle's expected units of the holdout's days
            "truth_expected": Input("truth", "expected_demand", ("dt", "city", "sku_id", "expected_units"),
                                    days=config.evaluation.holdout_days)}


def prepare(frames: dict, config: MatchingConfig) -> MatchingData:
    """Raises LakeError when no purchase of the window is linked to a member."""
    interactions, data_date = frames["interactions"], last_day(frames, "interactions")
    if interactions.empty:
        raise LakeError(f"no purchase of the last {history_days(config)} days up to {data_date} is linked to a "
                        "member, so the matching family has nothing to learn from: raw/identities links each "
                        "channel's buyer ids (an online shop's platform, pos cards, phone hashes) to raw/members; "
                        "quanyu data merge reports how many lines it linked per channel")
    truth = None
    parts = ("truth_consumers", "truth_products", "truth_params")
    if all(frames[p] is not None for p in parts):
        truth = {"consumers": frames["truth_consumers"], "products": frames["truth_products"],
                 "params": frames["truth_params"], "expected_demand": frames["truth_expected"]}
    return MatchingData(interactions, frames["members"], frames["products"], data_date, truth)


def build_recommender(data: MatchingData, config: MatchingConfig, progress=lambda line: None,
                      meta: dict | None = None, executor: Executor | None = None) -> MatchingRecommender:
    """The production ranker (labels: the last holdout_days) and the snapshot as of the data date."""
    h = config.evaluation.holdout_days
    ranker, _ = fit_ranker(data, data.data_date - dt.timedelta(days=h), config, progress, executor)
    state = MatchingState.build(data.interactions, data.members, data.products, data.data_date, config.candidates)
    return MatchingRecommender(state, ranker, config, {"data_date": str(data.data_date), **(meta or {})})


def holdout(data: MatchingData, config: MatchingConfig, executor: Executor) -> Report:
    """The holdout of `config`, without training the production model."""
    return _report(evaluate(data, config, executor=executor))


def _report(evaluation: Evaluation) -> Report:
    return Report(evaluation.metrics, {"ndcg_by_activity": evaluation.by_activity})


def train(data: MatchingData, config: MatchingConfig, executor: Executor, folder: Path, say) -> Trained:
    from mlflow.types import ColSpec, DataType, Schema

    from models.matching.pyfunc import MatchingPyfunc

    say(f"read {len(data.interactions):,} member purchases up to {data.data_date}, {len(data.members):,} members, "
        f"{len(data.products):,} SKUs")
    evaluation = evaluate(data, config, progress=say, executor=executor)
    report = _report(evaluation)
    metrics = report.finite
    say(f"holdout: ndcg_at_10 {metrics['ndcg_at_10']:.4f} (popularity {metrics['ndcg_at_10_popularity']:.4f}), "
        f"candidate_recall {metrics['candidate_recall']:.3f}")
    served = evaluation.extra["served"]
    recommender = build_recommender(data, config, say, {**{k: metrics[k] for k in HEADLINE if k in metrics},
                                                        "served": served}, executor)
    say("fitted the production ranker and snapshot; it serves "
        + ("the ranker" if served == "ranker" else f"{served.replace('_', ' ')}, which beat the ranker on the holdout"))
    example = pd.DataFrame({"member_id": recommender.state.members["member_id"].head(2).astype(str),
                            "channel": ["online", "offline"], "k": [5, 5]})
    # channel and k may be left out of a row (any channel, 10 items): optional in the signature
    signature = Schema([ColSpec(DataType.string, "member_id"), ColSpec(DataType.string, "channel", required=False),
                        ColSpec(DataType.long, "k", required=False)])
    return Trained(origin=data.data_date, report=report,
                   params={"members": len(data.members), "skus": len(data.products), "served": served},
                   tags={"data_date": str(data.data_date)}, python_model=MatchingPyfunc(),
                   artifacts={"recommender": str(recommender.save(folder / "recommender"))},
                   learned_from=[("interactions", data.interactions, "curated"), ("members", data.members, "raw"),
                                 ("products", data.products, "raw")],
                   files=[_plot(evaluation, folder)], example=example,
                   packages=("scipy",), signature_inputs=signature)


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
