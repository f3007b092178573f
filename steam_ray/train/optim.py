"""Optimisation set-up of the recipe: AdamW, the LR schedule and its length, mixed precision,
class weights, and the running loss window."""

from __future__ import annotations

import math
from typing import Any

import torch

from steam_ray.config import TrainConfig

#: Token-budget batches fill about this share of the budget (sorted buckets): the schedule's
#: length estimate in that mode (the loop stops at the schedule's end, never trains at LR 0).
BUCKET_FILL = 0.8


def select_amp(
    amp: str, device_type: str, cuda_capability: tuple[int, int] | None
) -> torch.dtype | None:
    """The autocast dtype (None: fp32). ``cuda_capability`` is the GPU's (major, minor).

    bf16 needs Ampere (sm_80)+: older GPUs only emulate it (slowly), so ``auto`` uses fp16
    there, with a GradScaler (the caller creates one for fp16).
    """
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if device_type != "cuda":
        return None  # "auto"/"fp16" on CPU: fp32 (CPU fp16 autocast is slow and lossy).
    if amp == "fp16":
        return torch.float16
    return torch.bfloat16 if cuda_capability and cuda_capability[0] >= 8 else torch.float16


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return select_amp(cfg.amp, device.type, capability)


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on ``device``; ``None`` (fp32) disables it."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def build_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, device: torch.device | None = None
) -> torch.optim.AdamW:
    # No weight decay on biases and LayerNorm weights (the usual BERT fine-tuning recipe).
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # Fused AdamW: one kernel per step on CUDA instead of a loop of small ones.
    fused = device is not None and device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused or None)


def steps_per_epoch(
    rows: int,
    tokens: int,
    world_size: int,
    batch_size: int,
    token_budget: int | None,
    grad_accum_steps: int,
) -> int:
    """Optimizer steps per epoch from manifest counts.

    Fixed batches: exact. Ray Train splits a dataset with ``streaming_split(equal=True)``, so
    every rank gets ``rows // world`` rows and ``ceil(that / batch_size)`` micro-batches (the
    last one partial); a trailing incomplete accumulation is dropped. Token budgets: an
    estimate (``BUCKET_FILL`` of the budget), since the batch count depends on the length mix
    of each window.
    """
    world = max(world_size, 1)
    if token_budget is None:
        micro = math.ceil((rows // world) / batch_size)
    else:
        micro = math.floor((tokens / world) / (BUCKET_FILL * token_budget))
    return max(1, micro // grad_accum_steps)


def schedule_steps(cfg: TrainConfig, run: dict[str, Any], world_size: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    per_epoch = steps_per_epoch(
        run["train_rows"],
        run["train_tokens"],
        world_size,
        cfg.batch_size,
        cfg.token_budget,
        cfg.grad_accum_steps,
    )
    return per_epoch * cfg.epochs


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    from transformers import get_linear_schedule_with_warmup

    scheduler: torch.optim.lr_scheduler.LambdaLR = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps
    )
    return scheduler


def class_weights(positive: int, negative: int) -> torch.Tensor:
    """Inverse-frequency weights (n / (2 * n_c)) for CrossEntropy over [negative, positive]."""
    total = positive + negative
    return torch.tensor(
        [total / (2 * max(negative, 1)), total / (2 * max(positive, 1))], dtype=torch.float32
    )


class LossWindow:
    """Mean loss over the last ``size`` optimizer steps: O(1) per step, kept on the device
    (a ring buffer of tensors), read back to the host only when ``mean()`` is called."""

    def __init__(self, size: int, device: torch.device) -> None:
        self.size = size
        self._buf = torch.zeros(size, dtype=torch.float32, device=device)
        self._count = 0

    def add(self, loss: torch.Tensor) -> None:
        self._buf[self._count % self.size] = loss.detach().float()
        self._count += 1

    def mean(self) -> float | None:
        n = min(self._count, self.size)
        return float(self._buf[:n].mean()) if n else None
