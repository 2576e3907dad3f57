"""`quanyu bench lake`: generation, validation and merge throughput and peak memory per scale,
and the merge's wall time against its peer — the same OneID joins and aggregations written as
DuckDB SQL over the same Parquet, writing the same curated tables — measured in the same run.

With `--store s3`, the same raw files are also put on an S3-protocol store (moto's server on
loopback, started for the run) and merged from there into Iceberg tables there, against the
same merge on local disk and DuckDB reading the same files from the store (through an fsspec
wrapper of pyarrow's S3 filesystem: DuckDB's own S3 extension is downloaded at run time, which
this machine cannot do). moto is one Python process holding the objects in memory: no network
latency, but far less throughput per request than a real store.

Peak memory is sampled every 0.2 s as the summed resident memory of this process and all its
children (the local Ray head, its workers, DuckDB in-process); shared pages (Ray's object
store) are counted once per process that maps them, so the figure is an upper bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from lake.store import Lake

# Written for the generated lake's columns (promotions without the optional sku_id scope).
DUCKDB_MERGE = """
CREATE TEMP TABLE ids AS
  SELECT channel, channel_user_id, min(member_id) AS member_id
  FROM read_parquet('{raw}/identities/*.parquet') GROUP BY ALL HAVING count(DISTINCT member_id) = 1;
CREATE TEMP TABLE lines AS
  SELECT o.dt::DATE AS dt, o.order_ts AS ts, 'online' AS channel, o.store_id, s.platform, o.order_id, o.line_no,
         o.is_refund, o.sku_id, o.quantity, o.unit_price, round(o.quantity * o.unit_price, 2) AS revenue,
         o.list_price, o.promo_id, coalesce(a.member_id, p.member_id) AS member_id,
         CASE WHEN a.member_id IS NOT NULL THEN 'channel_id' WHEN p.member_id IS NOT NULL THEN 'phone'
              ELSE 'guest' END AS resolution, o.delivery_cell
  FROM read_parquet('{raw}/online_orders/*/*.parquet', hive_partitioning = true) o
  JOIN read_parquet('{raw}/stores/*.parquet') s USING (store_id)
  LEFT JOIN ids a ON a.channel = s.platform AND a.channel_user_id = o.buyer_id
  LEFT JOIN ids p ON p.channel = 'phone' AND p.channel_user_id = o.phone_hash
  UNION ALL
  SELECT t.dt::DATE, t.txn_ts, 'offline', t.store_id, NULL, t.txn_id, t.line_no, t.is_refund, t.sku_id, t.quantity,
         t.unit_price, round(t.quantity * t.unit_price, 2), t.list_price, t.promo_id, c.member_id,
         CASE WHEN c.member_id IS NOT NULL THEN 'channel_id' WHEN t.member_card_id IS NOT NULL THEN 'guest'
              ELSE 'anonymous' END, NULL
  FROM read_parquet('{raw}/pos_transactions/*/*.parquet', hive_partitioning = true) t
  LEFT JOIN ids c ON c.channel = 'pos' AND c.channel_user_id = t.member_card_id;
COPY (SELECT * FROM lines ORDER BY dt, ts, channel, order_id, line_no, is_refund)
  TO '{out}/sales_lines' (FORMAT parquet, PARTITION_BY (dt), COMPRESSION zstd);
CREATE TEMP TABLE agg AS
  SELECT dt, store_id, sku_id, channel,
         sum(CASE WHEN is_refund THEN 0 ELSE quantity END) AS units_sold,
         sum(CASE WHEN is_refund THEN -quantity ELSE 0 END) AS units_refunded,
         sum(revenue) AS revenue_net,
         round(sum(CASE WHEN is_refund THEN 0 ELSE revenue END)
               / nullif(sum(CASE WHEN is_refund THEN 0 ELSE quantity END), 0), 2) AS avg_unit_price
  FROM lines GROUP BY ALL;
