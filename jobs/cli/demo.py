"""`quanyu demo` (what `make demo` runs): a brand from nothing to a served champion of every family."""

from __future__ import annotations

import click

from jobs.cli.common import cli, lake_option, refusing, retrain_config, runtime_of
from jobs.cli.data import describe_text
from jobs.runtime import ensure_ray
from lake.generate.scales import SCALES


@cli.command("demo")
@click.option("--scale", type=click.Choice(list(SCALES)), default="chain", show_default=True,
              help="The generated brand: chain (30 cities, 600 stores, 60 SKUs) is the smallest whose stores "
                   "teach the location family enough to pass its gate, so all three families serve.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@lake_option
@click.option("--retrain-config", "retrain_config_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The retrain's config (families, gates, family configs) [default: configs/retrain.yaml].")
@click.pass_context
def demo(ctx, scale, port, lake, retrain_config_path) -> None:
    """The whole loop on generated data: the lake (generated if missing), the daily retrain
    (which validates every day it merges), serving in the background; then the URLs to look at
    (about 6 minutes on 2 cores)."""
    from jobs import describe, generate, retrain, serve

    runtime = runtime_of(ctx, lake)
    lake = runtime.lake
    ensure_ray(runtime)
    if not lake.files("raw", "products"):
        click.echo(f"1/3 generating the {scale} lake under {lake.root} …")
        res = generate.main(generate.GenerateConfig(scale=scale), lake)
        click.echo(f"    {sum(res.lines.values()):,} sales lines, {res.start} … {res.end}, {res.seconds} s")
    else:
        click.echo(f"1/3 lake already at {lake.root}")
    config = retrain_config(retrain_config_path)
    click.echo(f"2/3 the daily retrain (validate and merge every new day, train {', '.join(config.families)}, "
               "gate, promote) …")
    result = retrain.main(config, lake, runtime.tracking_uri, runtime.home, artifact_root=runtime.artifact_root)
    for line in retrain.summary_lines(result, config.gates):
        click.echo("    " + line)
    if result.exit_code not in (retrain.EXIT_DONE, retrain.EXIT_QUARANTINED):  # days set aside: serve the rest
        ctx.exit(result.exit_code)
    click.echo(describe_text(describe.main(lake)))
    click.echo("3/3 serving the champions in the background …")
    import ray

    ray.shutdown()  # the server runs its own Ray in its own process
    with refusing(RuntimeError, TimeoutError):
        info = serve.detach(runtime, "127.0.0.1", port, "champion", 10.0)
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
