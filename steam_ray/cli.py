"""The ``steam-ray`` command line: thin wrappers over the stage functions.

Every flag defaults to ``None`` so that only flags the user actually passed override the config
file; the stage functions themselves take a typed config and nothing else.

A stage command (``data prepare``, ``train``, ``tune``) has many options, so a long signature,
and a body of the same few steps: config overrides from its flags (``_overrides``: one keyword
per flag, named as the config key it sets), ``_load`` the config, ``_require_shared`` storage in
a cluster job, ``_run`` the stage (user errors: one line, exit 1), print its result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Annotated, Any, TypeVar, get_args

import typer

from steam_ray.config import Backend, Config, DataConfig, load_config
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
tune_app = typer.Typer(
    help="Hyperparameter sweeps (Ray Tune over Ray Train); `tune report OUTPUT` for plots.",
    invoke_without_command=True,
)
app.add_typer(tune_app, name="tune")
registry_app = typer.Typer(
    help="The model registry: list, show, promote, path.", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")
serve_app = typer.Typer(
    help="Serve a checkpoint over HTTP (Ray Serve); `serve build` writes its Serve config.",
    invoke_without_command=True,
)
app.add_typer(serve_app, name="serve")

T = TypeVar("T")

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="YAML config file, or a packaged one by name (cluster)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Any config key, repeatable: --set train.lr=1e-4 --set data.batch_size=256 "
        "(after the file and the flags; validated like the file).",
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]
SharedFsOpt = Annotated[
    bool,
    typer.Option(
        "--shared-fs",
        help="A local --output is on a mount every Ray node shares (NFS, Filestore, GCS FUSE). "
        "Cluster jobs (jobs/*.py) refuse a local path on a multi-node cluster otherwise.",
    ),
]


@app.callback()
def _root(
    ctx: typer.Context,
    job: Annotated[
        bool, typer.Option("--job", hidden=True, help="Run as a cluster job (jobs/*.py).")
    ] = False,
) -> None:
    ctx.obj = {"job": job}


def run_job(argv: list[str]) -> None:
    """The ``jobs/*.py`` entrypoints: the CLI plus the checks only a cluster job needs."""
    from steam_ray.cluster import leave_working_dir

    app(["--job", *leave_working_dir(argv)])


def _require_shared(ctx: typer.Context, debug: bool, shared_fs: bool, **paths: str) -> None:
    """In a cluster job, refuse node-local paths on a multi-node cluster (see storage)."""
    from steam_ray.storage import require_shared_storage

    if not (ctx.obj or {}).get("job"):
        return
    for what, path in paths.items():
        _run(debug, partial(require_shared_storage, path, what, shared_fs=shared_fs))


RegistryOpt = Annotated[
    str | None,
    typer.Option(help="Register the best checkpoint in this registry (dir or gs:// / s3:// URI)."),
]
ModelNameOpt = Annotated[str | None, typer.Option(help="Registry model name.")]
GpusPerWorkerOpt = Annotated[
    float | None, typer.Option(help="GPUs per worker with --use-gpu (< 1: trials share a GPU).")
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Move the best pointer even if not better (recorded).")
]
RootOpt = Annotated[
    str | None, typer.Option("--root", "-r", help="Registry dir or URI (default: config).")
]


def _passed(**flags: Any) -> dict[str, Any]:
    """The flags the user actually passed: every flag defaults to None (see the module doc)."""
    return {k: v for k, v in flags.items() if v is not None}


def _overrides(section: str, **flags: Any) -> dict[str, Any]:
    """Config overrides ``{section: {key: value}}`` from the flags actually passed."""
    return {section: _passed(**flags)}


def _echo_json(result: Any) -> None:
    """A command's result on stdout, as indented JSON (paths and dates as strings)."""
    typer.echo(json.dumps(result, indent=2, default=str))


def _run(debug: bool, fn: Callable[[], T]) -> T:
    """Run a stage; user errors become one clear line and exit code 1."""
    try:
        return fn()
    except (SteamRayError, OSError, ValueError) as exc:
        if debug or os.environ.get("STEAM_RAY_DEBUG"):
            raise
        from steam_ray.cluster import describe_os_error

        message = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None


def _load(
    config: str | None, overrides: dict[str, Any], debug: bool, sets: list[str] | None = None
) -> Config:
    """The config file, then the flags, then ``--set key=value`` (all validated together)."""
    return _run(debug, lambda: load_config(config, overrides, sets))


# Long only in its signature (one typer option per flag); the body is the module docstring's steps.
@data_app.command("prepare")
def data_prepare(
    ctx: typer.Context,
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
    shared_fs: SharedFsOpt = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Clean, label, split (no group leak), tokenize and write Parquet shards + a manifest."""
    from steam_ray.data.pipeline import prepare, print_summary

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
        csv_chunk_bytes=_mib_to_bytes(csv_chunk_mb),
        keep_rejected=keep_rejected,
    )
    columns = _passed(
        text=text_column,
        label=label_column,
        group=group_column,
        positive=positive,
        negative=negative,
    )
    if columns:  # else the source's own column map stays whole
        overrides["data"]["columns"] = columns
    cfg = _load(config, overrides, debug, sets)
    _require_shared(ctx, debug, shared_fs, **_prepare_paths(cfg))
    print_summary(_run(debug, lambda: prepare(cfg.data)))


def _mib_to_bytes(mib: float | None) -> int | None:
    return None if mib is None else int(mib * 1024 * 1024)


# Long only in its signature (one typer option per flag); the body is the module docstring's steps.
@app.command("train")
def train(
    ctx: typer.Context,
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="Prepared data dir (data prepare output).")
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Run dir or URI (gs://, s3://).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Hub name or local path.")] = None,
    num_workers: Annotated[int | None, typer.Option(help="DDP workers.")] = None,
    use_gpu: Annotated[bool | None, typer.Option("--use-gpu/--no-gpu")] = None,
    gpus_per_worker: GpusPerWorkerOpt = None,
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
    shared_fs: SharedFsOpt = False,
    registry: RegistryOpt = None,
    model_name: ModelNameOpt = None,
    force: ForceOpt = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
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
        gpus_per_worker=gpus_per_worker,
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
    overrides["registry"] = _passed(model_name=model_name)
    cfg = _load(config, overrides, debug, sets)
    _require_shared(ctx, debug, shared_fs, **_train_paths(cfg, registry))
    result = _run(debug, lambda: run_training(cfg.train))
    if registry is not None:
        result["registered"] = _run(debug, lambda: _register_run(cfg, result, registry, force))
    _echo_json(result)


def _prepare_paths(cfg: Config) -> dict[str, str]:
    """What prepare's read and write tasks open on every node (an hf --input is a hub name)."""
    paths = {"data prepare --output": cfg.data.output}
    if cfg.data.input is not None and cfg.data.source != "hf":
        paths["data prepare --input"] = cfg.data.input
    return paths


def _train_paths(cfg: Config, registry: str | None) -> dict[str, str]:
    """What train's workers read (--data) and write (--output, --registry) on every node."""
    paths = {"train --data": cfg.train.data, "train --output": cfg.train.output}
    return {**paths, **({"train --registry": registry} if registry else {})}


def _register_run(cfg: Config, result: dict[str, Any], root: str, force: bool) -> dict[str, Any]:
    from steam_ray.registry import register_checkpoint

    reg = register_checkpoint(
        root,
        cfg.registry.model_name,
        result["best_checkpoint"],
        metric=cfg.train.checkpoint_metric,
        mode=cfg.train.resolved_checkpoint_mode(),
        config={"train": cfg.train.model_dump(mode="json")},
        lineage={"run_dir": result["run_dir"], "tokenizer": cfg.train.model},
        force=force,
        reason=f"train run {result['run_dir']}",
    )
    _echo_registration(reg)
    return {"version": reg.version.version, "path": reg.version.path, "promoted": reg.promoted}


def _echo_registration(reg: Any) -> None:
    v = reg.version
    state = "now best" if reg.promoted else "best pointer unchanged"
    typer.secho(f"registered {v.name}:{v.version} ({state}: {reg.reason})", err=True)


# Long only in its signature (one typer option per flag); the body is the module docstring's steps.
@tune_app.callback()
def tune(
    ctx: typer.Context,
    data: Annotated[str | None, typer.Option("--data", "-d", help="Prepared data dir.")] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Sweep dir or URI (the Tune experiment).")
    ] = None,
    registry: RegistryOpt = None,
    num_samples: Annotated[int | None, typer.Option(help="Trials.")] = None,
    max_concurrent: Annotated[
        int | None, typer.Option(help="Trials at once (default: what the cluster fits).")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps per trial.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per trial.")] = None,
    search: Annotated[str | None, typer.Option(help="optuna | random")] = None,
    scheduler: Annotated[str | None, typer.Option(help="asha | fifo")] = None,
    metric: Annotated[str | None, typer.Option(help="Metric to optimise (macro_f1).")] = None,
    mode: Annotated[str | None, typer.Option(help="max | min")] = None,
    num_workers: Annotated[int | None, typer.Option(help="DDP workers per trial.")] = None,
    cpus_per_worker: Annotated[float | None, typer.Option()] = None,
    use_gpu: Annotated[bool | None, typer.Option("--use-gpu/--no-gpu")] = None,
    gpus_per_worker: GpusPerWorkerOpt = None,
    eval_every_steps: Annotated[int | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option(help="Base model of every trial.")] = None,
    seed: Annotated[int | None, typer.Option(help="Searcher seed.")] = None,
    model_name: ModelNameOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the sweep in --output (Tuner.restore).")
    ] = False,
    shared_fs: SharedFsOpt = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Sweep hyperparameters: Ray Tune (Optuna TPE + ASHA) over Ray Train runs."""
    if ctx.invoked_subcommand is not None:
        return
    from steam_ray.tune import sweep

    overrides = _overrides(
        "tune",
        output=output,
        registry=registry,
        num_samples=num_samples,
        max_concurrent=max_concurrent,
        search=search,
        scheduler=scheduler,
        metric=metric,
        mode=mode,
        seed=seed,
    )
    overrides["tune"]["train"] = _trial_overrides(
        data=data,
        max_steps=max_steps,
        epochs=epochs,
        num_workers=num_workers,
        cpus_per_worker=cpus_per_worker,
        use_gpu=use_gpu,
        gpus_per_worker=gpus_per_worker,
        eval_every_steps=eval_every_steps,
        model=model,
    )
    overrides["registry"] = _passed(model_name=model_name)
    cfg = _load(config, overrides, debug, sets)
    _require_shared(ctx, debug, shared_fs, **_tune_paths(cfg))
    result = _run(debug, lambda: sweep(cfg, resume=resume))
    _echo_json(_sweep_summary(result))


def _trial_overrides(**flags: Any) -> dict[str, Any]:
    """tune.train (each trial's train overrides) from the flags, so they win over the file's."""
    train = _passed(**flags)
    if flags["max_steps"] is None and flags["epochs"] is not None:
        train["max_steps"] = None  # --epochs: run whole epochs
    return train


def _tune_paths(cfg: Config) -> dict[str, str]:
    """What a sweep's trials read and write on every node."""
    paths = {
        "tune --output": cfg.tune.output,
        "tune --data": cfg.tune.train.get("data") or cfg.train.data,
    }
    return {**paths, **({"tune --registry": cfg.tune.registry} if cfg.tune.registry else {})}


def _sweep_summary(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("metric", "mode", "best_trial_id", "best_metrics", "best_config", "best_checkpoint")
    out = {k: result.get(k) for k in keys}
    out["trials"] = [
        {k: t[k] for k in ("trial_id", "status", "iterations", "stopped_early")}
        for t in result["trials"]
    ]
    out["registered"] = result.get("registered")
    out["result"] = f"{result['output']}/result.json"
    return out


@tune_app.command("report")
def tune_report(
    output: Annotated[str, typer.Argument(help="A sweep's output dir (holds result.json).")],
    debug: DebugOpt = False,
) -> None:
    """Write OUTPUT/report.html with PNG plots: metric per trial, curves, hyperparameters."""
    from steam_ray.tune_report import write_report

    path = _run(debug, lambda: write_report(output))
    typer.echo(path)


def _registry(root: str | None, config: str | None, debug: bool) -> Any:
    from steam_ray.registry import Registry

    cfg = _load(config, {}, debug)
    return Registry(root or cfg.registry.root, cfg.registry.model_name)


@registry_app.command("list")
def registry_list(root: RootOpt = None, config: ConfigOpt = None, debug: DebugOpt = False) -> None:
    """Every model and version; * marks the best pointer."""
    reg = _registry(root, config, debug)

    def show() -> None:
        names = reg.names()
        if not names:
            typer.echo(f"registry {reg.root} is empty")
        for name in names:
            pointer = reg.best_pointer(name) or {}
            for version in reg.version_ids(name):
                info = reg.version_info(name, version)
                mark = "*" if pointer.get("version") == version else " "
                typer.echo(f"{mark} {name}:{version}  {info['metric']}={info['score']}")

    _run(debug, show)


@registry_app.command("show")
def registry_show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME:best or NAME:VERSION")],
    root: RootOpt = None,
    config: ConfigOpt = None,
    debug: DebugOpt = False,
) -> None:
    """A version's path, metrics, lineage and config (JSON)."""
    from dataclasses import asdict

    reg = _registry(root, config, debug)

    def show() -> None:
        mv = reg.resolve(ref)
        data = asdict(mv)
        data["best_pointer"] = reg.best_pointer(mv.name)
        _echo_json(data)

    _run(debug, show)


@registry_app.command("promote")
def registry_promote(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION")],
    force: ForceOpt = False,
    root: RootOpt = None,
    config: ConfigOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Point NAME's best at VERSION: only if it is better, unless --force (recorded)."""
    reg = _registry(root, config, debug)

    def promote() -> None:
        name, _, version = ref.partition(":")
        if not version or version == "best":
            raise ValueError(f"promote needs NAME:VERSION, got {ref!r}")
        _echo_registration(
            reg.promote(name, version, force=force, reason="steam-ray registry promote")
        )

    _run(debug, promote)


@registry_app.command("path")
def registry_path(
    ref: Annotated[str, typer.Argument(help="NAME[:best|VERSION] or best")],
    root: RootOpt = None,
    config: ConfigOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Print the HF checkpoint dir of a version (for from_pretrained / Serve)."""
    reg = _registry(root, config, debug)
    typer.echo(_run(debug, lambda: reg.resolve(ref).path))


CheckpointOpt = Annotated[
    str | None,
    typer.Option(
        help="Checkpoint dir or URI (gs://, s3://), or a registry ref: best, NAME:VERSION."
    ),
]
ServeRegistryOpt = Annotated[
    str | None, typer.Option(help="Registry root (dir or URI) for best / NAME:VERSION refs.")
]
HostOpt = Annotated[str | None, typer.Option(help="HTTP host (default 127.0.0.1).")]
PortOpt = Annotated[int | None, typer.Option(help="HTTP port (default 8000).")]
ReplicasOpt = Annotated[
    int | None, typer.Option(help="Fixed model replicas (sets min and max replicas).")
]
MinReplicasOpt = Annotated[int | None, typer.Option(help="Autoscaling: fewest model replicas.")]
MaxReplicasOpt = Annotated[int | None, typer.Option(help="Autoscaling: most model replicas.")]
BackendOpt = Annotated[str | None, typer.Option(help=" | ".join(get_args(Backend)))]


def _serve_config(
    config: str | None,
    debug: bool,
    *,
    replicas: int | None,
    min_replicas: int | None,
    max_replicas: int | None,
    **flags: Any,
) -> Config:
    overrides = _overrides("serve", **flags)
    if replicas is not None and (min_replicas is not None or max_replicas is not None):
        typer.secho("error: --replicas excludes --min/--max-replicas", fg="red", err=True)
        raise typer.Exit(code=2)
    scale = {"min_replicas": replicas, "max_replicas": replicas} if replicas else {}
    scale.update(
        {k: v for k, v in (("min_replicas", min_replicas), ("max_replicas", max_replicas)) if v}
    )
    if scale:
        overrides["serve"]["autoscaling"] = scale
    return _load(config, overrides, debug)


@serve_app.callback()
def serve_run(
    ctx: typer.Context,
    checkpoint: CheckpointOpt = None,
    registry: ServeRegistryOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    replicas: ReplicasOpt = None,
    min_replicas: MinReplicasOpt = None,
    max_replicas: MaxReplicasOpt = None,
    backend: BackendOpt = None,
    config: ConfigOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Serve a checkpoint on Ray Serve; blocks until Ctrl-C / SIGTERM, then shuts down cleanly."""
    if ctx.invoked_subcommand is not None:
        return
    from steam_ray.serve.run import run_server, source_for

    cfg = _serve_config(
        config,
        debug,
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        checkpoint=checkpoint,
        registry=registry,
        host=host,
        port=port,
        backend=backend,
    )
    source = _run(debug, lambda: source_for(cfg.serve, getattr(cfg, "registry", None)))
    _run(debug, lambda: run_server(source, cfg.serve))


@serve_app.command("build")
def serve_build(
    output: Annotated[
        str, typer.Option("--output", "-o", help="Where to write the Serve config YAML.")
    ],
    checkpoint: CheckpointOpt = None,
    registry: ServeRegistryOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    replicas: ReplicasOpt = None,
    min_replicas: MinReplicasOpt = None,
    max_replicas: MaxReplicasOpt = None,
    backend: BackendOpt = None,
    config: ConfigOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Write the Serve config YAML (`serve deploy`, KubeRay RayService serveConfigV2)."""
    from steam_ray.serve.run import serve_config_yaml, unresolved_source

    cfg = _serve_config(
        config,
        debug,
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        checkpoint=checkpoint,
        registry=registry,
        host=host,
        port=port,
        backend=backend,
    )
    source = _run(debug, lambda: unresolved_source(cfg.serve, getattr(cfg, "registry", None)))
    text = serve_config_yaml(source, cfg.serve)
    if output == "-":
        typer.echo(text, nl=False)
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
        typer.echo(f"wrote {output}")


@app.command("quickstart")
def quickstart(
    workdir: Annotated[
        str, typer.Option("--workdir", "-w", help="Where every stage's output goes.")
    ] = "artifacts/quickstart",
    keep_serving: Annotated[
        bool, typer.Option("--serve", help="Keep serving at the end until Ctrl-C.")
    ] = False,
    port: PortOpt = None,
    config: Annotated[
        str, typer.Option("--config", "-c", help="YAML config file or packaged name.")
    ] = "quickstart",
    sets: SetOpt = None,
    debug: DebugOpt = False,
) -> None:
    """The whole pipeline on local Ray: prepare, train, sweep, register, evaluate, predict,
    serve (the packaged quickstart config; WORKDIR/summary.json holds the results)."""
    from steam_ray import quickstart as qs

    extra = [*(sets or []), *([f"serve.port={port}"] if port is not None else [])]
    cfg = _run(debug, lambda: qs.quickstart_config(workdir, config, extra))
    _run(debug, lambda: qs.quickstart(cfg, workdir, keep_serving=keep_serving))


# Long only in its signature (one typer option per flag); the body is the module docstring's steps.
@app.command("predict")
def predict(
    ctx: typer.Context,
    checkpoint: CheckpointOpt = None,
    input: Annotated[
        str | None,
        typer.Option("--input", "-i", help="CSV / Parquet / JSONL file or dir (gs://, s3://)."),
    ] = None,
    format: Annotated[
        str | None, typer.Option("--format", help="auto | csv | parquet | jsonl (auto: extension).")
    ] = None,
    text_column: Annotated[str | None, typer.Option(help="Review text column (text).")] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Output dir or URI (Parquet, summary).")
    ] = None,
    backend: BackendOpt = None,
    use_gpu: Annotated[bool | None, typer.Option("--use-gpu/--no-gpu")] = None,
    registry: ServeRegistryOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="Rows per scoring batch.")] = None,
    actors: Annotated[
        int | None, typer.Option(help="Scoring actors (default: one per cluster CPU/GPU).")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="positive iff score >= T (default: the version's tuned one, or 0.5)."),
    ] = None,
    shared_fs: SharedFsOpt = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Score every review of a file or dir with a checkpoint (Ray Data actor pool): Parquet
    with label, score, model_version; rejected rows (with their reason) under rejected/."""
    from steam_ray.predict import predict as run_predict
    from steam_ray.predict import print_summary

    overrides = _overrides(
        "predict",
        checkpoint=checkpoint,
        input=input,
        format=format,
        text_column=text_column,
        output=output,
        backend=backend,
        use_gpu=use_gpu,
        registry=registry,
        batch_size=batch_size,
        actors=actors,
        threshold=threshold,
    )
    cfg = _load(config, overrides, debug, sets)
    section = cfg.predict
    if section.registry is None:  # the registry: section's root, as serve does
        section = section.model_copy(update={"registry": cfg.registry.root})
    paths = {"predict --output": section.output, "predict --input": section.input or ""}
    _require_shared(ctx, debug, shared_fs, **{k: v for k, v in paths.items() if v})
    print_summary(_run(debug, lambda: run_predict(section)))


# Long only in its signature (one typer option per flag); the body is the module docstring's steps.
@app.command("evaluate")
def evaluate(
    ctx: typer.Context,
    checkpoint: CheckpointOpt = None,
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="Prepared data dir (data prepare output).")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split to report on: test | val | train (default test).")
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Report dir or URI (metrics.json, report.html)."),
    ] = None,
    backend: BackendOpt = None,
    use_gpu: Annotated[bool | None, typer.Option("--use-gpu/--no-gpu")] = None,
    registry: ServeRegistryOpt = None,
    actors: Annotated[
        int | None, typer.Option(help="Scoring actors (default: one per cluster CPU/GPU).")
    ] = None,
    shared_fs: SharedFsOpt = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Metrics (threshold tuned on val, bootstrap intervals, calibration, slices), report.html
    and a model card; attached to the registry version when the checkpoint is one."""
    from steam_ray.evaluate import evaluate as run_evaluate

    overrides = _overrides(
        "evaluate",
        checkpoint=checkpoint,
        data=data,
        split=split,
        output=output,
        backend=backend,
        use_gpu=use_gpu,
        registry=registry,
        actors=actors,
    )
    cfg = _load(config, overrides, debug, sets)
    section = cfg.evaluate
    if section.registry is None:  # the registry: section's root, as serve does
        section = section.model_copy(update={"registry": cfg.registry.root})
    # Ray Data tasks read --data on any node; the driver alone writes --output.
    _require_shared(ctx, debug, shared_fs, **{"evaluate --data": section.data})
    _echo_json(_run(debug, lambda: run_evaluate(section)))


@app.command("monitor")
def monitor(
    ctx: typer.Context,
    reference: Annotated[
        str | None,
        typer.Option(help="Prepared data dir (its val split) or a registry NAME:VERSION."),
    ] = None,
    current: Annotated[
        str | None,
        typer.Option(help="Prediction log dir, `steam-ray predict` output, or prepared data dir."),
    ] = None,
    checkpoint: CheckpointOpt = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only log rows at or after this time (ISO 8601).")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split of a prepared --current dir (default test).")
    ] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column of --current.")] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Report dir (drift.json, report.html).")
    ] = None,
    backend: BackendOpt = None,
    registry: ServeRegistryOpt = None,
    shared_fs: SharedFsOpt = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Compare a window of traffic with the training data: drift.json and report.html."""
    from steam_ray.monitor import monitor as run_monitor

    overrides = _overrides(
        "monitor",
        reference=reference,
        current=current,
        checkpoint=checkpoint,
        since=since,
        split=split,
        text_column=text_column,
        output=output,
        backend=backend,
        registry=registry,
    )
    cfg = _load(config, overrides, debug, sets)
    section = cfg.monitor
    if section.registry is None:  # the registry: section's root, as serve does
        section = section.model_copy(update={"registry": cfg.registry.root})
    # Ray Data tasks read the reference data on any node; the driver writes --output.
    ref = section.reference
    if ref and ":" not in ref.split("://")[-1]:  # a data dir, not a registry NAME:VERSION
        _require_shared(ctx, debug, shared_fs, **{"monitor --reference": ref})
    _echo_json(_run(debug, lambda: run_monitor(section)))


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
