"""`quanyu sites recommend`: load the location family's registered version and print its picks."""

from __future__ import annotations

import csv
import io
import json

import click

from lake.settings import DEFAULT_CURRENCY
from models.location.recommender import Recommendation, SiteRecommender
from models.registry import Registry

CSV_COLUMNS = ("rank", "site_id", "lat", "lon", "predicted_revenue", "cannibalisation", "net_gain",
               "rent_per_sqm_month", "population", "covered_population", "forced", "reason_1", "reason_2", "reason_3")


def load_recommender(tracking_uri: str, alias: str, family: str = "location") -> tuple[SiteRecommender, str]:
    """The recommender of `models:/quanyu-<family>@<alias>` (location or matching) and its
    version. ClickException when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        loaded = Registry(tracking_uri).load(family, alias=alias)
    except MlflowException as exc:
        hint = (f" (train one with quanyu train {family}; its alias is candidate until promoted: "
                "--alias candidate)")
        raise click.ClickException(f"no quanyu-{family} version with alias {alias!r} in {tracking_uri}: "
                                   f"{exc.message.splitlines()[0][:120]}{hint}") from None
    return loaded.predictor, loaded.version


def csv_rows(result: Recommendation) -> list[dict]:
    rows = []
    for p in result.picks:
        row = {k: v for k, v in p.as_dict().items() if k in CSV_COLUMNS}
        for i in range(3):
            row[f"reason_{i + 1}"] = p.reasons[i] if i < len(p.reasons) else ""
        rows.append(row)
    return rows


def render(result: Recommendation, version: str, data_date: str | None, fmt: str,
           currency: str = DEFAULT_CURRENCY) -> str:
    """The picks as text (a table), json or csv; money in `currency` (the lake's, kept with the model)."""
    if fmt == "json":
        return json.dumps({"model_version": version, "data_date": data_date, "currency": currency,
                           **result.as_dict()}, indent=1,
                          ensure_ascii=False) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows(result))
        return out.getvalue()
    lines = [f"{result.city}: {result.k} site(s) by {result.objective}, quanyu-location v{version} "
             f"(data {data_date}), {result.feasible:,} of {result.candidates:,} candidates feasible",
             f"{'#':>2}  {'site':<16} {'revenue/yr':>12} {'cannibal.':>11} {'net gain':>12} {'rent':>7}  reasons"]
    for p in result.picks:
        lines.append(f"{p.rank:>2}  {p.site_id:<16} {p.predicted_revenue:>12,.0f} {p.cannibalisation:>11,.0f} "
                     f"{p.net_gain:>12,.0f} {p.rent_per_sqm_month:>7.0f}  {p.reasons[0] if p.reasons else ''}")
        for reason in p.reasons[1:]:
            lines.append(f"{'':>67}{reason}")
    lines.append(f"total net gain {result.total_net_gain:,.0f} {currency}/yr"
                 + (f", covered population {result.covered_population:,.0f}" if result.covered_population else ""))
    return "\n".join(lines) + "\n"
