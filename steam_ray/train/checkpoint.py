"""Checkpoint layout: HF ``save_pretrained`` files + metrics.json + steam_ray.json + state.

The model and tokenizer files load with plain ``from_pretrained`` (no steam_ray needed); the
training state (optimizer, scheduler, step, epoch) sits beside them for resume, and every
rank writes its own RNG state under ``rank_state/`` (Ray Train V2 persists each rank's
reported directory into the same checkpoint directory). ``steam_ray.json`` records where the
weights came from (config, data and tokenizer fingerprints, code version) and the run's
lineage: one entry per attempt, counted in ``attempts.json`` in the run directory.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steam_ray import storage
from steam_ray.config import TrainConfig
from steam_ray.train.metrics import json_safe

METRICS_FILE = "metrics.json"
INFO_FILE = "steam_ray.json"
STATE_FILE = "training_state.pt"
RANK_STATE_DIR = "rank_state"
ATTEMPTS_FILE = "attempts.json"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_version() -> str:
    try:
        return metadata.version("steam_ray")
    except metadata.PackageNotFoundError:
        return "unknown"


def git_sha() -> str | None:
    """The repo's HEAD when running from a checkout; None elsewhere (a wheel, a container)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rank_state_path(directory: str | Path, rank: int) -> Path:
    return Path(directory) / RANK_STATE_DIR / f"rank_{rank:05d}.pt"


def save_rank_state(directory: str | Path, rank: int, **extra: Any) -> Path:
    """This rank's RNG state (dropout masks differ per rank, so each rank keeps its own)."""
    path = rank_state_path(directory, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"rank": rank, "rng": rng_state(), **extra}, path)
    return path


def load_rank_state(directory: str | Path, rank: int) -> dict[str, Any] | None:
    """This rank's saved state, or None (a checkpoint written by fewer ranks)."""
    path = rank_state_path(directory, rank)
    if not path.is_file():
        return None
    # weights_only=False: numpy RNG tuples; we only load our own checkpoints.
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state


def save_checkpoint(
    directory: str | Path,
    *,
    model: Any,
    tokenizer: Any,
    metrics: dict[str, Any],
    info: dict[str, Any],
    state: dict[str, Any],
) -> Path:
    """Write the model, tokenizer, metrics and shared state into ``directory`` (rank 0 only;
    model is unwrapped). Per-rank state is ``save_rank_state``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    storage.write_json(str(out / METRICS_FILE), json_safe(metrics))
    storage.write_json(str(out / INFO_FILE), json_safe(info))
    torch.save(state, out / STATE_FILE)
    return out


def training_state(
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    *,
    global_step: int,
    epoch: int,
    step_in_epoch: int,
    scaler: Any = None,
) -> dict[str, Any]:
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "global_step": global_step,
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
    }


def load_training_state(directory: str | Path) -> dict[str, Any]:
    # weights_only=False: the state holds numpy RNG tuples; we only load our own checkpoints.
    state: dict[str, Any] = torch.load(
        Path(directory) / STATE_FILE, map_location="cpu", weights_only=False
    )
    return state


def checkpoint_info(
    cfg: TrainConfig,
    run: dict[str, Any],
    *,
    world_size: int,
    global_step: int,
    epoch: int,
    attempt: int,
    attempt_started_at: str,
    resumed_from_step: int,
    lineage: list[dict[str, Any]],
) -> dict[str, Any]:
    """The ``steam_ray.json`` of a checkpoint: what produced these weights, and when."""
    return {
        "config": cfg.model_dump(mode="json"),
        "world_size": world_size,
        "global_step": global_step,
        "epoch": epoch,
        "data": cfg.data,
        "data_fingerprint": run["data_fingerprint"],
        "tokenizer_fingerprint": run["tokenizer_fingerprint"],
        "steam_ray_version": run["version"],
        "git_sha": run["git_sha"],
        "run_started_at": run["started_at"],
        "attempt_started_at": attempt_started_at,
        "saved_at": now_iso(),
        "attempt": attempt,
        "resumed_from_step": resumed_from_step,
        "lineage": lineage,
    }


def read_lineage(directory: str | Path) -> list[dict[str, Any]]:
    """The attempts that led to a checkpoint (oldest first), from its ``steam_ray.json``."""
    return list(storage.read_json(str(Path(directory) / INFO_FILE)).get("lineage", []))


def lineage_entry(
    attempt: int, started_at: str, resumed_from_step: int, resumed_from: str | None
) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "started_at": started_at,
        "resumed_from_step": resumed_from_step,
        "resumed_from_checkpoint": resumed_from,
    }


def bump_attempts(run_dir: str) -> int:
    """Count one more attempt of the run (rank 0, at every start); returns its number."""
    path = storage.join(run_dir, ATTEMPTS_FILE)
    count = 0
    if storage.exists(path):
        with contextlib.suppress(ValueError):
            count = int(storage.read_text(path).strip() or 0)
    storage.write_text(path, f"{count + 1}\n")
    return count + 1


def read_attempts(run_dir: str) -> int:
    """How many attempts the run took (1 when none was counted)."""
    path = storage.join(run_dir, ATTEMPTS_FILE)
    return int(storage.read_text(path).strip()) if storage.exists(path) else 1
