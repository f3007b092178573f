"""Deploy the Serve app to the cluster named by RAY_ADDRESS (or a local Ray).

    python jobs/deploy.py --config-file serve.yaml          # the YAML `steam-ray serve build` wrote
    python jobs/deploy.py --checkpoint best [--min-replicas 1 --max-replicas 4] [--config FILE]

Same flags as ``steam-ray serve build``; also a valid ``ray job submit`` entrypoint. Returns once
the app is RUNNING (Serve keeps it running after this process exits).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(
    config_file: Annotated[
        str | None, typer.Option(help="A Serve config YAML (from `steam-ray serve build`).")
    ] = None,
    checkpoint: Annotated[
        str | None, typer.Option(help="Checkpoint dir/URI, best or NAME:VERSION.")
    ] = None,
    registry: Annotated[str | None, typer.Option(help="Registry root (dir or URI).")] = None,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    replicas: Annotated[int | None, typer.Option()] = None,
    min_replicas: Annotated[int | None, typer.Option()] = None,
    max_replicas: Annotated[int | None, typer.Option()] = None,
    backend: Annotated[str | None, typer.Option()] = None,
    config: Annotated[str | None, typer.Option("--config", "-c", help="steam_ray config.")] = None,
    wait_s: Annotated[float, typer.Option(help="How long to wait for RUNNING.")] = 600.0,
) -> None:
    import ray

    from steam_ray.cli import _serve_config
    from steam_ray.serve.run import deploy, serve_config, source_for

    if config_file is not None:
        with open(config_file, encoding="utf-8") as f:
            serve_cfg = yaml.safe_load(f)
    else:
        cfg = _serve_config(
            config,
            False,
            replicas=replicas,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            checkpoint=checkpoint,
            registry=registry,
            host=host,
            port=port,
            backend=backend,
        )
        serve_cfg = serve_config(source_for(cfg.serve, getattr(cfg, "registry", None)), cfg.serve)
    if not os.environ.get("RAY_ADDRESS"):
        typer.secho(
            "error: set RAY_ADDRESS to the cluster to deploy to (`steam-ray serve` runs locally)",
            fg="red",
            err=True,
        )
        raise typer.Exit(code=2)
    ray.init(address=os.environ["RAY_ADDRESS"])
    deploy(serve_cfg, wait_s=wait_s)
    for app in serve_cfg["applications"]:
        typer.secho(f"deployed {app['name']} at route {app['route_prefix']}", fg="green")


if __name__ == "__main__":
    import sys

    from steam_ray.cluster import leave_working_dir

    sys.argv[1:] = leave_working_dir(sys.argv[1:])  # as the other jobs/ entrypoints
    typer.run(main)
