"""The `quanyu` command line: a thin layer over the jobs. Every failure the user can fix is
printed as one clear message with a non-zero exit; tracebacks only with QUANYU_DEBUG=1."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path

import click

from jobs.runtime import Runtime, ensure_ray
from lake.generate.scales import SCALES

EXIT_FAILURE = 2
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _runtime(ctx: click.Context, lake: str | None) -> Runtime:
    return Runtime.resolve(lake=lake, ray_address=ctx.obj.get("ray_address"))


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


lake_option = click.option("--lake", "lake", type=click.Path(file_okay=False), default=None,
                           help="Lake folder [default: $QUANYU_HOME/lake].")


def _dates(values: tuple[str, ...]) -> list[dt.date] | None:
    if not values:
        return None
    out = []
    for v in values:
        try:
            out.append(dt.date.fromisoformat(v))
        except ValueError:
            raise click.BadParameter(f"{v!r} is not a date; use YYYY-MM-DD", param_hint="--date") from None
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ray-address", default=None, help="Ray cluster address [default: $RAY_ADDRESS, else a local Ray].")
@click.pass_context
def cli(ctx: click.Context, ray_address: str | None) -> None:
    """Quanyu: the omnichannel retail ML platform."""
    ctx.ensure_object(dict)
    ctx.obj["ray_address"] = ray_address


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

    start_date = _dates((start,))[0] if start else None
    config = generate.GenerateConfig(scale=scale, seed=seed, start=start_date, days=days)
    runtime = _runtime(ctx, lake)
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
    runtime = _runtime(ctx, lake)
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

    runtime = _runtime(ctx, lake)
    ensure_ray(runtime)
    result = validate.main(validate.ValidateConfig(quarantine=quarantine, dates=_dates(dates)), runtime.lake)
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

    runtime = _runtime(ctx, lake)
    ensure_ray(runtime)
    result = merge.main(merge.MergeConfig(dates=_dates(dates), rebuild=rebuild), runtime.lake)
    click.echo(f"merged {len(result.merged)} day(s), skipped {result.skipped} unchanged, "
               f"removed {len(result.removed)} stale, in {result.seconds} s")
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

    runtime = _runtime(ctx, lake)
    info = describe.main(runtime.lake)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(_describe_text(info))


def _describe_text(info: dict) -> str:
    if not info["tables"]:
        return f"{info['lake']}: no tables yet — run quanyu data generate (or load your data into raw/)"
    lines = [f"lake {info['lake']}", f"{'zone':<8} {'table':<18} {'rows':>12} {'files':>7} {'size':>10}  dates"]
    for t in info["tables"]:
        dates = f"{t['first_dt']} … {t['last_dt']} ({t['partitions']} days)" if t["first_dt"] else ""
        lines.append(f"{t['zone']:<8} {t['table']:<18} {t['rows']:>12,} {t['files']:>7,} {_human_bytes(t['bytes']):>10}  {dates}")
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


@cli.group()
def train() -> None:
    """Train a model family, evaluate it against its baselines and register a candidate."""


def _train(ctx: click.Context, family: str, lake: str | None, config_path: str | None, **options) -> None:
    """Train one family, register its candidate and print the headline metrics. `options` go to
    the family's job (demand: as_of)."""
    from jobs.families import FAMILY_JOBS

    spec = FAMILY_JOBS[family]
    try:
        config, path = spec.config(config_path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    runtime = _runtime(ctx, lake)
    ensure_ray(runtime)
    result = spec.job().main(config, runtime.lake, runtime.tracking_uri, config_path=path,
                             artifact_root=runtime.artifact_root, **options)
    click.echo(f"registered quanyu-{family} version {result.version} (alias candidate), run {result.run_id}, "
               f"{spec.date_word} {result.origin}, {result.seconds} s")
    width = max(len(k) for k in spec.headline) + 2
    for key in spec.headline:
        if key in result.metrics:
            click.echo(f"  {key:<{width}} {result.metrics[key]:.4f}")
    from mlflow import MlflowClient

    tags = MlflowClient(runtime.tracking_uri).get_model_version(f"quanyu-{family}", result.version).tags
    if tags.get("below_baseline"):
        click.echo(f"warning: quanyu-{family} v{result.version} does not beat its baselines ({tags['below_baseline']}); "
                   "the version is tagged below_baseline and the retrain's gate would refuse it", err=True)
    click.echo(f"next: quanyu models promote {family} {result.version}   (make it the champion that serving and "
               f"predict use; or pass --alias candidate to try it first)")


def _train_command(family: str, summary: str):
    @train.command(family, help=summary)
    @lake_option
    @click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), default=None,
                  help=f"Family config [default: configs/{family}.yaml when present, else built-in defaults].")
    @click.pass_context
    def command(ctx, lake, config_path) -> None:
        _train(ctx, family, lake, config_path)

    return command


