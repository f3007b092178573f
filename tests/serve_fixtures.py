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


def sample_reviews(n: int, skip: int = 0) -> tuple[list[str], list[int]]:
    """``n`` labelled reviews (fresh = 1, rotten = 0) of the bundled Rotten Tomatoes sample."""
    import pyarrow.csv as pcsv

    from steam_ray.data.sample import sample_csv_path

    table = pcsv.read_csv(sample_csv_path())
    rows = [
        (t, int(c == "fresh"))
        for c, t in zip(table["category"].to_pylist(), table["text"].to_pylist(), strict=True)
        if c in ("fresh", "rotten") and isinstance(t, str) and t.strip()
    ][skip : skip + n]
    return [t for t, _ in rows], [y for _, y in rows]


def make_fitted_checkpoint(out: Path, model_path: str, train: int = 400) -> Path:
    """MiniLM with a real (if small) sentiment head: logistic regression on its pooled output
    over ``train`` sample reviews, written as the 2-label classifier (logit difference = the
    regression's). Also a prepared-style ``data/train`` split (text, input_ids) named by its
    ``steam_ray.json``, as a steam-ray train checkpoint names its data."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2).eval()
    texts, labels = sample_reviews(train)
    with torch.no_grad():  # pooled output = tanh([CLS] state): the packaged pooler is untrained
        model.bert.pooler.dense.weight.copy_(torch.eye(model.config.hidden_size))
        model.bert.pooler.dense.bias.zero_()
    enc = tok(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
    with torch.inference_mode():
        pooled = model.bert(**enc).pooler_output.numpy()
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(pooled, np.asarray(labels))
    w, b = torch.from_numpy(lr.coef_[0]).float(), float(lr.intercept_[0])
    with torch.no_grad():
        model.classifier.weight.copy_(torch.stack([-w / 2, w / 2]))
        model.classifier.bias.copy_(torch.tensor([-b / 2, b / 2]))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    data = out.parent / f"{out.name}-data"
    (data / "train").mkdir(parents=True, exist_ok=True)
    ids = tok(texts, truncation=True, max_length=64)["input_ids"]
    pq.write_table(
        pa.table({"text": texts, "label": labels, "input_ids": ids}),
        data / "train" / "part-0.parquet",
    )
    (out / "metrics.json").write_text(json.dumps({"accuracy": lr.score(pooled, labels), "step": 1}))
    (out / "steam_ray.json").write_text(json.dumps({"config": {}, "data": str(data)}))
    return out
