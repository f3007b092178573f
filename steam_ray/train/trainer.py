"""The driver side of training: validate inputs, launch the TorchTrainer, write result.json."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from steam_ray import storage
from steam_ray.config import TrainConfig, resolve_model
from steam_ray.data.manifest import Manifest, read_manifest, split_dir, tokenizer_fingerprint
from steam_ray.errors import ConfigError, DataError
from steam_ray.train.checkpoint import git_sha, now_iso, package_version
from steam_ray.train.data import read_eval_split, read_train_split
from steam_ray.train.loop import ATTEMPTS_FILE, train_loop_per_worker
from steam_ray.train.metrics import METRIC_NAMES, json_safe

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
REQUIRED_SPLITS: tuple[str, ...] = ("train", "val")


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


def _storage_path(output: str) -> str:
    return output if storage.is_uri(output) else str(Path(output).expanduser().resolve())


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Fine-tune with Ray Train; returns (and writes to OUTPUT/result.json) the run record."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    manifest = validate_inputs(cfg)
    t0 = time.perf_counter()
    started_at = now_iso()
    name = cfg.experiment_name or datetime.now(UTC).strftime("train-%Y%m%d-%H%M%S")
    output = _storage_path(cfg.output)
    run_dir = storage.join(output, name)
    storage.makedirs(run_dir)
    train_stats = manifest.splits["train"]
    run_info = {
        "run_dir": run_dir,
        "experiment_name": name,
        "data_fingerprint": manifest.fingerprint,
        "tokenizer_fingerprint": manifest.tokenizer_fingerprint,
        "train_rows": train_stats.rows,
        "train_tokens": train_stats.tokens,
        "train_positive": train_stats.positive,
        "train_negative": train_stats.negative,
        "version": package_version(),
        "git_sha": git_sha(),
        "started_at": started_at,
    }
    if not ray.is_initialized():
        ray.init()
    # Only the columns training needs: text/group stay on disk.
    columns = ["input_ids", "label"]
    datasets: dict[str, Any] = {
        "train": read_train_split(split_dir(cfg.data, "train"), columns, cfg.seed),
        "val": read_eval_split(
            split_dir(cfg.data, "val"),
            columns,
            cfg.seed,
            rows=manifest.splits["val"].rows,
            cap=cfg.max_eval_rows,
        ),
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": cfg.model_dump(mode="json"), "run": run_info},
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker},
            placement_strategy=cfg.placement_strategy,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=output,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.keep_checkpoints,
                checkpoint_score_attribute=cfg.checkpoint_metric,
                checkpoint_score_order=cfg.checkpoint_mode,
            ),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
        datasets=datasets,
    )
    result = trainer.fit()
    elapsed = time.perf_counter() - t0

    best = result.get_best_checkpoint(cfg.checkpoint_metric, cfg.checkpoint_mode)
    if best is None:
        best = result.checkpoint
    if best is None:
        raise RuntimeError(f"training finished without a checkpoint (run dir {run_dir})")
    best_metrics: dict[str, Any] = next(
        (m for c, m in result.best_checkpoints or [] if c.path == best.path),
        dict(result.metrics or {}),
    )
    final = dict(result.metrics or {})
    attempts_path = storage.join(run_dir, ATTEMPTS_FILE)
    attempts = int(storage.read_text(attempts_path).strip()) if storage.exists(attempts_path) else 1
    record: dict[str, Any] = {
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
        "experiment_name": name,
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
        "started_at": started_at,
        "finished_at": now_iso(),
        "elapsed_s": round(elapsed, 2),
    }
    text = json.dumps(record, indent=2, default=str) + "\n"
    storage.write_text(storage.join(output, RESULT_FILE), text)
    storage.write_text(storage.join(run_dir, RESULT_FILE), text)
    return record