CREATE TEMP TABLE traded AS SELECT DISTINCT dt, store_id FROM lines WHERE NOT is_refund;
CREATE TEMP TABLE ranged AS
  SELECT DISTINCT o.dt, a.store_id, a.sku_id, s.channel
  FROM read_parquet('{raw}/assortment/*.parquet') a
  JOIN traded o ON o.store_id = a.store_id AND o.dt >= a.valid_from AND (a.valid_to IS NULL OR o.dt <= a.valid_to)
  JOIN read_parquet('{raw}/products/*.parquet') p ON p.sku_id = a.sku_id AND o.dt >= p.launch_date
       AND (p.end_date IS NULL OR o.dt <= p.end_date)
  JOIN read_parquet('{raw}/stores/*.parquet') s ON s.store_id = a.store_id;
CREATE TEMP TABLE demand AS
  SELECT coalesce(g.dt, r.dt) AS dt, coalesce(g.store_id, r.store_id) AS store_id,
         coalesce(g.sku_id, r.sku_id) AS sku_id, coalesce(g.channel, r.channel) AS channel,
         coalesce(g.units_sold, 0) AS units_sold, coalesce(g.units_refunded, 0) AS units_refunded,
         coalesce(g.units_sold, 0) - coalesce(g.units_refunded, 0) AS units_net,
         coalesce(g.revenue_net, 0) AS revenue_net, g.avg_unit_price
  FROM agg g FULL OUTER JOIN ranged r ON g.dt = r.dt AND g.store_id = r.store_id AND g.sku_id = r.sku_id;
CREATE TEMP TABLE priced AS
  SELECT d.*, coalesce(pr.list_price, p.list_price) AS list_price
  FROM demand d JOIN read_parquet('{raw}/products/*.parquet') p USING (sku_id)
  LEFT JOIN read_parquet('{raw}/prices/*.parquet') pr ON pr.sku_id = d.sku_id AND d.dt >= pr.valid_from
       AND (pr.valid_to IS NULL OR d.dt <= pr.valid_to);
COPY (
  SELECT d.dt, d.store_id, d.sku_id, any_value(d.channel) AS channel, any_value(d.units_sold) AS units_sold,
         any_value(d.units_refunded) AS units_refunded, any_value(d.units_net) AS units_net,
         any_value(d.revenue_net) AS revenue_net, any_value(d.avg_unit_price) AS avg_unit_price,
         any_value(d.list_price) AS list_price, coalesce(max(m.discount_pct), 0) AS offer_discount_pct
  FROM priced d
  JOIN read_parquet('{raw}/stores/*.parquet') s ON s.store_id = d.store_id
  JOIN read_parquet('{raw}/products/*.parquet') p ON p.sku_id = d.sku_id
  LEFT JOIN read_parquet('{raw}/promotions/*.parquet') m ON d.dt BETWEEN m.start_date AND m.end_date
       AND (m.channel = 'all' OR m.channel = s.channel) AND (m.platform IS NULL OR m.platform = s.platform)
       AND (m.category IS NULL OR m.category = p.category)
  GROUP BY d.dt, d.store_id, d.sku_id ORDER BY d.dt, d.store_id, d.sku_id
) TO '{out}/demand_daily' (FORMAT parquet, PARTITION_BY (dt), COMPRESSION zstd);
COPY (SELECT dt, member_id, sku_id, channel, sum(quantity) AS units, round(sum(revenue), 2) AS revenue,
             sum(CASE WHEN is_refund THEN 0 ELSE 1 END) AS lines
      FROM lines WHERE member_id IS NOT NULL GROUP BY ALL ORDER BY ALL)
  TO '{out}/interactions' (FORMAT parquet, PARTITION_BY (dt), COMPRESSION zstd);
COPY (SELECT dt, store_id, channel, sum(quantity) AS units_net, round(sum(revenue), 2) AS revenue_net,
             count(*) AS lines, count(member_id) AS member_lines FROM lines GROUP BY ALL ORDER BY ALL)
  TO '{out}/store_daily' (FORMAT parquet, PARTITION_BY (dt), COMPRESSION zstd);
"""


class PeakMemory:
    """Samples the summed RSS of this process tree in a thread; `peak_bytes` after the block, and
    `start_bytes`, what the tree held when the block began (idle workers, earlier steps' leftovers)."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.every_s, self.peak_bytes, self.start_bytes = every_s, 0, 0
        self._stop = threading.Event()

    def _sample(self) -> int:
        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._sample())
            self._stop.wait(self.every_s)

    def __enter__(self) -> "PeakMemory":
        self.peak_bytes = self.start_bytes = self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Step:
    seconds: float
    peak_gb: float
    extra: dict = field(default_factory=dict)


