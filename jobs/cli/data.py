"""`quanyu data`: generate, import, validate, merge and describe a lake."""

from __future__ import annotations

import json
from pathlib import Path

import click

from jobs.cli.common import cli, human_bytes, lake_option, parse_dates, runtime_of
from jobs.runtime import ensure_ray
from lake.generate.scales import SCALES


@cli.group()
def data() -> None:
    """Generate, validate, merge and describe the omnichannel lake."""


@data.command("generate")
@click.option("--scale", type=click.Choice(list(SCALES)), default="tiny", show_default=True)
@lake_option
@click.option("--seed", type=click.IntRange(min=0), default=42, show_default=True)
@click.option("--start", default=None, help="First day, YYYY-MM-DD [default: the scale's].")
@click.option("--days", type=click.IntRange(min=28), default=None, help="Number of days [default: the scale's].")
@click.pass_context
def data_generate(ctx, scale, lake, seed, start, days) -> None:
    """Generate a synthetic lake (same seed, same bytes); hidden truth goes to truth/."""
    from jobs import generate

    start_date = parse_dates((start,))[0] if start else None
    config = generate.GenerateConfig(scale=scale, seed=seed, start=start_date, days=days)
    runtime = runtime_of(ctx, lake)
    if (runtime.lake.root / "raw").exists() and any((runtime.lake.root / "raw").iterdir()):
        raise click.UsageError(f"{runtime.lake.root} already holds a lake; remove it or choose another --lake")
    ensure_ray(runtime)
    result = generate.main(config, runtime.lake)
    total = sum(result.lines.values())
    click.echo(f"generated {result.scale} lake at {result.lake}: {result.start} … {result.end}, "
               f"{total:,} sales lines ({result.lines['online_orders']:,} online, "
               f"{result.lines['pos_transactions']:,} POS) in {result.chunks} chunks, {result.seconds} s")
    click.echo("dimensions: " + ", ".join(f"{k} {v:,}" for k, v in result.dimensions.items()))


@data.command("import")
@click.argument("sales", type=click.Path(dir_okay=False))
@lake_option
@click.option("--column", "columns", multiple=True, metavar="FIELD=COLUMN",
              help="Which column of the export holds a field (repeatable): product_id, timestamp, quantity, "
                   "order_id, customer_id, price, shop, category, product_name.")
