"""The ``steam-ray`` command line: thin wrappers over the stage functions.

Every flag defaults to ``None`` so that only flags the user actually passed override the config
file; the stage functions themselves take a typed config and nothing else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from steam_ray.config import Config, DataConfig, load_config
from steam_ray.errors import SteamRayError

# The help text quotes the config's default, so the two cannot drift apart.
_CSV_CHUNK_MB = DataConfig.model_fields["csv_chunk_bytes"].default / (1024 * 1024)

app = typer.Typer(
    name="steam-ray",
    help="Fine-tune and serve a Steam review sentiment classifier on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Data preparation (Ray Data).", no_args_is_help=True)
app.add_typer(data_app, name="data")

T = TypeVar("T")

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="YAML config file, or a packaged one by name (cluster)."),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]


def _overrides(section: str, **flags: Any) -> dict[str, Any]:
    return {section: {k: v for k, v in flags.items() if v is not None}}


def _run(debug: bool, fn: Callable[[], T]) -> T:
    """Run a stage; user errors become one clear line and exit code 1."""
    try:
        return fn()
    except (SteamRayError, FileNotFoundError, ValueError) as exc:
        if debug or os.environ.get("STEAM_RAY_DEBUG"):
            raise
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None


def _load(config: str | None, overrides: dict[str, Any], debug: bool) -> Config:
    return _run(debug, lambda: load_config(config, overrides))


@data_app.command("prepare")
def data_prepare(
    source: Annotated[
        str | None,
        typer.Option(help="steam | sample | csv | parquet | jsonl | hf"),
    ] = None,
    input: Annotated[
        str | None,
        typer.Option("--input", "-i", help="Input file/dir/URI (gs://, s3://) or HF dataset."),
    ] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Output dir or URI.")] = None,
    model: Annotated[str | None, typer.Option(help="Tokenizer: hub name or local path.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Truncate token ids at N.")] = None,
    split_by: Annotated[str | None, typer.Option(help="group | random")] = None,
    val_fraction: Annotated[float | None, typer.Option()] = None,
    test_fraction: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    text_column: Annotated[str | None, typer.Option(help="Generic sources: text column.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Generic sources: label column.")] = None,
    group_column: Annotated[
        str | None, typer.Option(help="Generic sources: group column (no leak across splits).")
    ] = None,
    positive: Annotated[
        list[str] | None, typer.Option(help="Raw label value(s) meaning positive.")
    ] = None,
    negative: Annotated[
        list[str] | None, typer.Option(help="Raw label value(s) meaning negative.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Read at most N rows (smoke runs).")] = None,
    tokenizer_actors: Annotated[
        int | None, typer.Option(help="Tokenizer actors (default: one per cluster CPU).")
    ] = None,
    csv_chunk_mb: Annotated[
        float | None,
        typer.Option(help=f"Target MB per CSV read task (default {_CSV_CHUNK_MB:g})."),
    ] = None,
    keep_rejected: Annotated[
        bool | None,
        typer.Option("--keep-rejected/--no-keep-rejected", help="Write dropped rows aside."),
    ] = None,
    config: ConfigOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Clean, label, split (no group leak), tokenize and write Parquet shards + a manifest."""
    from steam_ray.data.pipeline import prepare, print_summary

    columns: dict[str, Any] = {
        k: v
        for k, v in {
            "text": text_column,
            "label": label_column,
            "group": group_column,
            "positive": positive,
            "negative": negative,
        }.items()
        if v is not None
    }
    overrides = _overrides(
        "data",
        source=source,
        input=input,
        output=output,
        model=model,
        max_length=max_length,
        split_by=split_by,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        limit=limit,
        tokenizer_actors=tokenizer_actors,
        csv_chunk_bytes=None if csv_chunk_mb is None else int(csv_chunk_mb * 1024 * 1024),
        keep_rejected=keep_rejected,
    )
    if columns:
        overrides["data"]["columns"] = columns
    cfg = _load(config, overrides, debug)
    manifest = _run(debug, lambda: prepare(cfg.data))
    print_summary(manifest)


@app.command("train")
def train(
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="Prepared data dir (data prepare output).")
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Run dir or URI (gs://, s3://).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Hub name or local path.")] = None,
    num_workers: Annotated[int | None, typer.Option(help="DDP workers.")] = None,
    use_gpu: Annotated[bool | None, typer.Option("--use-gpu/--no-gpu")] = None,
    cpus_per_worker: Annotated[float | None, typer.Option()] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Per-worker micro-batch.")] = None,
    token_budget: Annotated[
        int | None, typer.Option(help="Length-bucketed batches of at most N tokens.")
    ] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    grad_accum_steps: Annotated[int | None, typer.Option()] = None,
    class_weighted: Annotated[
        bool | None, typer.Option("--class-weighted/--no-class-weighted")
    ] = None,
    eval_every_steps: Annotated[int | None, typer.Option()] = None,
    max_failures: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    placement_strategy: Annotated[
        str | None, typer.Option(help="PACK | SPREAD | STRICT_PACK | STRICT_SPREAD")
    ] = None,
    experiment_name: Annotated[
        str | None, typer.Option(help="Run name under --output; re-using one resumes it.")
    ] = None,
    config: ConfigOpt = None,
    debug: DebugOpt = False,
) -> None:
    """DDP fine-tuning with Ray Train (TorchTrainer): checkpoints, metrics, resume on failure."""
    from steam_ray.train.trainer import train as run_training

    overrides = _overrides(
        "train",
        data=data,
        output=output,
        model=model,
        num_workers=num_workers,
        use_gpu=use_gpu,
        cpus_per_worker=cpus_per_worker,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        token_budget=token_budget,
        lr=lr,
        grad_accum_steps=grad_accum_steps,
        class_weighted=class_weighted,
        eval_every_steps=eval_every_steps,
        max_failures=max_failures,
        seed=seed,
        placement_strategy=placement_strategy,
        experiment_name=experiment_name,
    )
    cfg = _load(config, overrides, debug)
    result = _run(debug, lambda: run_training(cfg.train))
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command("config")
def show_config(config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Print the resolved config (defaults <- file) as YAML."""
    import yaml

    cfg = _load(config, {}, debug)
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