@contextmanager
def _measure(into: dict, name: str):
    started = time.perf_counter()
    with PeakMemory() as memory:
        extra: dict = {}
        yield extra
    into[name] = Step(round(time.perf_counter() - started, 2), round(memory.peak_bytes / 1e9, 2), extra)


STORE_BUCKET = "quanyu-bench"


def run_scale(scale: str, folder: Path, reuse: bool = False, store: bool = False) -> dict:
    """Generate, validate, merge and DuckDB-merge one scale; returns the measurements. With
    `reuse`, a lake generated by an earlier run is kept (its generation is not measured); with
    `store`, the raw zone is also merged from the S3-protocol store whose variables are in this
    process's environment (`main` starts it)."""
    import duckdb
    import pyarrow.parquet as pq

    from jobs import generate, merge, validate

    root = folder / scale
    lake = Lake(root / "lake")
    steps: dict[str, Step] = {}
    if reuse and lake.files("raw", "products"):
        shutil.rmtree(root / "lake" / "curated", ignore_errors=True)
        shutil.rmtree(root / "duckdb_curated", ignore_errors=True)
        lines = sum(pq.ParquetFile(f).metadata.num_rows for t in ("online_orders", "pos_transactions")
                    for d in lake.partitions("raw", t) for f in lake.files("raw", t, d))
        steps["generate"] = Step(float("nan"), float("nan"), {"lines": lines, "reused": True})
    else:
        shutil.rmtree(root, ignore_errors=True)
        with _measure(steps, "generate") as extra:
            result = generate.main(generate.GenerateConfig(scale=scale), lake)
            extra["lines"] = sum(result.lines.values())
    with _measure(steps, "validate") as extra:
        checked = validate.main(validate.ValidateConfig(), lake)
        extra["exit_code"] = checked.exit_code
    with _measure(steps, "merge") as extra:
        merged = merge.main(merge.MergeConfig(), lake)
        extra.update(days=len(merged.merged), units_net=merged.curated_units_net, demand_rows=merged.demand_rows)
    duck_out = root / "duckdb_curated"
    duck_out.mkdir(parents=True)
    with _measure(steps, "duckdb_merge") as extra:
        con = duckdb.connect()
        con.execute("SET threads = 2")
        con.execute("SET preserve_insertion_order = false")
        con.execute(DUCKDB_MERGE.format(raw=lake.root / "raw", out=duck_out))
        extra["units_net"], extra["demand_rows"] = con.execute(
            f"SELECT sum(units_net), count(*) FROM read_parquet('{duck_out}/demand_daily/*/*.parquet')").fetchone()
        con.close()
    lines = steps["generate"].extra["lines"]
    compared: dict = {}
    if store:
        compared = _on_store(scale, lake, root, steps, duckdb)
    return {**compared,
        "scale": scale, "lines": lines,
        "steps": {k: asdict(v) for k, v in steps.items()},
        "generate_lines_per_s": round(lines / steps["generate"].seconds) if steps["generate"].seconds == steps["generate"].seconds else None,
        "validate_lines_per_s": round(lines / steps["validate"].seconds),
        "merge_lines_per_s": round(lines / steps["merge"].seconds),
        "merge_vs_duckdb": round(steps["merge"].seconds / steps["duckdb_merge"].seconds, 2),
        "same_result": (steps["merge"].extra["units_net"] == steps["duckdb_merge"].extra["units_net"]
                        and steps["merge"].extra["demand_rows"] == steps["duckdb_merge"].extra["demand_rows"]),
    }


