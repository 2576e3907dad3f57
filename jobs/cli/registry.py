"""`quanyu models`: the registered versions of each family, promotion and rollback by hand."""

from __future__ import annotations

import json

import click

from jobs.cli.common import FamilyName, cli, gates, refusing, runtime_of


@cli.group("models")
def models_cmd() -> None:
    """The registry: what each family serves, every version's gate and lineage, promote and roll back."""


def _registry(ctx):
    from models.registry import Registry

    return Registry(runtime_of(ctx, None).tracking_uri)


_family_arg = click.argument("family", type=FamilyName())



@models_cmd.command("list")
@click.pass_context
def models_list(ctx) -> None:
    """Per family: champion, candidate, versions, and the champion's main metric (the metric of
    its gate in configs/retrain.yaml)."""
    registry = _registry(ctx)
    click.echo(f"{'family':<9} {'champion':>8} {'candidate':>9} {'versions':>8}  main metric of the champion")
    for family, gate in gates().items():
        versions = registry.versions(family, gate.metric)
        champion = registry.version(family, "champion")
        candidate = registry.version(family, "candidate")
        value = next((v[gate.metric] for v in versions if v["version"] == champion), None)
        click.echo(f"{family:<9} {('v' + champion) if champion else '-':>8} {('v' + candidate) if candidate else '-':>9} "
                   f"{len(versions):>8}  " + (f"{gate.metric} {value:.4f}" if value is not None else "-"))


@models_cmd.command("show")
@_family_arg
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def models_show(ctx, family, as_json) -> None:
    """Every version of FAMILY, newest first: aliases, main metric, gate verdict, lake days, commit,
    and the lake commit and table snapshots it was trained on."""
    registry = _registry(ctx)
    metric = gates()[family].metric
    versions = registry.versions(family, metric)
    if as_json:
        click.echo(json.dumps({"family": family, "versions": versions, "champion_history": registry.history(family)},
                              indent=1))
        return
    if not versions:
        raise click.ClickException(f"quanyu-{family} has no registered version; run quanyu retrain or quanyu train {family}")
    for v in versions:
        value = f"{v[metric]:.4f}" if v[metric] is not None else "-"
        click.echo(f"v{v['version']:<4} {','.join(v['aliases']) or '-':<20} {metric} {value:<8} lake {v['lake_days']}  "
                   f"commit {v['git_commit'] or '?'}  {v['created']}")
        if v["lake_commit"]:
            click.echo(f"      data: lake commit {v['lake_commit']}; snapshots "
                       + ", ".join(f"{t} {s}" for t, s in sorted(v["lake_snapshots"].items())))
        if v["gate"]:
            click.echo(f"      gate: {v['gate']}")


@models_cmd.command("promote")
@_family_arg
@click.argument("version")
@click.pass_context
def models_promote(ctx, family, version) -> None:
    """Make VERSION of FAMILY the champion by hand (serving follows within its poll interval)."""
    from mlflow.exceptions import MlflowException

    try:
        previous = _registry(ctx).promote(family, version.lstrip("v"), "promoted by hand", by="hand")
    except MlflowException:
        raise click.ClickException(f"quanyu-{family} has no version {version}; see quanyu models show {family}") from None
    click.echo(f"quanyu-{family}: champion v{previous or '-'} -> v{version.lstrip('v')}")


@models_cmd.command("rollback")
@_family_arg
@click.pass_context
def models_rollback(ctx, family) -> None:
    """Point FAMILY's champion back at the version it had before the current one."""
    with refusing(ValueError):
        current, target = _registry(ctx).rollback(family)
    click.echo(f"quanyu-{family}: champion v{current} -> v{target} (rolled back)")
