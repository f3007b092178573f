"""The driver side of training: validate inputs, launch the TorchTrainer, write result.json."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from steam_ray import cluster, storage
from steam_ray.config import RESUME_KEYS, TrainConfig, resolve_model
from steam_ray.data.manifest import Manifest, read_manifest, split_dir, tokenizer_fingerprint
from steam_ray.errors import ConfigError, DataError
from steam_ray.train.checkpoint import (
    INFO_FILE,
    git_sha,
    now_iso,
    package_version,
    read_attempts,
)
from steam_ray.train.data import read_eval_split, read_train_split
from steam_ray.train.metrics import METRIC_NAMES, json_safe
from steam_ray.train.recipe import train_loop_per_worker

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
REQUIRED_SPLITS: tuple[str, ...] = ("train", "val")
INGEST_TASK_CPUS = 0.25


def _parquet_files(directory: str) -> list[str]:
    fs, inner = storage.resolve(directory)
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    return [i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")]


def validate_inputs(cfg: TrainConfig) -> Manifest:
    """Every check that can fail on user input, run in the driver before any worker starts."""
    if cfg.checkpoint_metric not in METRIC_NAMES:
        raise ConfigError(
            f"checkpoint_metric {cfg.checkpoint_metric!r} is not a validation metric "
            f"(one of: {', '.join(METRIC_NAMES)})"
        )
    if cfg.use_gpu is False and cfg.amp == "fp16":
        raise ConfigError("amp: fp16 needs a GPU (use bf16 or off on CPU)")
    manifest = read_manifest(cfg.data)
    for split in REQUIRED_SPLITS:
        directory = split_dir(cfg.data, split)
        if not storage.is_dir(directory):
            raise DataError(f"{directory}: split directory missing (data dir {cfg.data})")
        if not _parquet_files(directory):
            raise DataError(f"{directory}: no .parquet files in the {split} split")
        stats = manifest.splits.get(split)
        if stats is None or stats.rows == 0:
            raise DataError(f"{cfg.data}: the manifest lists no {split} rows")
    from transformers import AutoTokenizer

    source = resolve_model(cfg.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the tokenizer of model {cfg.model!r}: {exc}") from exc
    fingerprint = tokenizer_fingerprint(tokenizer)
    if fingerprint != manifest.tokenizer_fingerprint:
        raise DataError(
            f"{cfg.data} was tokenized with {manifest.tokenizer_name!r} (tokenizer "
            f"{manifest.tokenizer_fingerprint}) but model {cfg.model!r} uses tokenizer "
            f"{fingerprint}: re-run `steam-ray data prepare --model {cfg.model}`"
        )
    return manifest


def latest_checkpoint_info(run_dir: str) -> tuple[str, dict[str, Any]] | None:
    """(path, steam_ray.json) of the newest checkpoint a run dir holds, or None."""
    fs, inner = storage.resolve(run_dir)
    infos = fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True))
    dirs = sorted(
        (i.path for i in infos if i.type == pafs.FileType.Directory),
        key=lambda p: p.rsplit("/", 1)[-1],
    )
    for path in reversed([d for d in dirs if d.rsplit("/", 1)[-1].startswith("checkpoint_")]):
        info_path = storage.join(run_dir, path.rsplit("/", 1)[-1], INFO_FILE)
        if storage.exists(info_path):
            return info_path, storage.read_json(info_path)
    return None


def check_resume(cfg: TrainConfig, manifest: Manifest, run_dir: str) -> None:
    """Refuse to resume a named run on other data or with another training set-up.

    Ray Train resumes a run dir from its latest checkpoint; if that checkpoint was trained
    on different data or settings, resuming would silently mix two experiments.
    """
    found = latest_checkpoint_info(run_dir)
    if found is None:
        return
    path, info = found
    problems: list[str] = []
    current_data = {
        "data_fingerprint": manifest.fingerprint,
        "tokenizer_fingerprint": manifest.tokenizer_fingerprint,
    }
    for key, now in current_data.items():
        if info.get(key) != now:
            problems.append(f"{key}: checkpoint {info.get(key)!r}, now {now!r}")
    saved = info.get("config", {})
    current = cfg.model_dump(mode="json")
    for key in RESUME_KEYS:
        if key in saved and saved[key] != current[key]:
            problems.append(f"{key}: checkpoint {saved[key]!r}, now {current[key]!r}")
    if problems:
        raise ConfigError(
            f"cannot resume run {run_dir}: its latest checkpoint ({path}) differs: "
            + "; ".join(problems)
            + ". Use a new --experiment-name (or the original data/settings)."
        )


def _storage_path(output: str) -> str:
    return output if storage.is_uri(output) else str(Path(output).expanduser().resolve())


def run_info_for(cfg: TrainConfig, manifest: Manifest, run_dir: str, name: str) -> dict[str, Any]:
    """What every worker needs to know about the run beyond its config (lineage, class counts)."""
    train_stats = manifest.splits["train"]
    return {
        "run_dir": run_dir,
        "experiment_name": name,
        "data_fingerprint": manifest.fingerprint,
        "tokenizer_fingerprint": manifest.tokenizer_fingerprint,
        "train_rows": train_stats.rows,
        "train_tokens": train_stats.tokens,
        "train_positive": train_stats.positive,
        "train_negative": train_stats.negative,
        "val_rows": manifest.splits["val"].rows,
        "version": package_version(),
        "git_sha": git_sha(),
        "started_at": now_iso(),
    }


def scaling_config(cfg: TrainConfig) -> Any:
    """Workers and what each reserves; a GPU share below 1 packs trials onto one GPU."""
    from ray.train import ScalingConfig

    resources: dict[str, float] = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = cfg.gpus_per_worker
    return ScalingConfig(
        num_workers=cfg.num_workers,
        use_gpu=cfg.use_gpu,
        resources_per_worker=resources,
        placement_strategy=cfg.placement_strategy,
    )


def build_trainer(
    cfg: TrainConfig,
    run_info: dict[str, Any],
    *,
    storage_path: str,
    name: str,
    callbacks: list[Any] | None = None,
    worker_env: dict[str, str] | None = None,
) -> Any:
    """The TorchTrainer for one run: used by ``train`` and by each Tune trial."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    # Only the columns training needs: text/group stay on disk. Read tasks ask for a fraction
    # of a CPU: next to fractional workers (and parallel Tune trials) the free CPU is split
    # across nodes (0.5 + 0.5), and 1-CPU read tasks would then never be scheduled (a hang).
    columns = ["input_ids", "label"]
    datasets: dict[str, Any] = {
        "train": read_train_split(
            split_dir(cfg.data, "train"), columns, cfg.seed, num_cpus=INGEST_TASK_CPUS
        ),
        "val": read_eval_split(
            split_dir(cfg.data, "val"),
            columns,
            cfg.seed,
            rows=run_info["val_rows"],
            cap=cfg.max_eval_rows,
            num_cpus=INGEST_TASK_CPUS,
        ),
    }
    # Train V2 RunConfig fields (mypy sees ray.train's V1 RunConfig stub).
    extra: dict[str, Any] = {}
    if callbacks:
        extra["callbacks"] = callbacks
    if worker_env:
        extra["worker_runtime_env"] = {"env_vars": worker_env}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": cfg.model_dump(mode="json"), "run": run_info},
        scaling_config=scaling_config(cfg),
        run_config=RunConfig(
            name=name,
            # Our filesystem for a URI: Ray Train then uses the same store (an emulator too).
            **storage.ray_storage(storage_path),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.keep_checkpoints,
                checkpoint_score_attribute=cfg.checkpoint_metric,
                checkpoint_score_order=cfg.resolved_checkpoint_mode(),
            ),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            **extra,
        ),
        datasets=datasets,
    )


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Fine-tune with Ray Train; returns (and writes to OUTPUT/result.json) the run record."""
    cfg = cfg.with_absolute_paths()
    manifest = validate_inputs(cfg)
    t0 = time.perf_counter()
    name = cfg.experiment_name or datetime.now(UTC).strftime("train-%Y%m%d-%H%M%S")
    output = _storage_path(cfg.output)
    run_info = start_run(cfg, manifest, output, name)
    result = fit(cfg, run_info, output, name)
    elapsed = time.perf_counter() - t0
    record = run_record(cfg, manifest, result, run_info, output=output, elapsed=elapsed)
    write_result(record, output, run_info["run_dir"])
    return record


def start_run(cfg: TrainConfig, manifest: Manifest, output: str, name: str) -> dict[str, Any]:
    """Check that the run dir may be (re)used, create it; the run info for the workers."""
    run_dir = storage.join(output, name)
    check_resume(cfg, manifest, run_dir)
    storage.makedirs(run_dir)
    return run_info_for(cfg, manifest, run_dir, name)


def fit(cfg: TrainConfig, run_info: dict[str, Any], output: str, name: str) -> Any:
    """Run the TorchTrainer to the end (on a local Ray if none is connected); its Result."""
    cluster.connect()
    trainer = build_trainer(cfg, run_info, storage_path=output, name=name)
    with cluster.steady_cwd():
        return trainer.fit()


def best_checkpoint(cfg: TrainConfig, result: Any, run_dir: str) -> tuple[Any, dict[str, Any]]:
    """(checkpoint, its metrics): the best by ``checkpoint_metric``, else the latest."""
    best = result.get_best_checkpoint(cfg.checkpoint_metric, cfg.resolved_checkpoint_mode())
    if best is None:
        best = result.checkpoint
    if best is None:
        raise RuntimeError(f"training finished without a checkpoint (run dir {run_dir})")
    metrics: dict[str, Any] = next(
        (m for c, m in result.best_checkpoints or [] if c.path == best.path),
        dict(result.metrics or {}),
    )
    return best, metrics


def run_record(
    cfg: TrainConfig,
    manifest: Manifest,
    result: Any,
    run_info: dict[str, Any],
    *,
    output: str,
    elapsed: float,
) -> dict[str, Any]:
    """The result.json of a finished run: best and latest checkpoints, metrics, restarts."""
    run_dir = run_info["run_dir"]
    best, best_metrics = best_checkpoint(cfg, result, run_dir)
    final = dict(result.metrics or {})
    attempts = read_attempts(run_dir)
    return {
        "best_checkpoint": storage.user_path(output, best.path),
        "metrics": json_safe(
            {k: v for k, v in best_metrics.items() if isinstance(v, int | float | str)}
        ),
        "checkpoint_metric": cfg.checkpoint_metric,
        "latest_checkpoint": storage.user_path(output, result.checkpoint.path)
        if result.checkpoint
        else None,
        "final_metrics": json_safe(final),
        "run_dir": run_dir,
        "experiment_name": run_info["experiment_name"],
        "world_size": cfg.num_workers,
        "attempts": attempts,
        "restarts": attempts - 1,
        # The step the last (successful) attempt resumed from: 0 for an uninterrupted run.
        "resumed_from_step": int(final.get("resumed_from_step", 0)),
        # The checkpoint that attempt restored (None: it started from the base model).
        "resumed_from": final.get("resumed_from") or None,
        "global_step": int(final.get("step", 0)),
        "data": cfg.data,
        "data_fingerprint": manifest.fingerprint,
        "started_at": run_info["started_at"],
        "finished_at": now_iso(),
        "elapsed_s": round(elapsed, 2),
    }


def write_result(record: dict[str, Any], output: str, run_dir: str) -> None:
    """result.json in the output dir (the latest run) and in the run dir (this run's)."""
    for directory in (output, run_dir):
        storage.write_json(storage.join(directory, RESULT_FILE), record)