def _on_store(scale: str, lake: Lake, root: Path, steps: dict, duckdb) -> dict:
    """The raw zone put on the store, merged there, and DuckDB's merge reading it from there."""
    import os

    import pyarrow.fs as pafs
    from fsspec.implementations.arrow import ArrowFSWrapper

    from jobs import merge

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    s3 = pafs.S3FileSystem(endpoint_override=endpoint)
    uri = f"s3://{STORE_BUCKET}/{scale}"
    catalog = root / "store_catalog.db"  # the store's lake is new each run: so is its catalog
    catalog.unlink(missing_ok=True)
    os.environ["QUANYU_CATALOG_URI"] = f"sqlite:///{catalog}"
    try:
        with _measure(steps, "upload") as extra:
            pafs.copy_files(str(lake.root / "raw"), f"{STORE_BUCKET}/{scale}/raw", destination_filesystem=s3)
            extra["bytes"] = sum(f.size for f in s3.get_file_info(pafs.FileSelector(f"{STORE_BUCKET}/{scale}/raw",
                                                                                 recursive=True)) if f.size)
        with _measure(steps, "merge_store") as extra:
            merged = merge.main(merge.MergeConfig(), Lake(uri))
            extra.update(days=len(merged.merged), units_net=merged.curated_units_net, demand_rows=merged.demand_rows)
    finally:
        del os.environ["QUANYU_CATALOG_URI"]
    duck_out = root / "duckdb_curated_store"
    shutil.rmtree(duck_out, ignore_errors=True)
    duck_out.mkdir(parents=True)
    with _measure(steps, "duckdb_merge_store") as extra:
        con = duckdb.connect()
        con.register_filesystem(ArrowFSWrapper(s3))
        con.execute("SET threads = 2")
        con.execute("SET preserve_insertion_order = false")
        con.execute(DUCKDB_MERGE.format(raw=f"{uri}/raw", out=duck_out))
        extra["units_net"], extra["demand_rows"] = con.execute(
            f"SELECT sum(units_net), count(*) FROM read_parquet('{duck_out}/demand_daily/*/*.parquet')").fetchone()
        con.close()
    return {"store_merge_vs_disk": round(steps["merge_store"].seconds / steps["merge"].seconds, 2),
            "store_merge_vs_duckdb": round(steps["merge_store"].seconds / steps["duckdb_merge_store"].seconds, 2),
            "store_same_result": (steps["merge_store"].extra["units_net"] == steps["merge"].extra["units_net"]
                                  and steps["merge_store"].extra["demand_rows"] == steps["merge"].extra["demand_rows"])}


def main(scales: list[str], folder: Path, ray_address: str | None = None, reuse: bool = False,
         store: str | None = None) -> list[dict]:
    """Run the lake benchmark for each scale; print a table and write results.json."""
    import ray

    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray_start = round(time.perf_counter() - started, 2)
    machine = {"cpus": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30),
               "python": platform.python_version(), "platform": platform.platform(), "ray_start_s": ray_start}
    results = []
    with contextlib.ExitStack() as stack:
        if store:  # the store's variables for this process and, through the lake, the merge's tasks
            from jobs.processes import s3_server

            machine["store"] = "moto S3 server on loopback"
            os.environ.update(stack.enter_context(s3_server(folder / "moto.log", (STORE_BUCKET,))))
        for scale in scales:
            print(f"== lake benchmark, scale {scale}", flush=True)
            results.append(run_scale(scale, folder, reuse, store=bool(store)))
            print(json.dumps(results[-1], default=str), flush=True)
    print(f"\nmachine: {machine}")
    print(f"{'scale':<8} {'lines':>12} {'step':<13} {'seconds':>9} {'peak GB':>8} {'lines/s':>10}")
    for r in results:
        for name, step in r["steps"].items():
            rate = f"{r['lines'] / step['seconds']:,.0f}" if not name.startswith(("duckdb", "upload")) and step["seconds"] == step["seconds"] else ""
            print(f"{r['scale']:<8} {r['lines']:>12,} {name:<13} {step['seconds']:>9.1f} {step['peak_gb']:>8.2f} {rate:>10}")
        print(f"{r['scale']:<8} merge / DuckDB wall-time ratio: {r['merge_vs_duckdb']} (same result: {r['same_result']})")
        if "store_merge_vs_disk" in r:
            print(f"{r['scale']:<8} on the store: merge / the same merge on disk {r['store_merge_vs_disk']}, "
                  f"merge / DuckDB from the store {r['store_merge_vs_duckdb']} (same result: {r['store_same_result']})")
    (folder / "results.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2, default=str))
    return results
