"""A small model registry on a local directory or an object store (gs://, s3://).

Layout (documented in the README)::

    REGISTRY/<model-name>/<version>/model/         HF checkpoint (plain ``from_pretrained``)
    REGISTRY/<model-name>/<version>/metrics.json   validation metrics of that checkpoint
    REGISTRY/<model-name>/<version>/config.json    the resolved training config
    REGISTRY/<model-name>/<version>/lineage.json   data/tokenizer fingerprints, sweep/trial, git
    REGISTRY/<model-name>/<version>/version.json   written last: a version without it is invisible
    REGISTRY/<model-name>/<version>/evaluation.json  `steam-ray evaluate`'s headline + threshold
    REGISTRY/<model-name>/<version>/README.md      its model card (attached after registration)
    REGISTRY/<model-name>/best.json                the ``best`` pointer (replaced atomically)
    REGISTRY/<model-name>/promotions/*.json        one record per pointer move (forced or not)

Versions are immutable: a new one gets a fresh id (UTC time + random suffix, so two writers
never collide) and is assembled under a temporary name, then renamed into place on local
disks; on object stores, where a rename is a copy, ``version.json`` is the commit marker. The
pointer moves only to a version that beats it on its metric, evaluated on the same data (data
fingerprint), unless forced. Moves are a compare-and-swap: under a file lock on local disks, a
write conditional on the pointer's generation on GCS (``steam_ray.cas``: a move that lost a race
re-reads and decides again); on S3 the last writer wins (logged; see the README).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import posixpath
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow.fs as pafs

from steam_ray import cas, storage
from steam_ray.config import DEFAULT_MODEL_NAME
from steam_ray.errors import ConfigError, SteamRayError
from steam_ray.scores import beats, finite

MODEL_DIR = "model"
VERSION_FILE = "version.json"
EVALUATION_FILE = "evaluation.json"
CARD_FILE = "README.md"
BEST_FILE = "best.json"
PROMOTIONS_DIR = "promotions"
# The training-only files of a checkpoint (optimizer/scheduler/RNG state) stay out of the registry.
SKIP_FILES = frozenset({"training_state.pt"})
#: Compare-and-swap attempts of one pointer move before giving up (each loses only to a move
#: that landed in between, so ten in a row means a storm of registrations).
POINTER_TRIES = 10
#: Test hook (see ``_test_pause``): seconds to sleep between reading and writing the pointer.
POINTER_PAUSE_ENV = "STEAM_RAY_TEST_POINTER_PAUSE_S"

log = logging.getLogger(__name__)


class RegistryError(SteamRayError):
    """An unknown model/version, or a refused pointer move."""


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    path: str  # the HF checkpoint dir (local path or URI), loadable by from_pretrained
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    config: dict[str, Any]
    # The latest `steam-ray evaluate` of this version (threshold, headline metrics); {} if none.
    evaluation: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Registration:
    """What ``register``/``promote`` did: the version and whether ``best`` now points to it."""

    version: ModelVersion
    promoted: bool
    reason: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _score(metrics: dict[str, Any], metric: str) -> float | None:
    return finite(metrics.get(metric))


class Registry:
    def __init__(self, root: str, model_name: str = DEFAULT_MODEL_NAME) -> None:
        self.root = root
        self.model_name = model_name  # what the bare ref ``best`` resolves to
        self._fs, self._inner = storage.resolve(root)
        self._local = isinstance(self._fs, pafs.LocalFileSystem)

    # -- paths -------------------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return posixpath.join(self._inner, *parts)

    def _user(self, inner: str) -> str:
        return storage.user_path(self.root, inner)

    # Through self._fs, not a path: a root URI's query options (endpoint, region) stay in force.
    def _read_json(self, inner: str) -> dict[str, Any]:
        data: dict[str, Any] = storage.read_json_at(self._fs, inner)
        return data

    def _write_json(self, inner: str, data: dict[str, Any]) -> None:
        storage.write_json_at(self._fs, inner, data)

    def _exists(self, inner: str) -> bool:
        return bool(self._fs.get_file_info(inner).type != pafs.FileType.NotFound)

    def _children(self, inner: str) -> list[str]:
        selector = pafs.FileSelector(inner, allow_not_found=True)
        infos = self._fs.get_file_info(selector)
        return sorted(
            posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory
        )

    # -- reading -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        return [n for n in self._children(self._inner) if not n.startswith(".")]

    def version_ids(self, name: str) -> list[str]:
        """Committed versions of ``name``, oldest first (ids sort by creation time)."""
        return [
            v
            for v in self._children(self._path(name))
            if not v.startswith(".")
            and v != PROMOTIONS_DIR
            and self._exists(self._path(name, v, VERSION_FILE))
        ]

    def get(self, name: str, version: str) -> ModelVersion:
        base = self._path(name, version)
        if not self._exists(self._path(name, version, VERSION_FILE)):
            known = ", ".join(self.version_ids(name)) or "none"
            raise RegistryError(
                f"model {name}:{version} not found in registry {self.root} "
                f"(versions of {name}: {known})"
            )
        return ModelVersion(
            name=name,
            version=version,
            path=self._user(posixpath.join(base, MODEL_DIR)),
            metrics=self._read_json(posixpath.join(base, "metrics.json")),
            lineage=self._read_json(posixpath.join(base, "lineage.json")),
            config=self._read_json(posixpath.join(base, "config.json")),
            evaluation=self.evaluation(name, version),
        )

    def evaluation(self, name: str, version: str) -> dict[str, Any]:
        path = self._path(name, version, EVALUATION_FILE)
        return self._read_json(path) if self._exists(path) else {}

    def version_info(self, name: str, version: str) -> dict[str, Any]:
        return self._read_json(self._path(name, version, VERSION_FILE))

    def best_pointer(self, name: str) -> dict[str, Any] | None:
        path = self._path(name, BEST_FILE)
        return self._read_json(path) if self._exists(path) else None

    def promotions(self, name: str) -> list[dict[str, Any]]:
        directory = self._path(name, PROMOTIONS_DIR)
        infos = self._fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
        files = sorted(i.path for i in infos if i.path.endswith(".json"))
        return [self._read_json(p) for p in files]

    def resolve(self, ref: str) -> ModelVersion:
        """``NAME`` / ``NAME:best`` -> the best pointer; ``NAME:VERSION``; ``best`` -> the best
        version of the default model name."""
        name, _, version = ref.partition(":")
        if ref == "best":
            name, version = self.model_name, "best"
        if not name:
            raise RegistryError(
                f"bad model reference {ref!r} (use NAME, NAME:best or NAME:VERSION)"
            )
        if version in ("", "best"):
            pointer = self.best_pointer(name)
            if pointer is None:
                known = ", ".join(self.names()) or "none"
                raise RegistryError(
                    f"model {ref!r}: no best version of {name!r} in registry {self.root} "
                    f"(models: {known})"
                )
            version = str(pointer["version"])
        return self.get(name, version)

    # -- writing -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """Serialises pointer moves of one model on local disks (an flock across processes);
        elsewhere a no-op: GCS moves are conditional writes instead."""
        if not self._local:
            yield
            return
        path = Path(self._path(name, ".lock"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _copy_checkpoint(self, checkpoint: str, dest: str) -> None:
        src_fs, src_inner = storage.resolve(checkpoint)
        infos = src_fs.get_file_info(pafs.FileSelector(src_inner, recursive=True))
        files = [i for i in infos if i.type == pafs.FileType.File]
        if not any(posixpath.basename(i.path) == "config.json" for i in files):
            raise RegistryError(f"{checkpoint}: not a Hugging Face checkpoint (no config.json)")
        for info in files:
            rel = posixpath.relpath(info.path, src_inner)
            if posixpath.basename(rel) in SKIP_FILES:
                continue
            target = posixpath.join(dest, rel)
            self._fs.create_dir(posixpath.dirname(target), recursive=True)
            pafs.copy_files(
                info.path,
                target,
                source_filesystem=src_fs,
                destination_filesystem=self._fs,
                use_threads=False,
            )

    def register(
        self,
        name: str,
        checkpoint: str,
        *,
        metrics: dict[str, Any],
        metric: str,
        mode: Literal["max", "min"],
        config: dict[str, Any],
        lineage: dict[str, Any],
        force: bool = False,
        reason: str = "",
    ) -> Registration:
        """Copy ``checkpoint`` in as a new immutable version; move ``best`` if it is better."""
        from steam_ray.config import RegistryConfig

        try:
            RegistryConfig(model_name=name)
        except ValueError as exc:
            raise ConfigError(f"bad model name {name!r}: {exc}") from exc
        version = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        final = self._path(name, version)
        # Local: assemble aside, then one rename makes it visible. Object stores: in place,
        # version.json last (readers ignore versions without it).
        work = self._path(name, f".tmp-{version}") if self._local else final
        self._copy_checkpoint(checkpoint, posixpath.join(work, MODEL_DIR))
        self._write_json(posixpath.join(work, "metrics.json"), metrics)
        self._write_json(posixpath.join(work, "config.json"), config)
        self._write_json(posixpath.join(work, "lineage.json"), lineage)
        info = {
            "name": name,
            "version": version,
            "metric": metric,
            "mode": mode,
            "score": _score(metrics, metric),
            "source_checkpoint": checkpoint,
            "created_at": _now(),
        }
        self._write_json(posixpath.join(work, VERSION_FILE), info)
        if self._local:
            os.rename(work, final)
        return self._move_best(name, version, force=force, reason=reason or "registered")

    def attach_evaluation(
        self, name: str, version: str, evaluation: dict[str, Any], card: str
    ) -> ModelVersion:
        """Attach an evaluation (its ``threshold`` is what Serve labels with) and a model card
        to an existing version, replacing an earlier one. The checkpoint, metrics and the best
        pointer are untouched: versions stay immutable in what they serve."""
        self.get(name, version)  # a clear error for an unknown version
        threshold = evaluation.get("threshold")
        if finite(threshold) is None:
            raise RegistryError(
                f"evaluation of {name}:{version}: no finite threshold ({threshold!r})"
            )
        record = {**evaluation, "attached_at": _now()}
        # The card first, the evaluation last (the record readers act on); each replaced
        # atomically: a rename on local disks, one object PUT elsewhere.
        for filename, text in ((CARD_FILE, card), (EVALUATION_FILE, storage.json_text(record))):
            target = self._path(name, version, filename)
            if not self._local:
                storage.write_text_at(self._fs, target, text)
                continue
            tmp = self._path(name, version, f".{filename}.{secrets.token_hex(4)}")
            storage.write_text_at(self._fs, tmp, text)
            os.replace(tmp, target)
        return self.get(name, version)

    def promote(
        self, name: str, version: str, *, force: bool = False, reason: str = ""
    ) -> Registration:
        """Point ``best`` at an existing version: refused (RegistryError) unless it is better or
        ``force`` is set."""
        self.get(name, version)  # a clear error for an unknown version
        result = self._move_best(name, version, force=force, reason=reason or "promote")
        if not result.promoted:
            hint = "" if "--force" in result.reason else " (--force)"
            raise RegistryError(f"promote {name}:{version} refused: {result.reason}{hint}")
        return result

    def _move_best(self, name: str, version: str, *, force: bool, reason: str) -> Registration:
        info = self.version_info(name, version)
        with self._lock(name):
            # Compare-and-swap on GCS: a write refused because another move landed since our
            # read re-reads and decides again, so best only moves past the version really there.
            for _ in range(POINTER_TRIES):
                pointer, generation = self._read_pointer(name)
                if pointer is not None and pointer["version"] == version:
                    return Registration(self.get(name, version), True, "already best")
                ok, why = self._judge(name, pointer, version, info)
                if not ok and not force:
                    return Registration(self.get(name, version), False, why)
                record = {
                    "version": version,
                    "metric": str(info["metric"]),
                    "mode": info["mode"],
                    "score": info.get("score"),
                    "previous": pointer["version"] if pointer else None,
                    "previous_score": pointer.get("score") if pointer else None,
                    "forced": bool(force and not ok),
                    "reason": reason,
                    "why": why,
                    "updated_at": _now(),
                }
                _test_pause()
                if not self._write_pointer(name, record, generation):
                    continue
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
                promotion = self._path(name, PROMOTIONS_DIR, f"{stamp}-{version}.json")
                self._write_json(promotion, record)
                return Registration(self.get(name, version), True, why)
        raise RegistryError(
            f"moving {name}'s best pointer to {version}: it changed under us {POINTER_TRIES} "
            "times in a row (other registrations racing); retry"
        )

    def _judge(
        self, name: str, pointer: dict[str, Any] | None, version: str, info: dict[str, Any]
    ) -> tuple[bool, str]:
        """(may best move from ``pointer`` to ``version`` unforced, why)."""
        metric, mode = str(info["metric"]), info["mode"]
        if pointer is None:
            return True, "first version"
        best = str(pointer["version"])
        if pointer.get("metric") != metric:
            return False, f"best {best} is scored on {pointer.get('metric')}, not {metric}"
        # Scores on different data are not comparable (another split, another dataset).
        old_data = self._data_fingerprint(name, best)
        new_data = self._data_fingerprint(name, version)
        if old_data and new_data and old_data != new_data:
            return False, (
                f"best {best} was evaluated on data fingerprint {old_data}, {version} on "
                f"{new_data}: {metric} scores on different data are not comparable (--force "
                f"moves it anyway: steam-ray registry promote {name}:{version} --force)"
            )
        old, new = pointer.get("score"), info.get("score")
        ok = beats(new, old, mode)
        relation = "beats" if ok else "does not beat"
        return ok, f"{metric} {new} {relation} best {best} ({old})"

    def _data_fingerprint(self, name: str, version: str) -> str | None:
        """The version's data fingerprint from its lineage; None if it has none recorded."""
        path = self._path(name, version, "lineage.json")
        if not self._exists(path):
            return None
        value = self._read_json(path).get("data_fingerprint")
        return str(value) if value else None

    def _read_pointer(self, name: str) -> tuple[dict[str, Any] | None, int | None]:
        """(pointer, its GCS generation); the generation is None off GCS (no CAS there)."""
        uri = self._user(self._path(name, BEST_FILE))
        if not cas.supports(uri):
            return self.best_pointer(name), None
        text, generation = cas.read_with_generation(uri)
        pointer: dict[str, Any] | None = json.loads(text) if text is not None else None
        return pointer, generation

    def _write_pointer(self, name: str, record: dict[str, Any], generation: int | None) -> bool:
        """Write the pointer; False if the compare-and-swap lost (GCS: changed since read)."""
        target = self._path(name, BEST_FILE)
        if generation is not None:
            try:
                cas.write_if_generation(self._user(target), storage.json_text(record), generation)
            except cas.PreconditionFailed:
                return False
            return True
        if not self._local:
            log.warning(
                "%s: moving the best pointer of %s is not atomic on this store (no conditional "
                "writes here): registrations racing it can lose an update; register from one "
                "job at a time",
                self.root,
                name,
            )
            self._write_json(target, record)  # one object PUT: the write itself is atomic
            return True
        tmp = self._path(name, f".{BEST_FILE}.{secrets.token_hex(4)}")
        self._write_json(tmp, record)
        os.replace(tmp, target)  # atomic: readers see the old or the new pointer, never half
        return True