as_of_option = click.option("--as-of", "as_of", type=click.DateTime(["%Y-%m-%d"]), default=None,
                            help="The lake as it was on this day (YYYY-MM-DD): later days are not read [default: "
                                 "the lake's last day].")


@train.command("demand")
@lake_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Family config [default: configs/demand.yaml when present, else built-in defaults].")
@as_of_option
@click.pass_context
def train_demand(ctx, lake, config_path, as_of) -> None:
    """Demand: units per store × SKU × day, 28 days ahead, with P10/P90. With --as-of, a backtest's
    model: trained on the days up to that day only."""
    _train(ctx, "demand", lake, config_path, **({"as_of": as_of.date()} if as_of else {}))


train_matching = _train_command(
    "matching", "Matching: candidates from seven sources, a LambdaRank ranker, audiences for new products.")
train_location = _train_command(
    "location", "Location: store revenue from site features; spatial CV; the site recommender's snapshot.")


def _retrain_config(path: str | None = None):
    """The retrain config (the promotion gates): `path`, else configs/retrain.yaml, else defaults."""
    from jobs.retrain import RetrainConfig

    path = path or (str(CONFIGS / "retrain.yaml") if (CONFIGS / "retrain.yaml").exists() else None)
    return RetrainConfig.from_yaml(path) if path else RetrainConfig()


def _gates() -> dict:
    """Each family's promotion gate: configs/retrain.yaml's, the built-in one where it names none."""
    from jobs.promotion import DEFAULT_GATES

    return {**DEFAULT_GATES, **_retrain_config().gates}


@cli.command("retrain")
@lake_option
@click.option("--date", "date", default=None, help="The day whose data arrived, YYYY-MM-DD [default: the lake's last raw day].")
@click.option("--families", default=None, help="Comma-separated subset of demand,matching,location [default: configs/retrain.yaml's].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Retrain config with the promotion gates [default: configs/retrain.yaml].")
@click.pass_context
def retrain_cmd(ctx, lake, date, families, config_path) -> None:
    """The daily retrain: validate every new or changed day, merge, train the families in parallel,
    gate, promote. Exit 0 done (promoted or not), 1 data rejected, 2 failure, 3 partitions
    quarantined (stopped before the merge unless configs/retrain.yaml says on_quarantine: continue)."""
    from jobs import retrain as job

    day = _dates((date,))[0] if date else None
    config = _retrain_config(config_path)
    chosen = None
    if families:
        chosen = [f.strip() for f in families.split(",") if f.strip()]
        unknown = sorted(set(chosen) - set(job.FAMILY_JOBS))
        if unknown or not chosen:
            raise click.BadParameter(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown) or '(none)'}; "
                                     "choose from demand, matching, location", param_hint="--families")
    runtime = _runtime(ctx, lake)
    ensure_ray(runtime)
    try:
        result = job.main(config, runtime.lake, runtime.tracking_uri, runtime.home, day, chosen,
                          artifact_root=runtime.artifact_root)
    except Exception as exc:  # a failure of the job itself: say it, change nothing more, exit 2
        if os.environ.get("QUANYU_DEBUG"):
            raise
        click.echo(f"retrain failed: {type(exc).__name__}: {exc}", err=True)
        sys.exit(job.EXIT_FAILED)
    for line in job.summary_lines(result, config.gates):
        click.echo(line, err=result.exit_code != 0 and line.startswith("retrain"))
    sys.exit(result.exit_code)


@cli.group("jobs")
def jobs_cmd() -> None:
    """Run quanyu commands on a remote Ray cluster through the Ray Jobs API."""


_address_option = click.option("--address", required=True, help="The cluster's job server, e.g. http://HEAD:8265.")


def _jobs_auth(address: str) -> None:
    """The token of a cluster `quanyu cluster up` started (other clusters: set RAY_AUTH_MODE=token
    and RAY_AUTH_TOKEN yourself, docs/cluster.md)."""
    from jobs import cluster

    os.environ.update(cluster.auth_env(_runtime(click.get_current_context(), None).home, address))


def _remote(call, *args):
    try:
        return call(*args)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # the job server's answer: an unknown job id, …
        raise click.ClickException(f"the job server refused: {str(exc).splitlines()[0][:300]}") from None


