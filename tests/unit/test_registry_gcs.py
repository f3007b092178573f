"""The registry's ``best`` pointer on a real GCS server (fake-gcs-server): generation
preconditions (steam_ray.cas) and registrations racing; the data-fingerprint rule."""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gcs_emulator
import pytest
from test_registry import fake_checkpoint

from steam_ray import cas, storage
from steam_ray.errors import ConfigError
from steam_ray.registry import (
    POINTER_PAUSE_ENV,
    Registration,
    Registry,
    RegistryError,
    register_checkpoint,
)

BUCKET = "steam-ray-registry"
NAME = "steam-sentiment"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[gcs_emulator.GcsEmulator]:
    with gcs_emulator.serving(tmp_path_factory.mktemp("gcs") / "fake-gcs.log", BUCKET) as server:
        yield server


def gs_root() -> str:
    """A fresh registry root per test: tests share the module's server and bucket."""
    return f"gs://{BUCKET}/{secrets.token_hex(4)}/registry"


def register(root: str, ckpt: Path, force: bool = False) -> Registration:
    return register_checkpoint(
        root,
        NAME,
        str(ckpt),
        metric="macro_f1",
        mode="max",
        config={"train": {"lr": 1e-4}},
        lineage={"sweep": "s1"},
        force=force,
    )


def with_fingerprint(ckpt: Path, fingerprint: str) -> Path:
    info = json.loads((ckpt / "steam_ray.json").read_text())
    (ckpt / "steam_ray.json").write_text(json.dumps({**info, "data_fingerprint": fingerprint}))
    return ckpt


def test_conditional_writes_on_generations(emulator: gcs_emulator.GcsEmulator) -> None:
    uri = f"{gs_root()}/{NAME}/best.json"
    assert cas.read_with_generation(uri) == (None, cas.ABSENT)

    first = cas.write_if_generation(uri, "one", cas.ABSENT)  # create-if-absent: there is none
    assert cas.read_with_generation(uri) == ("one", first)
    with pytest.raises(cas.PreconditionFailed, match="changed since it was read"):
        cas.write_if_generation(uri, "again", cas.ABSENT)  # create-if-absent: it exists now

    second = cas.write_if_generation(uri, "two", first)  # the live generation: accepted
    assert second != first
    with pytest.raises(cas.PreconditionFailed):
        cas.write_if_generation(uri, "stale", first)  # a stale generation: refused
    assert cas.read_with_generation(uri) == ("two", second)
    with pytest.raises(ConfigError, match="gs://"):
        cas.write_if_generation("s3://bucket/best.json", "x", cas.ABSENT)


def _race_worker(args: tuple[str, str, float, Any]) -> Registration:
    root, ckpt, pause, start = args
    # Both racers read the pointer, then sleep before writing it: the worse sleeps longer, so
    # without a compare-and-swap its stale decision would overwrite the better one's move.
    os.environ[POINTER_PAUSE_ENV] = str(pause)
    start.wait()
    return register(root, Path(ckpt))


@pytest.mark.parametrize("baseline", [0.5, None], ids=["over-a-best", "first-version"])
def test_racing_registrations_end_on_the_better_version(
    emulator: gcs_emulator.GcsEmulator, tmp_path: Path, baseline: float | None
) -> None:
    root = gs_root()
    base = register(root, fake_checkpoint(tmp_path, "base", baseline)) if baseline else None
    worse, better = fake_checkpoint(tmp_path, "worse", 0.6), fake_checkpoint(tmp_path, "b", 0.9)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(2) as pool:
        start = manager.Barrier(2)
        jobs = [(root, str(worse), 5.0, start), (root, str(better), 2.0, start)]
        lost, won = pool.map(_race_worker, jobs)

    reg = Registry(root)
    assert reg.resolve("best").version == won.version.version
    assert won.promoted and not lost.promoted
    # The worse one first saw the old pointer (its write was refused), then re-read the new.
    assert f"does not beat best {won.version.version}" in lost.reason
    pointer = reg.best_pointer(NAME)
    assert pointer is not None
    assert pointer["previous"] == (base.version.version if base else None)
    assert [p["version"] for p in reg.promotions(NAME)][-1] == won.version.version
    assert len(reg.promotions(NAME)) == (2 if base else 1)
    # The pointer keeps the registry's JSON format.
    raw = storage.read_text(f"{root}/{NAME}/best.json")
    assert raw == storage.json_text(pointer)
    # Both versions were committed (seen by the JSON API itself, not through our code).
    names = emulator.objects(BUCKET, root.removeprefix(f"gs://{BUCKET}/"))
    for reg_result in (won, lost):
        assert any(n.endswith(f"{reg_result.version.version}/version.json") for n in names)


def test_scores_on_other_data_are_not_compared_unless_forced(tmp_path: Path) -> None:
    root = str(tmp_path / "registry")
    first = register(root, fake_checkpoint(tmp_path, "a", 0.7))
    other = register(root, with_fingerprint(fake_checkpoint(tmp_path, "b", 0.9), "def456"))
    assert not other.promoted
    assert "abc123" in other.reason and "def456" in other.reason and "--force" in other.reason
    reg = Registry(root)
    assert reg.resolve("best").version == first.version.version
    with pytest.raises(RegistryError, match="def456"):
        reg.promote(NAME, other.version.version)

    forced = reg.promote(NAME, other.version.version, force=True, reason="new dataset")
    assert forced.promoted and reg.resolve("best").version == other.version.version
    pointer = reg.best_pointer(NAME)
    assert pointer is not None and pointer["forced"] is True and "def456" in pointer["why"]

    # train --register --force: a new version on other data becomes best at once.
    third = with_fingerprint(fake_checkpoint(tmp_path, "c", 0.5), "fff999")
    assert register(root, third, force=True).promoted
    # Same data: scores compare as usual (0.6 beats 0.5).
    assert register(root, with_fingerprint(fake_checkpoint(tmp_path, "d", 0.6), "fff999")).promoted


def test_versions_without_a_fingerprint_compare_by_score(tmp_path: Path) -> None:
    """Versions registered without a data fingerprint (older ones) are compared as before."""
    root = str(tmp_path / "registry")
    ckpt = fake_checkpoint(tmp_path, "a", 0.7)
    (ckpt / "steam_ray.json").unlink()
    register(root, ckpt)
    better = register(root, with_fingerprint(fake_checkpoint(tmp_path, "b", 0.8), "def456"))
    assert better.promoted and "beats" in better.reason
