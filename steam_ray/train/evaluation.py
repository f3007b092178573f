"""The validation pass: one rank's shard scored, metrics over every rank's predictions."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from steam_ray.train.data import make_collate, to_device
from steam_ray.train.metrics import gather_metrics
from steam_ray.train.optim import autocast


@torch.no_grad()
def evaluate_shard(
    model: torch.nn.Module,
    shard: Any,
    *,
    batch_size: int,
    max_rows: int | None,
    world_size: int,
    pad_id: int,
    device: torch.device,
    amp: torch.dtype | None,
) -> dict[str, float]:
    """Validation over this rank's shard (``DataIterator``), metrics over every rank's.

    ``model`` is the unwrapped module: a DDP forward may broadcast buffers (a collective), and
    ranks hold different numbers of validation batches. ``max_rows`` caps the rows over all
    ranks (each scores its share). Predictions stay on the device until the end (one
    read-back). The model is left in train mode.
    """
    model.eval()
    cap = math.ceil(max_rows / world_size) if max_rows else None
    probs: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for batch in shard.iter_torch_batches(batch_size=batch_size, collate_fn=make_collate(pad_id)):
        if cap is not None and seen >= cap:
            break
        b = to_device(batch, device)
        with autocast(device, amp):
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            logits = logits.float()
        loss_sum += F.cross_entropy(logits, b["labels"], reduction="sum")
        probs.append(torch.softmax(logits, dim=-1)[:, 1])
        labels.append(b["labels"])
        seen += int(batch["labels"].shape[0])
    model.train()
    p = torch.cat(probs).cpu().tolist() if probs else []
    y = torch.cat(labels).cpu().tolist() if labels else []
    return gather_metrics(p, y, float(loss_sum))