@jobs_cmd.command("submit", context_settings={"ignore_unknown_options": True})
@_address_option
@click.option("--no-wait", is_flag=True, help="Print the job id and return; `quanyu jobs logs` shows the rest.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
def jobs_submit(address, no_wait, command) -> None:
    """Submit `quanyu COMMAND…` (after --) with this project as working_dir; stream its logs and
    exit with its exit status. Example: quanyu jobs submit --address http://HEAD:8265 -- retrain --date 2026-11-24"""
    from jobs import submit

    _jobs_auth(address)
    # a tracking server travels with the job; a local store (a path on this machine) cannot
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    env = {"MLFLOW_TRACKING_URI": tracking} if tracking.startswith(("http://", "https://", "databricks")) else None
    job_id = _remote(submit.submit, address, list(command), env)
    click.echo(f"submitted {job_id}: quanyu {' '.join(command)}", err=True)
    if no_wait:
        click.echo(job_id)
        return
    try:
        _remote(submit.stream, address, job_id)
    except KeyboardInterrupt:
        click.echo(f"\nstopped following; the job goes on: quanyu jobs status --address {address} {job_id}", err=True)
        sys.exit(130)
    final = _remote(submit.wait, address, job_id, 60.0)
    code = _remote(submit.exit_code, address, job_id)
    click.echo(f"{job_id}: {final} (exit {code})", err=True)
    sys.exit(code)


@jobs_cmd.command("status")
@_address_option
@click.argument("job_id")
def jobs_status(address, job_id) -> None:
    """A job's status and message."""
    from jobs import submit

    _jobs_auth(address)
    info = _remote(submit.status, address, job_id)
    click.echo(f"{info['job_id']}: {info['status']}  {info['entrypoint']}" + (f"\n  {info['message']}" if info["message"] else ""))


@jobs_cmd.command("logs")
@_address_option
@click.argument("job_id")
def jobs_logs(address, job_id) -> None:
    """A job's logs so far."""
    from jobs import submit

    _jobs_auth(address)
    click.echo(_remote(submit.logs, address, job_id), nl=False)


@jobs_cmd.command("stop")
@_address_option
@click.argument("job_id")
def jobs_stop(address, job_id) -> None:
    """Stop a running job."""
    from jobs import submit

    _jobs_auth(address)
    stopped = _remote(submit.stop, address, job_id)
    click.echo(f"{job_id}: " + ("stopping" if stopped else "already finished"))


@cli.group("cluster")
def cluster_cmd() -> None:
    """A local autoscaling Ray cluster (fake multi-node provider) to watch a job grow and shrink it."""


@cluster_cmd.command("up")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True),
              default=str(CONFIGS / "cluster" / "local.yaml"), show_default=True)
@click.option("--port", type=click.IntRange(1024, 65535), default=None, help="The head's port [default: a free one].")
@click.pass_context
def cluster_up(ctx, config_path, port) -> None:
    """Start a head with no CPUs and the autoscaler; workers come when tasks need them."""
    from jobs import cluster

    runtime = _runtime(ctx, None)
    try:
        info = cluster.up(Path(config_path), runtime.home, port)
    except (RuntimeError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"local cluster up at {info['address']} (pid {info['pid']}, log {info['log']})\n"
               f"  run on it:  quanyu --ray-address {info['address']} retrain\n"
               f"  or submit:  quanyu jobs submit --address {info['jobs']} -- retrain\n"
               f"  watch it:   quanyu cluster status   (or: ray status --address {info['address']})\n"
               "  stop it:    quanyu cluster down")


@cluster_cmd.command("status")
@click.pass_context
def cluster_status(ctx) -> None:
    """The local cluster's nodes now."""
    from jobs import cluster

    runtime = _runtime(ctx, None)
    info = cluster._state(runtime.home)
    if info is None:
        raise click.ClickException("no local cluster is up; quanyu cluster up")
    try:
        found = cluster.nodes(info["address"], runtime.home)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    workers = [n for n in found if not n["head"]]
    click.echo(f"{info['address']}: head + {len(workers)} worker node(s), {sum(n['cpus'] for n in workers):g} CPU(s)")


@cluster_cmd.command("down")
@click.pass_context
def cluster_down(ctx) -> None:
    """Stop the head, the autoscaler and every worker node."""
    from jobs import cluster

    click.echo(cluster.down(_runtime(ctx, None).home))


@cli.group("models")
def models_cmd() -> None:
    """The registry: what each family serves, every version's gate and lineage, promote and roll back."""


def _client(ctx):
    from mlflow import MlflowClient

    return MlflowClient(_runtime(ctx, None).tracking_uri)


