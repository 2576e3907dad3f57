"""The generator: determinism, size, and the retail phenomena the models exist for."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import generate
from lake.contract import RAW_TABLES
from lake.store import Lake


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.parquet"))}


def test_same_seed_same_bytes_other_seed_other_data(ray_session, tmp_path):
    config = generate.GenerateConfig(scale="tiny", seed=3, days=35)
    a, b, c = Lake(tmp_path / "a"), Lake(tmp_path / "b"), Lake(tmp_path / "c")
    generate.main(config, a)
    generate.main(config, b)
    generate.main(config.model_copy(update={"seed": 4}), c)
    digest_a = _digest(a.root / "raw")
    assert digest_a and digest_a == _digest(b.root / "raw")
    assert _digest(a.root / "truth") == _digest(b.root / "truth")
    assert digest_a != _digest(c.root / "raw")


def test_tiny_is_within_its_size_budget(tiny_lake):
    lines = sum(pq.ParquetFile(f).metadata.num_rows
                for t in ("online_orders", "pos_transactions")
                for d in tiny_lake.partitions("raw", t) for f in tiny_lake.files("raw", t, d))
    assert 80_000 <= lines <= 200_000


def test_raw_holds_only_contract_columns_and_truth_is_separate(tiny_lake):
    for name, spec in RAW_TABLES.items():
        files = tiny_lake.files("raw", name) or tiny_lake.files("raw", name, tiny_lake.partitions("raw", name)[0])
        columns = set(pq.read_schema(files[0]).names)
        assert columns <= {c.name for c in spec.columns}, name
        assert not any(c.startswith("true_") for c in columns)
    assert tiny_lake.partitions("truth", "expected_demand")
    assert tiny_lake.files("truth", "site_potential")


def _daily(lake: Lake, channel: str):
    frame = lake.read_all("curated", "store_daily").to_pandas()
    return frame[frame["channel"] == channel].groupby("dt")["units_net"].sum()


def test_offline_peaks_at_weekends(tiny_lake):
    offline = _daily(tiny_lake, "offline")
    weekday = np.array([d.weekday() for d in offline.index])
    ratio = offline[weekday >= 5].mean() / offline[weekday <= 3].mean()
    assert ratio > 1.2


def test_618_lifts_online_and_cny_closes_stores(tiny_lake):
    online = _daily(tiny_lake, "online")
    july = online[[dt.date(2025, 7, 1) <= d <= dt.date(2025, 7, 14) for d in online.index]].mean()
    assert online[dt.date(2025, 6, 18)] > 3 * july
    pos_days = set(tiny_lake.partitions("raw", "pos_transactions"))
    assert not pos_days & {dt.date(2025, 1, 29), dt.date(2025, 1, 30), dt.date(2025, 1, 31)}
    assert dt.date(2025, 1, 29) in set(tiny_lake.partitions("raw", "online_orders"))


def test_new_products_launch_during_the_period_and_sell_only_after_launch(tiny_lake):
    products = tiny_lake.read("raw", "products").to_pandas().set_index("sku_id")
    start = tiny_lake.partitions("raw", "online_orders")[0]
    new = products[products["launch_date"] > start]
    assert len(new) >= 5
    demand = tiny_lake.read_all("curated", "demand_daily", columns=["sku_id", "units_sold", "dt"]).to_pandas()
    sold = demand[demand["units_sold"] > 0]
    first_sale = sold.groupby("sku_id")["dt"].min()
    assert (first_sale[new.index.intersection(first_sale.index)] >= new["launch_date"].reindex(
        new.index.intersection(first_sale.index))).all()
    assert new.index.intersection(first_sale.index).size >= 3


def test_stores_range_part_of_the_catalogue(tiny_lake):
    products = tiny_lake.read("raw", "products").num_rows
    lines = tiny_lake.read_all("curated", "sales_lines", columns=["channel", "store_id", "sku_id"]).to_pandas()
    per_store = lines[lines["channel"] == "offline"].groupby("store_id")["sku_id"].nunique()
    assert (per_store < products).all()


def test_promotions_raise_demand(tiny_lake):
    demand = tiny_lake.read_all("curated", "demand_daily").to_pandas()
    demand["promo"] = demand["offer_discount_pct"] > 0
    means = demand.groupby(["store_id", "sku_id", "promo"])["units_sold"].mean().unstack().dropna()
    assert len(means) > 50
    assert (means[True] / means[False].clip(lower=0.05)).median() > 1.2


def test_identity_gaps_and_online_demand_from_areas_without_stores(tiny_lake):
    lines = tiny_lake.read_all("curated", "sales_lines", columns=["channel", "resolution", "delivery_cell"]).to_pandas()
    online = lines[lines["channel"] == "online"]
    assert 0.2 < (online["resolution"] == "guest").mean() < 0.8
    assert (online["resolution"] == "phone").mean() > 0.01
    assert (lines[lines["channel"] == "offline"]["resolution"] == "anonymous").mean() > 0.2
    store_cells = set(tiny_lake.read("raw", "stores").column("site_id").drop_null().to_pylist())
    assert (~online["delivery_cell"].isin(store_cells)).mean() > 0.5


def test_sales_follow_the_expected_demand_in_truth(tiny_lake):
    truth = tiny_lake.read_all("truth", "expected_demand", columns=["expected_units"])
    expected = float(pc.sum(truth["expected_units"]).as_py())
    demand = tiny_lake.read_all("curated", "demand_daily", columns=["units_sold"])
    sold = float(pc.sum(demand["units_sold"]).as_py())
    assert sold == pytest.approx(expected, rel=0.08)


def test_store_revenue_follows_site_and_format(tiny_lake):
    perf = tiny_lake.read("curated", "store_performance").to_pandas().set_index("store_id")
    truth = tiny_lake.read("truth", "stores").to_pandas().set_index("store_id")
    mature = perf[perf["trading_days"] > 150]
    rho = mature["revenue_annualised"].rank().corr(truth["true_level"].reindex(mature.index).rank())
    assert len(mature) >= 4 and rho > 0.6


def test_unknown_scale_and_short_periods_are_refused():
    from lake.generate.scales import get_scale

    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        get_scale("huge")
    with pytest.raises(ValueError, match="at least 28"):
        get_scale("tiny", days=10)


def test_store_id_codes_are_unique_across_all_cities():
    """Shenzhen / Shenyang, Xi'an / Xiamen and Nanjing / Nanning share their first three letters;
    their codes prefix store ids and chunk file names, so a clash loses data silently."""
    from lake.generate.world import CITIES, city_codes

    codes = city_codes([c[0] for c in CITIES])
    assert len(set(codes)) == len(CITIES)
    assert codes[:10] == ["SHA", "BEI", "HAN", "CHE", "SHE", "GUA", "WUH", "NAN", "XIA", "SUZ"]  # lakes up to medium unchanged
