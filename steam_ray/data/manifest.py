"""The manifest: the contract between ``data prepare`` and everything that reads its output.

``OUTPUT/manifest.json`` sits beside ``OUTPUT/{train,val,test}/*.parquet``; each Parquet file has
at least the columns ``text`` (cleaned, string), ``label`` (int 0/1), ``group`` (string) and
``input_ids`` (list<int32>, truncated, unpadded).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from steam_ray import storage
from steam_ray.errors import DataError

SPLITS: tuple[str, ...] = ("train", "val", "test")
MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class SplitStats(BaseModel):
    model_config = ConfigDict(extra="allow")

    rows: int = 0
    positive: int = 0
    negative: int = 0
    # Total (truncated) tokens: lets a trainer size epochs/steps without reading the data.
    tokens: int = 0


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    format_version: int = FORMAT_VERSION
    created_at: str
    source: str
    input: str | None = None
    rows_read: int
    rows_kept: int
    # Reason -> rows dropped. Always holds every reason in DROP_REASONS, zeros included, plus
    # `excluded` (ColumnMap.exclude label values) and `malformed` (unparseable CSV rows).
    # rows_read == rows_kept + sum(dropped.values()) exactly.
    dropped: dict[str, int]
    splits: dict[str, SplitStats]
    split_by: str
    seed: int
    val_fraction: float
    test_fraction: float
    # A name or path that ``AutoTokenizer.from_pretrained`` loads.
    tokenizer: str
    # The name the user asked for (e.g. a hub name resolved to a packaged path).
    tokenizer_name: str
    # sha256 over the tokenizer's vocabulary: the trainer refuses a model whose tokenizer differs.
    tokenizer_fingerprint: str
    max_length: int
    # p50/p90/p95/p99/max of per-row token counts (after truncation).
    token_length_percentiles: dict[str, float]
    truncated_rows: int = 0
    # Order-independent hash of every output row (split, label, group, text): the same data
    # gives the same fingerprint whatever the cluster size or block layout.
    fingerprint: str
    columns: dict[str, Any] = Field(default_factory=dict)
    elapsed_s: float = 0.0
    rows_per_s: float = 0.0
    steam_ray_version: str = ""


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Stable hash of a HF tokenizer's vocabulary (token -> id) and special tokens."""
    vocab = tokenizer.get_vocab()
    payload = json.dumps(
        {
            "vocab": sorted(vocab.items(), key=lambda kv: kv[1]),
            "special": sorted(str(t) for t in tokenizer.all_special_tokens),
            "lower": bool(getattr(tokenizer, "do_lower_case", False)),
        },
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def manifest_path(data_dir: str) -> str:
    return storage.join(data_dir, MANIFEST_NAME)


def write_manifest(data_dir: str, manifest: Manifest) -> str:
    path = manifest_path(data_dir)
    storage.write_text(path, manifest.model_dump_json(indent=2) + "\n")
    return path


def read_manifest(data_dir: str) -> Manifest:
    """Load and validate ``DATA_DIR/manifest.json``; a clear DataError when it is not there."""
    path = manifest_path(data_dir)
    if not storage.exists(data_dir):
        raise DataError(f"data dir not found: {data_dir}")
    if not storage.exists(path):
        raise DataError(
            f"{path}: no manifest.json — is {data_dir} the output of `steam-ray data prepare`?"
        )
    try:
        return Manifest.model_validate_json(storage.read_text(path))
    except ValueError as exc:
        raise DataError(f"{path}: not a valid steam_ray manifest: {exc}") from exc


def split_dir(data_dir: str, split: str) -> str:
    return storage.join(data_dir, split)
