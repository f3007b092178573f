"""The whole pipeline on the embedded default: local Ray, packaged MiniLM, bundled sample data.

    python jobs/quickstart.py --output artifacts/quickstart

A laptop demo, not a cluster entrypoint: it writes to a local directory, so on a multi-node
cluster it stops with an error (use jobs/prepare_data.py and jobs/train.py with gs:// paths).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(
    output: Annotated[str, typer.Option(help="Where data/ and train/ go.")] = (
        "artifacts/quickstart"
    ),
    config: Annotated[str, typer.Option(help="Config file or packaged name.")] = "default",
    epochs: Annotated[int, typer.Option(help="Training epochs over the sample.")] = 1,
    max_steps: Annotated[int | None, typer.Option(help="Cap optimizer steps.")] = None,
) -> None:
    from steam_ray.config import load_config
    from steam_ray.data.pipeline import prepare, print_summary
    from steam_ray.errors import ConfigError
    from steam_ray.storage import require_shared_storage
    from steam_ray.train.trainer import train

    out = Path(output).resolve()
    try:
        require_shared_storage(str(out), "quickstart --output")
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    data_dir, run_dir = str(out / "data"), str(out / "train")
    cfg = load_config(
        config,
        {
            "data": {"output": data_dir, "max_length": 128},
            "train": {
                "data": data_dir,
                "output": run_dir,
                "epochs": epochs,
                "max_steps": max_steps,
            },
        },
    )
    t0 = time.perf_counter()
    typer.secho("== 1/2 data prepare (Ray Data) ==", bold=True)
    manifest = prepare(cfg.data)
    print_summary(manifest)
    typer.secho("== 2/2 train (Ray Train, DDP on CPU/gloo) ==", bold=True)
    result = train(cfg.train)
    typer.echo(json.dumps(result, indent=2, default=str))
    typer.secho(
        f"quickstart done in {time.perf_counter() - t0:.0f}s — best checkpoint: "
        f"{result.get('best_checkpoint')}",
        fg=typer.colors.GREEN,
    )


if __name__ == "__main__":
    typer.run(main)
