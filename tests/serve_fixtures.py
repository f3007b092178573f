"""Checkpoints and HTTP helpers for the Serve tests.

The checkpoints are the packaged MiniLM with a freshly initialised 2-label head, saved the way
training saves them (save_pretrained + metrics.json + steam_ray.json). Their predictions are
not meaningful; they exercise the API contract, batching, metrics and rollout. Different seeds
give different heads, hence different weights and model versions.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx


def make_checkpoint(out: Path, model_path: str, seed: int) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    with torch.no_grad():  # a head that actually separates: scores spread over (0, 1)
        model.classifier.weight.mul_(40.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps({"accuracy": 0.5 + seed / 100, "step": 10}))
    lineage = {"run_started_at": "2026-01-01T00:00:00+00:00", "git_sha": None, "seed": seed}
    (out / "steam_ray.json").write_text(json.dumps({"config": {}, **lineage}))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def post(url: str, body: Any = None, *, content: bytes | None = None, timeout: float = 60):
    if content is None:
        return httpx.post(url, json=body, timeout=timeout)
    return httpx.post(
        url, content=content, timeout=timeout, headers={"Content-Type": "application/json"}
    )