@click.option("--mapping", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The same mapping as a YAML file (field: column); --column wins.")
@click.option("--channel", type=click.Choice(["online", "offline"]), default="online", show_default=True,
              help="Whether the export's shops are online shops or offline stores.")
@click.option("--products", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Products export (its product id column, category, list_price, launch_date, …).")
@click.option("--customers", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Customers export (its customer id column, city, age_band, join_date, …).")
@click.option("--stores", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Stores export in the contract's columns (store_id, channel, platform, city, lat, lon, …).")
@click.option("--unit-price", type=click.FloatRange(min=0, min_open=True), default=None,
              help="One price for lines that have none (then every series weighs by its units).")
@click.option("--timezone", default=None, help="The brand's time zone, e.g. Europe/Berlin [default: Asia/Shanghai].")
@click.option("--currency", default=None, help="ISO code of the prices, e.g. EUR [default: CNY].")
@click.pass_context
def data_import(ctx, sales, lake, columns, mapping, channel, products, customers, stores, unit_price, timezone,
                currency) -> None:
    """Turn a sales-lines export (CSV or Parquet) into a new lake's raw tables. Exit 1 with one
    message per table × column × rule when the export cannot be imported as it is."""
    from jobs import import_data

    fields = import_data.read_mapping(Path(mapping)) if mapping else {}
    for pair in columns:
        name, sep, column = pair.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise click.BadParameter(f"{pair!r}: write FIELD=COLUMN, e.g. product_id=StockCode", param_hint="--column")
        fields[name.strip()] = column.strip()
    config = import_data.ImportConfig(sales=Path(sales), mapping=fields, channel=channel,
                                      products=Path(products) if products else None,
                                      customers=Path(customers) if customers else None,
                                      stores=Path(stores) if stores else None, unit_price=unit_price,
                                      timezone=timezone, currency=currency)
    runtime = runtime_of(ctx, lake)
    result = import_data.main(config, runtime.lake)
    for note in result.notes:
        click.echo(f"note: {note}")
    if result.problems:
        click.echo(f"the export cannot be imported as it is: {len(result.problems)} problem(s)", err=True)
        for problem in result.problems:
            click.echo("  " + problem.line(), err=True)
        ctx.exit(result.exit_code)
    click.echo(f"imported into {result.lake}: " + ", ".join(f"{t} {n:,}" for t, n in result.rows.items())
               + f"; {result.days} days, {result.first} … {result.last} ({result.seconds} s)")
    click.echo(f"next: quanyu data validate --lake {result.lake}, then quanyu data merge --lake {result.lake}")


@data.command("validate")
@lake_option
@click.option("--quarantine", is_flag=True, help="Move failing fact partitions to quarantine/ and pass the rest.")
@click.option("--date", "dates", multiple=True, help="Only these days (YYYY-MM-DD; repeatable).")
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Also write the report as JSON here.")
@click.pass_context
def data_validate(ctx, lake, quarantine, dates, report) -> None:
    """Check the raw lake against its contract. Exit 0 clean, 1 rejected, 3 passed after quarantine."""
    from jobs import validate

    runtime = runtime_of(ctx, lake)
    ensure_ray(runtime)
    result = validate.main(validate.ValidateConfig(quarantine=quarantine, dates=parse_dates(dates)), runtime.lake)
    if report:
        Path(report).write_text(json.dumps(result.to_dict(), indent=2, default=str))
    from lake.requirements import readiness_lines
    from lake.validate import grouped_lines

    checked = ", ".join(f"{t} {n:,}" for t, n in result.rows_checked.items())
    click.echo(f"checked rows: {checked or 'none'}")
    for line in readiness_lines(result.families) if result.families else []:
        click.echo(line)
    if result.violations:
        lines = grouped_lines(result.violations)
        click.echo(f"\n{len(result.violations)} problem(s), {len(lines)} distinct:")
        for line in lines[:200]:
            click.echo(line)
        if len(lines) > 200:
            click.echo(f"… and {len(lines) - 200} more (see --report)")
    for q in result.quarantined:
        click.echo(f"quarantined {q['table']} dt={q['partition']} ({q['rows']:,} rows) → {q['to']}")
    status = {0: "clean", 1: "REJECTED", 3: "passed after quarantine"}[result.exit_code]
    click.echo(f"\nvalidation {status} in {result.seconds} s")
    ctx.exit(result.exit_code)


@data.command("merge")
@lake_option
@click.option("--date", "dates", multiple=True, help="Merge only these days (YYYY-MM-DD; repeatable).")
@click.option("--rebuild", is_flag=True, help="Merge every day again (after dimension changes).")
@click.pass_context
def data_merge(ctx, lake, dates, rebuild) -> None:
    """Resolve OneID and build the curated tables, incrementally."""
    from jobs import merge

    runtime = runtime_of(ctx, lake)
    ensure_ray(runtime)
    result = merge.main(merge.MergeConfig(dates=parse_dates(dates), rebuild=rebuild), runtime.lake)
    click.echo(f"merged {len(result.merged)} day(s), skipped {result.skipped} unchanged, "
               f"removed {len(result.removed)} stale, in {result.seconds} s"
               + (f"; lake commit {result.commit}" if result.commit is not None else "; the lake is unchanged"))
    if result.merged:
        click.echo(f"lines {result.lines:,}; units net raw {result.raw_units_net:,} = curated {result.curated_units_net:,}; "
                   f"demand rows {result.demand_rows:,}; stores with performance {result.stores_with_performance}")
        click.echo("resolution: " + ", ".join(f"{k} {v:,}" for k, v in sorted(result.resolution.items())))
    if result.identity_conflicts:
        click.echo(f"warning: {result.identity_conflicts} ambiguous channel id(s) linked to nobody")
    for warning in result.warnings:
        click.echo(f"warning: {warning}")
    for day, error in sorted(result.failed.items()):
        click.echo(error, err=True)
    ctx.exit(result.exit_code)


@data.command("describe")
@lake_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def data_describe(ctx, lake, as_json) -> None:
    """Table sizes, date ranges and OneID match rates."""
    from jobs import describe

    runtime = runtime_of(ctx, lake)
    info = describe.main(runtime.lake)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(describe_text(info))


@data.command("commits")
@lake_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def data_commits(ctx, lake, as_json) -> None:
    """The lake's commits, oldest first: each names the snapshot of every curated table it made
    visible (`quanyu train <family> --as-of-commit N` trains on exactly that data)."""
    runtime = runtime_of(ctx, lake)
    history = runtime.lake.tables.history()
    if as_json:
        click.echo(json.dumps([{"commit": c.id, "at": c.at, "note": c.note, "snapshots": c.snapshots}
                               for c in history], indent=2))
        return
    if not history:
        click.echo(f"{runtime.lake.root}: no commits yet — run quanyu data merge")
    for c in history:
        click.echo(f"{c.id:>5}  {c.at}  {c.note}")


def describe_text(info: dict) -> str:
    if not info["tables"]:
        return f"{info['lake']}: no tables yet — run quanyu data generate (or load your data into raw/)"
    commit = f" at commit {info['commit']}" if info.get("commit") is not None else ""
    lines = [f"lake {info['lake']}{commit}", f"{'zone':<8} {'table':<18} {'rows':>12} {'files':>7} {'size':>10}  dates"]
    for t in info["tables"]:
        dates = f"{t['first_dt']} … {t['last_dt']} ({t['partitions']} days)" if t["first_dt"] else ""
        lines.append(f"{t['zone']:<8} {t['table']:<18} {t['rows']:>12,} {t['files']:>7,} {human_bytes(t['bytes']):>10}  {dates}")
    oneid = info.get("oneid")
    if oneid:
        lines.append("\nOneID match rates (share of lines)")
        for channel in ("online", "offline"):
            o = oneid[channel]
            parts = ", ".join(f"{k} {v:.1%}" for k, v in o.items() if k not in ("lines",))
            lines.append(f"  {channel:<8} {o['lines']:>10,} lines: {parts}")
        if "members" in oneid:
            lines.append(f"  members {oneid['members']:,}, of whom {oneid['members_with_purchases']:,} bought in the lake's period")
    else:
        lines.append("\nnot merged yet — run quanyu data merge")
    if info.get("weeks"):
        lines.append(f"\nlast trading weeks (starting {info['week_start']}; settings.yaml week_start)")
        for w in info["weeks"]:
            partial = "" if w["days"] == 7 else f"  ({w['days']} of 7 days in the lake)"
            lines.append(f"  week of {w['week_of']}: {w['units_net']:>10,} units  "
                         f"{w['revenue_net']:>14,.0f} {info['currency']}{partial}")
    if info["quarantined_partitions"]:
        lines.append(f"\nquarantined partitions: {len(info['quarantined_partitions'])} (under quarantine/)")
    return "\n".join(lines)
