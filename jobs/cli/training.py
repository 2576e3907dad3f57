"""`quanyu train <family>`, `quanyu retrain` and `quanyu predict demand`: the training jobs and batch scoring."""

from __future__ import annotations

import os
import sys

import click

from jobs.cli.common import cli, lake_option, parse_dates, refusing, retrain_config, runtime_of
from jobs.runtime import ensure_ray
from models.families import FAMILIES


class FamilyCommands(click.Group):
    """`quanyu train <family>`: one command per family of the registry (plugins included), made
    when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(FAMILIES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return _train_command(name, FAMILIES[name].summary) if name in FAMILIES else None


@cli.group(cls=FamilyCommands)
def train() -> None:
    """Train a model family, evaluate it against its baselines and register a candidate."""


def _train(ctx: click.Context, name: str, lake: str | None, config_path: str | None, as_of=None,
           commit: int | None = None) -> None:
    """Train one family, register its candidate and print the headline metrics."""
    from jobs import train as job
    from models.families import family

    spec = family(name)
    with refusing(ValueError):
        config, path = spec.config(config_path)
    runtime = runtime_of(ctx, lake)
    runtime.lake.at(commit).tables.commit_record()  # a commit that does not exist says so now
    ensure_ray(runtime)
    result = job.main(name, config, runtime.lake.at(commit), runtime.tracking_uri, config_path=path,
                      artifact_root=runtime.artifact_root, as_of=as_of)
    click.echo(f"registered quanyu-{name} version {result.version} (alias candidate), run {result.run_id}, "
               f"{spec.date_word} {result.origin}, {result.seconds} s")
    width = max(len(k) for k in spec.headline) + 2
    for key in spec.headline:
        if key in result.metrics:
            click.echo(f"  {key:<{width}} {result.metrics[key]:.4f}")
    from models.registry import Registry

    tags = Registry(runtime.tracking_uri).tags(name, result.version)
    if tags.get("below_baseline"):
        click.echo(f"warning: quanyu-{name} v{result.version} does not beat its baselines ({tags['below_baseline']}); "
                   "the version is tagged below_baseline and the retrain's gate would refuse it", err=True)
    click.echo(f"next: quanyu models promote {name} {result.version}   (make it the champion that serving and "
               f"predict use; or pass --alias candidate to try it first)")


def _train_command(name: str, summary: str) -> click.Command:
    @click.command(name, help=summary + " With --as-of, a backtest's model: trained on the days up to that day only. "
                   "With --as-of-commit, on the curated tables exactly as that lake commit made them (quanyu "
                   f"models show {name} prints each version's).")
    @lake_option
    @click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), default=None,
                  help=f"Family config [default: configs/{name}.yaml when present, else built-in defaults].")
    @click.option("--as-of", "as_of", type=click.DateTime(["%Y-%m-%d"]), default=None,
                  help="The lake as it was on this day (YYYY-MM-DD): later days are not read [default: "
                       "the lake's last day].")
    @click.option("--as-of-commit", "commit", type=click.IntRange(min=1), default=None,
                  help="Read the curated tables as this lake commit made them (quanyu data commits lists "
                       "them) [default: the latest].")
    @click.pass_context
    def command(ctx, lake, config_path, as_of, commit) -> None:
        _train(ctx, name, lake, config_path, as_of.date() if as_of else None, commit)

    return command


@cli.command("retrain")
@lake_option
@click.option("--date", "date", default=None, help="The day whose data arrived, YYYY-MM-DD [default: the lake's last raw day].")
@click.option("--families", default=None, help="Comma-separated subset of the families (quanyu train --help lists "
              "them) [default: configs/retrain.yaml's].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Retrain config with the promotion gates [default: configs/retrain.yaml].")
@click.pass_context
def retrain_cmd(ctx, lake, date, families, config_path) -> None:
    """The daily retrain: validate every new or changed day, merge, train the families in parallel,
    gate, promote. Exit 0 done (promoted or not), 1 data rejected, 2 failure, 3 partitions
    quarantined (stopped before the merge unless configs/retrain.yaml says on_quarantine: continue)."""
    from jobs import retrain as job

    day = parse_dates((date,))[0] if date else None
    config = retrain_config(config_path)
    chosen = None
    if families:
        chosen = [f.strip() for f in families.split(",") if f.strip()]
        unknown = sorted(set(chosen) - set(FAMILIES))
        if unknown or not chosen:
            raise click.BadParameter(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown) or '(none)'}; "
                                     f"choose from {', '.join(FAMILIES)}", param_hint="--families")
    runtime = runtime_of(ctx, lake)
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

    runtime = runtime_of(ctx, lake)
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