_family_arg = click.argument("family", type=click.Choice(["demand", "matching", "location"]))



@models_cmd.command("list")
@click.pass_context
def models_list(ctx) -> None:
    """Per family: champion, candidate, versions, and the champion's main metric (the metric of
    its gate in configs/retrain.yaml)."""
    from jobs.promotion import alias_version, describe_versions

    client = _client(ctx)
    click.echo(f"{'family':<9} {'champion':>8} {'candidate':>9} {'versions':>8}  main metric of the champion")
    for family, gate in _gates().items():
        versions = describe_versions(client, family, gate.metric)
        champion = alias_version(client, family, "champion")
        candidate = alias_version(client, family, "candidate")
        value = next((v[gate.metric] for v in versions if v["version"] == champion), None)
        click.echo(f"{family:<9} {('v' + champion) if champion else '-':>8} {('v' + candidate) if candidate else '-':>9} "
                   f"{len(versions):>8}  " + (f"{gate.metric} {value:.4f}" if value is not None else "-"))


@models_cmd.command("show")
@_family_arg
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def models_show(ctx, family, as_json) -> None:
    """Every version of FAMILY, newest first: aliases, main metric, gate verdict, lake days, commit."""
    from jobs.promotion import describe_versions, history

    client = _client(ctx)
    metric = _gates()[family].metric
    versions = describe_versions(client, family, metric)
    if as_json:
        click.echo(json.dumps({"family": family, "versions": versions, "champion_history": history(client, family)},
                              indent=1))
        return
    if not versions:
        raise click.ClickException(f"quanyu-{family} has no registered version; run quanyu retrain or quanyu train {family}")
    for v in versions:
        value = f"{v[metric]:.4f}" if v[metric] is not None else "-"
        click.echo(f"v{v['version']:<4} {','.join(v['aliases']) or '-':<20} {metric} {value:<8} lake {v['lake_days']}  "
                   f"commit {v['git_commit'] or '?'}  {v['created']}")
        if v["gate"]:
            click.echo(f"      gate: {v['gate']}")


@models_cmd.command("promote")
@_family_arg
@click.argument("version")
@click.pass_context
def models_promote(ctx, family, version) -> None:
    """Make VERSION of FAMILY the champion by hand (serving follows within its poll interval)."""
    from mlflow.exceptions import MlflowException

    from jobs.promotion import promote

    client = _client(ctx)
    try:
        previous = promote(client, family, version.lstrip("v"), "promoted by hand", by="hand")
    except MlflowException:
        raise click.ClickException(f"quanyu-{family} has no version {version}; see quanyu models show {family}") from None
    click.echo(f"quanyu-{family}: champion v{previous or '-'} -> v{version.lstrip('v')}")


@models_cmd.command("rollback")
@_family_arg
@click.pass_context
def models_rollback(ctx, family) -> None:
    """Point FAMILY's champion back at the version it had before the current one."""
    from jobs.promotion import rollback

    try:
        current, target = rollback(_client(ctx), family)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"quanyu-{family}: champion v{current} -> v{target} (rolled back)")


