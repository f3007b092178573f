"""Which checkpoint to serve: a path/URI (a checkpoint, or a train/tune output dir's best), or
``best`` / ``NAME:VERSION`` from the registry.

Resolution happens once, where the app is built (``steam-ray serve``, ``serve build``), so every
replica of one deployment loads the same files; replicas copy a remote checkpoint to local disk.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from steam_ray import storage
from steam_ray.config import DEFAULT_MODEL_NAME
from steam_ray.errors import ConfigError, SteamRayError

DEFAULT_REGISTRY = "artifacts/registry"
REQUIRED_FILES: tuple[str, ...] = ("config.json",)
# What `steam-ray train` and `steam-ray tune` write in their output dir (best_checkpoint key).
RESULT_FILE = "result.json"
# "best", "NAME", "NAME:best", "NAME:VERSION" — no slashes, so never confused with a path.
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9._-]+)?$")


@dataclass(frozen=True)
class ModelSource:
    """A resolved checkpoint: where its files are and what to call it."""

    path: str
    ref: str
    name: str = DEFAULT_MODEL_NAME
    # None: not from the registry; replicas then name it by its weights hash.
    version: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    # The label rule is ``positive iff score >= threshold``: a registry version's threshold
    # tuned by `steam-ray evaluate`, else 0.5.
    threshold: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSource:
        return cls(**data)


def resolve_source(ref: str, registry_root: str | None = None) -> ModelSource:
    """An existing path/URI is a checkpoint, or a train/tune output whose ``result.json``
    names the best one; otherwise ``ref`` goes through the registry."""
    if storage.exists(ref):
        path = ref if storage.is_uri(ref) else str(Path(ref).expanduser().resolve())
        path = checkpoint_of(path)
        check_checkpoint(path)
        return ModelSource(path=path, ref=ref)
    if not _REF.match(ref):
        raise ConfigError(f"checkpoint not found: {ref}")
    try:
        from steam_ray.registry import Registry  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise ConfigError(
            f"checkpoint {ref!r} is not an existing path, and registry refs (best, NAME:VERSION) "
            "need steam_ray.registry, which this install lacks; pass a checkpoint directory"
        ) from None
    root = registry_root or DEFAULT_REGISTRY
    try:
        mv = Registry(root).resolve(ref)
    except (KeyError, FileNotFoundError, ValueError, SteamRayError) as exc:
        raise ConfigError(f"cannot resolve {ref!r} in the registry at {root}: {exc}") from exc
    check_checkpoint(mv.path)
    return ModelSource(
        path=mv.path,
        ref=ref,
        name=mv.name,
        version=str(mv.version),
        metrics=dict(mv.metrics),
        lineage=dict(mv.lineage),
        threshold=float(mv.evaluation.get("threshold", 0.5)),
    )


def checkpoint_of(path: str) -> str:
    """``path`` itself when it holds a checkpoint; for a train or tune output directory (a
    ``result.json``, no ``config.json``) the run's or sweep's ``best_checkpoint``."""
    if not storage.is_dir(path) or storage.exists(storage.join(path, "config.json")):
        return path
    result = storage.join(path, RESULT_FILE)
    if not storage.exists(result):
        raise ConfigError(
            f"{path} has no config.json and no {RESULT_FILE}: expected a checkpoint "
            "(a save_pretrained directory) or a train/tune output directory"
        )
    try:
        record = storage.read_json(result)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {result}: {exc}") from exc
    best = record.get("best_checkpoint") if isinstance(record, dict) else None
    if not isinstance(best, str) or not best:
        raise ConfigError(
            f"{result} has no best_checkpoint: that run or sweep kept no checkpoint; "
            "pass a checkpoint directory or a registry ref (best, NAME:VERSION)"
        )
    # Written as absolute paths/URIs; a relative one is taken from the output directory.
    if not storage.is_uri(best) and not Path(best).is_absolute():
        best = storage.join(path, best)
    if not storage.exists(best):
        raise ConfigError(f"{result} names best_checkpoint {best}, which does not exist")
    return best


def check_checkpoint(path: str) -> None:
    if not storage.is_dir(path):
        raise ConfigError(f"checkpoint {path} is not a directory (a save_pretrained checkpoint)")
    for name in REQUIRED_FILES:
        if not storage.exists(storage.join(path, name)):
            raise ConfigError(f"checkpoint {path} has no {name}: not a save_pretrained directory")


def materialize(path: str, cache_dir: str | None = None) -> str:
    """A local directory holding the checkpoint (remote URIs are copied once per node)."""
    if not storage.is_uri(path):
        return path
    root = Path(cache_dir or Path.home() / ".cache" / "steam_ray" / "checkpoints")
    target = root / re.sub(r"[^A-Za-z0-9._-]", "_", path)
    if (target / "config.json").is_file():
        return str(target)
    root.mkdir(parents=True, exist_ok=True)
    src_fs, src = storage.resolve(path)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        pafs.copy_files(src, tmp, source_filesystem=src_fs)
        if not target.exists():
            shutil.move(tmp, target)
            Path(tmp).mkdir()  # TemporaryDirectory cleans up the (now empty) name
    return str(target)


def read_checkpoint_info(local: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, steam_ray info) written by training; empty dicts for a plain HF directory."""
    out: list[dict[str, Any]] = []
    for name in ("metrics.json", "steam_ray.json"):
        file = Path(local) / name
        try:
            data = json.loads(file.read_text()) if file.is_file() else {}
        except (OSError, json.JSONDecodeError):
            data = {}
        out.append(data if isinstance(data, dict) else {})
    return out[0], out[1]
