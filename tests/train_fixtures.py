"""Tiny prepared datasets for the training tests (a fixture, not the data stage under test).

Writes ``DIR/{train,val,test}/*.parquet`` + a valid ``manifest.json`` with the real MiniLM
tokenizer. Texts carry a learnable signal: positive rows use positive words, negative rows
negative words, with neutral filler of varied length; ~75% positive, like Steam's skew.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from steam_ray.data.manifest import Manifest, SplitStats, tokenizer_fingerprint, write_manifest

POSITIVE = ["great", "fun", "amazing", "excellent", "love", "beautiful", "addictive", "masterpiece"]
NEGATIVE = ["boring", "broken", "awful", "terrible", "refund", "buggy", "crash", "waste"]
FILLER = ["the", "game", "i", "played", "hours", "story", "graphics", "with", "friends", "and"]


def make_rows(n: int, seed: int, groups: int = 6) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = 1 if rng.random() < 0.75 else 0
        words = POSITIVE if label else NEGATIVE
        body = [rng.choice(FILLER) for _ in range(rng.randint(1, 30))]
        for _ in range(rng.randint(1, 3)):
            body.insert(rng.randrange(len(body) + 1), rng.choice(words))
        rows.append({"text": " ".join(body), "label": label, "group": f"app{(i * 7) % groups}"})
    return rows


def write_dataset(
    out: Path,
    model_path: str,
    *,
    rows: tuple[int, int, int] = (192, 64, 32),
    max_length: int = 64,
    shards: int = 2,
    seed: int = 0,
) -> Manifest:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    splits: dict[str, SplitStats] = {}
    lengths: list[int] = []
    digest = hashlib.sha256()
    for k, (split, n) in enumerate(zip(("train", "val", "test"), rows, strict=True)):
        data = make_rows(n, seed + k)
        ids = tok([r["text"] for r in data], truncation=True, max_length=max_length)["input_ids"]
        (out / split).mkdir(parents=True, exist_ok=True)
        per = -(-n // shards)
        for s in range(shards):
            part = slice(s * per, (s + 1) * per)
            table = pa.table(
                {
                    "text": [r["text"] for r in data[part]],
                    "label": pa.array([r["label"] for r in data[part]], pa.int64()),
                    "group": [r["group"] for r in data[part]],
                    "input_ids": pa.array(ids[part], pa.list_(pa.int32())),
                }
            )
            pq.write_table(table, out / split / f"part-{s:05d}.parquet")
        pos = sum(r["label"] for r in data)
        splits[split] = SplitStats(
            rows=n, positive=pos, negative=n - pos, tokens=sum(len(x) for x in ids)
        )
        lengths.extend(len(x) for x in ids)
        for r in data:
            digest.update(f"{split}|{r['label']}|{r['group']}|{r['text']}".encode())
    lengths.sort()

    def pct(q: float) -> float:
        return float(lengths[min(len(lengths) - 1, int(q * len(lengths)))])

    manifest = Manifest(
        created_at=datetime.now(UTC).isoformat(),
        source="test-fixture",
        rows_read=sum(rows),
        rows_kept=sum(rows),
        dropped={"empty": 0, "placeholder": 0, "bad_label": 0, "duplicate": 0},
        splits=splits,
        split_by="random",
        seed=seed,
        val_fraction=rows[1] / sum(rows),
        test_fraction=rows[2] / sum(rows),
        tokenizer=model_path,
        tokenizer_name="sentence-transformers/all-MiniLM-L6-v2",
        tokenizer_fingerprint=tokenizer_fingerprint(tok),
        max_length=max_length,
        token_length_percentiles={
            "p50": pct(0.5),
            "p90": pct(0.9),
            "p95": pct(0.95),
            "p99": pct(0.99),
            "max": float(lengths[-1]),
        },
        fingerprint=digest.hexdigest()[:16],
    )
    write_manifest(str(out), manifest)
    return manifest


def run_isolated(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in ``python -I`` from ``/`` with a bare environment: no repo on sys.path,
    no user site, offline hub. The editable install's path hook still exists in the venv, so
    callers assert the code never imports steam_ray rather than that it cannot."""
    return subprocess.run(
        [sys.executable, "-I", "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        cwd="/",
    )