@cli.group("serve", invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the HTTP ingress listens on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--alias", default="champion", show_default=True, help="Registry alias every family follows.")
@click.option("--poll-seconds", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="How often each family checks its alias.")
@click.option("--detach", is_flag=True, help="Run in the background; return once every family answers.")
@click.option("--ingress", type=click.Choice(["proxy", "haproxy"]), default="proxy", show_default=True,
              help="What listens on host:port: Serve's proxy actor, or HAProxy forwarding straight to the "
                   "ingress replicas (needs the haproxy binary; about 10 ms faster per request).")
@click.pass_context
def serve_cmd(ctx, host, port, alias, poll_seconds, detach, ingress) -> None:
    """Serve the champions over HTTP (Ray Serve). `quanyu serve stop` stops a detached server."""
    if ctx.invoked_subcommand is not None:
        return
    from jobs import serve as job

    runtime = _runtime(ctx, None)
    if detach:
        try:
            info = job.detach(runtime, host, port, alias, poll_seconds, ingress=ingress)
        except (RuntimeError, TimeoutError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"serving at {info['url']} (pid {info['pid']}, log {info['log']})")
        for f in info["families"]:
            click.echo(f"  {f['family']:<9} quanyu-{f['family']} " + (f"v{f['version']} ({alias})" if f["version"] else
                  f"no {alias} yet: its endpoints answer 503 until one is promoted"))
        if info["key"]:
            click.echo(f"API key (kept in {runtime.home / 'api_key'}): {info['key']}")
        click.echo(f"API docs: {info['url']}/docs · planner's page: {info['url']}/planner")
        return
    try:
        job.foreground(runtime, host, port, alias, poll_seconds, say=click.echo, ingress=ingress)
    except (RuntimeError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None


@serve_cmd.command("stop")
@click.pass_context
def serve_stop(ctx) -> None:
    """Stop the server `quanyu serve --detach` started."""
    from jobs import serve as job

    click.echo(job.stop(_runtime(ctx, None)))


@cli.group()
def sites() -> None:
    """Site recommendations for the next stores (the location family's champion)."""


@sites.command("recommend")
@click.option("--city", required=True, help="City to plan in.")
@click.option("--k", "k", type=click.IntRange(1, 50), default=5, show_default=True, help="How many sites.")
@click.option("--min-distance-km", type=click.FloatRange(0, 100), default=None,
              help="Minimum distance to own stores and between picks.")
@click.option("--max-rent", type=click.FloatRange(0), default=None, help="Maximum rent per m² per month, in the lake's currency.")
@click.option("--exclude", multiple=True, help="Site id to leave out (repeatable).")
@click.option("--include", multiple=True, help="Site id to force in (repeatable).")
@click.option("--objective", type=click.Choice(["net_gain", "coverage"]), default="net_gain", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--alias", default="champion", show_default=True, help="Which registered version answers.")
@click.pass_context
def sites_recommend(ctx, city, k, min_distance_km, max_rent, exclude, include, objective, fmt, alias) -> None:
    """Choose k candidate sites in a city for the largest net gain (or population coverage)."""
    from jobs.recommend_sites import load_recommender, render
    from lake.settings import DEFAULT_CURRENCY
    from models.location.recommender import RecommendError

    runtime = _runtime(ctx, None)
    recommender, version = load_recommender(runtime.tracking_uri, alias)
    try:
        result = recommender.recommend(city, k, min_distance_km=min_distance_km, max_rent=max_rent,
                                       exclude=list(exclude), include=list(include), objective=objective)
    except RecommendError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(render(result, version, recommender.meta.get("data_date"), fmt,
                      recommender.meta.get("currency", DEFAULT_CURRENCY)), nl=False)


@cli.group()
def matching() -> None:
    """Products for a member, members for a product (the matching family's champion)."""


def _matching_answer(alias: str, ask) -> tuple[dict, str]:
    """`ask(recommender)` on the matching version `alias`, as a dict with its model version."""
    from jobs.recommend_sites import load_recommender
    from models.matching.recommender import MatchingError

    recommender, version = load_recommender(_runtime(click.get_current_context(), None).tracking_uri, alias,
                                            family="matching")
    try:
        return {"model_version": version, **ask(recommender).as_dict()}, version
    except MatchingError as exc:
        raise click.ClickException(str(exc)) from None


@matching.command("recommend")
@click.option("--member", "member_id", required=True, help="The member's id (an unknown id gets popular products).")
@click.option("--k", "k", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--channel", type=click.Choice(["online", "offline"]), default=None, help="Only what sells there.")
@click.option("--alias", default="champion", show_default=True, help="Which registered version answers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def matching_recommend(member_id, k, channel, alias, as_json) -> None:
    """The k products a member is most likely to buy next."""
    answer, version = _matching_answer(alias, lambda r: r.recommend(member_id, k, channel))
    if as_json:
        click.echo(json.dumps(answer, indent=1, ensure_ascii=False))
        return
    how = f"fallback {answer['fallback']}" if answer["fallback"] else "ranker"
    click.echo(f"{member_id}: {len(answer['items'])} product(s), quanyu-matching v{version} ({how})")
    for rank, item in enumerate(answer["items"], 1):
        score = "" if item["score"] is None else f"{item['score']:.4f}"
        click.echo(f"{rank:>3}  {item['sku_id']:<24} {score}")


@matching.command("audience")
@click.option("--sku", "sku_id", default=None, help="A product in the catalogue.")
@click.option("--category", default=None, help="A new product's category (instead of --sku).")
@click.option("--list-price", type=click.FloatRange(0, min_open=True), default=None, help="A new product's list price.")
@click.option("--style", default=None, help="A new product's style.")
@click.option("--k", "k", type=click.IntRange(1, 10_000), default=20, show_default=True, help="How many members.")
@click.option("--alias", default="champion", show_default=True, help="Which registered version answers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def matching_audience(sku_id, category, list_price, style, k, alias, as_json) -> None:
    """The k members most likely to buy a product, the catalogue's or a new one described by its
    attributes, and the segments that fit it best."""
    described = {k: v for k, v in (("category", category), ("list_price", list_price), ("style", style)) if v}
    if bool(sku_id) == bool(described):
        raise click.UsageError("give --sku, or a new product's --category (with --list-price, --style)")
    answer, version = _matching_answer(alias, lambda r: r.audience(k, sku_id=sku_id or None,
                                                                   attributes=described or None))
    if as_json:
        click.echo(json.dumps(answer, indent=1, ensure_ascii=False))
        return
    product = sku_id or "new product " + ", ".join(f"{k}={v}" for k, v in described.items())
    click.echo(f"{product}: {len(answer['members'])} member(s), quanyu-matching v{version}")
    for note in answer["notes"]:
        click.echo(f"  note: {note}")
    click.echo("segments that fit best: " + "; ".join(f"{s['segment']} ({s['members']:,} members)"
                                                         for s in answer["segments"]))
    for rank, m in enumerate(answer["members"], 1):
        click.echo(f"{rank:>4}  {m['member_id']:<24} {m['score']:.4f}  {m['segment']}")


@cli.group()
def predict() -> None:
    """Batch predictions into the lake's forecasts/ zone."""


@predict.command("demand")
@lake_option
@click.option("--alias", default="champion", show_default=True, help="Which registered version to score with.")
@click.option("--as-of", "as_of", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Forecast the days after this day (YYYY-MM-DD) from the lake's history up to it "
                   "[default: the day the model was trained up to].")
@click.pass_context
def predict_demand(ctx, lake, alias, as_of) -> None:
    """28-day forecasts (P10/P50/P90) for every active store × SKU, into forecasts/demand/dt=<origin>/."""
    from mlflow.exceptions import MlflowException

    from jobs import predict_demand as job

    runtime = _runtime(ctx, lake)
    ensure_ray(runtime)
    try:
        result = job.main(runtime.lake, runtime.tracking_uri, alias=alias, as_of=as_of.date() if as_of else None)
    except MlflowException as exc:
        raise click.ClickException(f"no quanyu-demand version with alias {alias!r} in {runtime.tracking_uri} "
                                   f"({exc.message.splitlines()[0][:120]}); train one with quanyu train demand, then "
                                   "quanyu models promote demand <version> (or pass --alias candidate)") from None
    click.echo(f"quanyu-demand v{result.version} (origin {result.origin}): {result.series:,} series, "
               f"{result.rows:,} rows → {result.path} in {result.seconds} s")
    if result.backtest:
        b = result.backtest
        click.echo(f"backtest on the lake's {b['days']} day(s) after {result.origin} ({b['rows']:,} rows): WRMSSE "
                   f"{b['wrmsse']:.3f} (28-day moving average {b['wrmsse_moving_average']:.3f}); P10–P90 held "
                   f"{b['coverage_rows']:.0%} of rows, {b['coverage_units']:.0%} of units")
    if result.in_sample:
        click.echo(f"note: v{result.version} was trained on days up to {result.model_origin}, after {result.origin}: "
                   f"these forecasts are in-sample. For a backtest, train on the lake as of that day: quanyu train "
                   f"demand --as-of {result.origin}, then predict with that version.", err=True)


@cli.command("demo")
@click.option("--scale", type=click.Choice(list(SCALES)), default="chain", show_default=True,
              help="The generated brand: chain (30 cities, 600 stores, 60 SKUs) is the smallest whose stores "
                   "teach the location family enough to pass its gate, so all three families serve.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@lake_option
@click.option("--retrain-config", "retrain_config", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The retrain's config (families, gates, family configs) [default: configs/retrain.yaml].")
@click.pass_context
def demo(ctx, scale, port, lake, retrain_config) -> None:
    """The whole loop on generated data: the lake (generated if missing), the daily retrain
    (which validates every day it merges), serving in the background; then the URLs to look at
    (about 6 minutes on 2 cores)."""
    from jobs import describe, generate, retrain, serve

    runtime = _runtime(ctx, lake)
    lake = runtime.lake
    ensure_ray(runtime)
    if not lake.files("raw", "products"):
        click.echo(f"1/3 generating the {scale} lake under {lake.root} …")
        res = generate.main(generate.GenerateConfig(scale=scale), lake)
        click.echo(f"    {sum(res.lines.values()):,} sales lines, {res.start} … {res.end}, {res.seconds} s")
    else:
        click.echo(f"1/3 lake already at {lake.root}")
    config = _retrain_config(retrain_config)
    click.echo(f"2/3 the daily retrain (validate and merge every new day, train {', '.join(config.families)}, "
               "gate, promote) …")
    result = retrain.main(config, lake, runtime.tracking_uri, runtime.home, artifact_root=runtime.artifact_root)
    for line in retrain.summary_lines(result, config.gates):
        click.echo("    " + line)
    if result.exit_code not in (retrain.EXIT_DONE, retrain.EXIT_QUARANTINED):  # days set aside: serve the rest
        ctx.exit(result.exit_code)
    click.echo(_describe_text(describe.main(lake)))
    click.echo("3/3 serving the champions in the background …")
    import ray

    ray.shutdown()  # the server runs its own Ray in its own process
    try:
        info = serve.detach(runtime, "127.0.0.1", port, "champion", 10.0)
    except (RuntimeError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    for f in info["families"]:
        why = ("no champion: the gate refused every candidate (see above)" if f["family"] in config.families
               else "no champion: not one of the retrain's families")
        click.echo(f"    {f['family']:<9} " + (f"quanyu-{f['family']} v{f['version']}" if f["version"] else why))
    url = info["url"]
    click.echo(f"""
Open:
  API docs        {url}/docs
  planner's page  {url}/planner
  API key         {runtime.home / 'api_key'} (admin key: {runtime.home / 'admin_key'})
  MLflow UI       .venv/bin/mlflow ui --backend-store-uri {runtime.tracking_uri} --host 127.0.0.1 --port 5000
  the registry    .venv/bin/quanyu models list
Stop serving:     .venv/bin/quanyu serve stop
""")


@cli.group()
def bench() -> None:
    """Side-by-side measurements against peers (figures go to BENCHMARKS.md)."""


@bench.command("cli")
@click.option("--repeats", type=click.IntRange(1, 50), default=5, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Work folder [default: $QUANYU_HOME/bench].")
@click.pass_context
def bench_cli(ctx, repeats, out) -> None:
    """Wall time of the registry commands (models list/show/promote) against a bare MLflow call."""
    from benchmarks import cli as cli_bench

    runtime = _runtime(ctx, None)
    try:
        cli_bench.main(runtime, Path(out) if out else runtime.home / "bench", repeats)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


@bench.command("lake")
@click.option("--scales", default="small", show_default=True, help="Comma-separated scales, e.g. small,medium.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Work folder [default: $QUANYU_HOME/bench].")
@click.option("--reuse", is_flag=True, help="Keep lakes generated by an earlier run (generation is not measured).")
@click.pass_context
def bench_lake(ctx, scales, out, reuse) -> None:
    """Generation and merge throughput, peak memory, and the merge against one DuckDB query."""
    from benchmarks import lake as lake_bench

    runtime = _runtime(ctx, None)
    folder = Path(out) if out else runtime.home / "bench"
    lake_bench.main([s.strip() for s in scales.split(",") if s.strip()], folder, ray_address=runtime.ray_address,
                    reuse=reuse)


@bench.command("demand")
@lake_option
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Work folder [default: $QUANYU_HOME/bench/demand].")
@click.pass_context
def bench_demand(ctx, lake, out) -> None:
    """Feature building and training cost (Ray vs bare LightGBM), accuracy vs statsforecast."""
    from benchmarks import demand as demand_bench
    from jobs.tracking import REPO
    from models.demand.config import DemandConfig

    runtime = _runtime(ctx, lake)
    ensure_ray(runtime)
    config = DemandConfig.from_yaml(REPO / "configs" / "demand.yaml")
    demand_bench.main(runtime.lake.root, Path(out) if out else runtime.home / "bench" / "demand", config)


@bench.command("matching")
@lake_option
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Work folder [default: $QUANYU_HOME/bench/matching].")
@click.pass_context
def bench_matching(ctx, lake, out) -> None:
    """Training cost, recommend() latency, accuracy next to implicit's ALS on the same split."""
    from benchmarks import matching as matching_bench
    from jobs.families import FAMILY_JOBS

    runtime = _runtime(ctx, lake)
    ensure_ray(runtime)
    config, _ = FAMILY_JOBS["matching"].config()
    matching_bench.main(runtime.lake.root, Path(out) if out else runtime.home / "bench" / "matching", config)


@bench.command("real")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Work folder [default: $QUANYU_HOME/bench/real].")
@click.pass_context
def bench_real(ctx, out) -> None:
    """Demand and matching on real public data (fetched at run time from packages that ship it)
    through quanyu data import, against moving averages, seasonal naive, Croston, TSB and popularity."""
    from benchmarks import real as real_bench

    runtime = _runtime(ctx, None)
    ensure_ray(runtime)
    report = real_bench.main(Path(out) if out else runtime.home / "bench" / "real",
                             say=lambda line: click.echo(line, err=True))
    for line in real_bench.summary_lines(report):
        click.echo(line)


@bench.command("retrain")
@lake_option
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Work folder [default: $QUANYU_HOME/bench/retrain].")
@click.option("--repeats", type=click.IntRange(1, 20), default=3, show_default=True, help="Autoscaling rounds.")
@click.pass_context
def bench_retrain(ctx, lake, out, repeats) -> None:
    """The daily retrain's wall time by step against the families' own training jobs; the local
    autoscaler's time to bring and remove a node."""
    from benchmarks import retrain as retrain_bench

    runtime = _runtime(ctx, lake)
    if not runtime.lake.files("raw", "products"):
        raise click.ClickException(f"no lake at {runtime.lake.root}; generate one (quanyu data generate --scale small)")
    ensure_ray(runtime)
    retrain_bench.main(runtime.lake, Path(out) if out else runtime.home / "bench" / "retrain", repeats)


@bench.command("serving")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Work folder [default: $QUANYU_HOME/bench/serving].")
@click.option("--seconds", type=click.FloatRange(1, 600), default=10.0, show_default=True, help="Per target, endpoint and concurrency.")
@click.pass_context
def bench_serving(ctx, out, seconds) -> None:
    """Latency and throughput: Ray Serve vs bare FastAPI vs mlflow models serve vs in-process."""
    from benchmarks import serving as serving_bench

    runtime = _runtime(ctx, None)
    try:
        serving_bench.main(runtime, Path(out) if out else runtime.home / "bench" / "serving", seconds)
    except (RuntimeError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None


@bench.command("load")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Work folder [default: $QUANYU_HOME/bench/load].")
@click.option("--seconds", type=click.FloatRange(10, 600), default=60.0, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 256), default=32, show_default=True)
@click.option("--promote-after", type=click.FloatRange(0, 600), default=20.0, show_default=True,
              help="Seconds into the load when every family gets a new champion.")
@click.pass_context
def bench_load(ctx, out, seconds, concurrency, promote_after) -> None:
    """Sustained load on every endpoint while each family's champion changes: failed requests, 5xx, p99."""
    from benchmarks import load as load_bench

    if promote_after >= seconds:
        raise click.BadParameter(f"must be less than --seconds ({seconds:g})", param_hint="--promote-after")
    runtime = _runtime(ctx, None)
    try:
        report = load_bench.main(runtime, Path(out) if out else runtime.home / "bench" / "load", seconds,
                                 concurrency, promote_after)
    except (RuntimeError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    if report["errors"] or report["server_errors_5xx"] or not report["all_swapped"]:
        raise SystemExit(1)


@bench.command("location")
@lake_option
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Work folder [default: $QUANYU_HOME/bench/location].")
@click.option("--sizes", default="10000,100000", show_default=True, help="Candidate sites per synthetic city (latency).")
@click.option("--mclp-sizes", default="2000,10000", show_default=True, help="Candidate sites per coverage instance.")
@click.pass_context
def bench_location(ctx, lake, out, sizes, mclp_sizes) -> None:
    """Recommendation latency at 10k / 100k sites; coverage vs spopt's exact MCLP (CBC)."""
    from benchmarks import location as location_bench
    from jobs.tracking import REPO
    from models.location.config import LocationConfig

    runtime = _runtime(ctx, lake)
    config = LocationConfig.from_yaml(REPO / "configs" / "location.yaml")

    def ints(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"{text!r} is not a comma-separated list of integers") from None

    location_bench.main(runtime.lake.root, Path(out) if out else runtime.home / "bench" / "location", config,
                        ints(sizes), ints(mclp_sizes))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `quanyu` console script."""
    from lake.store import LakeError
    from pydantic import ValidationError

    from jobs.runtime import RayStartError

    # artifact downloads print a progress bar per file; the jobs say what they do instead
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # "Creating initial MLflow database tables...": the first command in a new QUANYU_HOME
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    try:
        code = cli.main(args=argv, prog_name="quanyu", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except (LakeError, ValueError, ValidationError, RayStartError) as exc:
        click.echo(f"quanyu: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    except Exception as exc:  # a bug: say so plainly, keep the traceback for QUANYU_DEBUG
        if os.environ.get("QUANYU_DEBUG"):
            raise
        click.echo(f"quanyu: internal error: {type(exc).__name__}: {exc} (set QUANYU_DEBUG=1 for the traceback)", err=True)
        sys.exit(EXIT_FAILURE)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