def _test_pause() -> None:
    """Test hook: sleep between reading the pointer and writing it (``POINTER_PAUSE_ENV``
    seconds), widening the window racing registrations meet in. Unset in real runs."""
    pause = os.environ.get(POINTER_PAUSE_ENV)
    if pause:
        time.sleep(float(pause))


def register_checkpoint(
    root: str,
    name: str,
    checkpoint: str,
    *,
    metric: str,
    mode: Literal["max", "min"],
    config: dict[str, Any],
    lineage: dict[str, Any],
    force: bool = False,
    reason: str = "",
) -> Registration:
    """Register one of our checkpoints: its metrics.json and steam_ray.json lineage come along."""
    metrics = read_checkpoint_metrics(checkpoint)
    if _score(metrics, metric) is None:
        raise RegistryError(f"{checkpoint}: metrics.json has no {metric!r} score to rank it by")
    full_lineage = {**lineage_from_checkpoint(checkpoint), **lineage, "registered_at": _now()}
    return Registry(root).register(
        name,
        checkpoint,
        metrics=metrics,
        metric=metric,
        mode=mode,
        config=config,
        lineage=full_lineage,
        force=force,
        reason=reason,
    )


def lineage_from_checkpoint(checkpoint: str) -> dict[str, Any]:
    """The lineage our checkpoints carry in ``steam_ray.json`` (empty if absent)."""
    path = storage.join(checkpoint, "steam_ray.json")
    if not storage.exists(path):
        return {}
    info: dict[str, Any] = storage.read_json(path)
    keys = (
        "data",
        "data_fingerprint",
        "tokenizer_fingerprint",
        "git_sha",
        "steam_ray_version",
        "global_step",
        "world_size",
        "saved_at",
    )
    return {k: info.get(k) for k in keys}


def read_checkpoint_metrics(checkpoint: str) -> dict[str, Any]:
    path = storage.join(checkpoint, "metrics.json")
    if not storage.exists(path):
        return {}
    data: dict[str, Any] = storage.read_json(path)
    return data
