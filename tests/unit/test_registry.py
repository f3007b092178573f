"""The model registry on real files: versions, the best pointer, concurrency, the CLI."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from steam_ray.cli import app
from steam_ray.errors import SteamRayError
from steam_ray.registry import Registry, RegistryError, register_checkpoint


def fake_checkpoint(root: Path, name: str, macro_f1: float) -> Path:
    """A checkpoint dir shaped like the training loop's (HF files + metrics + lineage)."""
    ckpt = root / name
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text(json.dumps({"model_type": "bert", "num_labels": 2}))
    (ckpt / "model.safetensors").write_bytes(b"weights-" + name.encode())
    (ckpt / "tokenizer.json").write_text("{}")
    (ckpt / "training_state.pt").write_bytes(b"optimizer state")
    (ckpt / "metrics.json").write_text(json.dumps({"macro_f1": macro_f1, "step": 4}))
    (ckpt / "steam_ray.json").write_text(
        json.dumps(
            {"data_fingerprint": "abc123", "tokenizer_fingerprint": "tok1", "git_sha": "f00"}
        )
    )
    return ckpt


def register(root: Path, ckpt: Path, force: bool = False) -> Any:
    return register_checkpoint(
        str(root),
        "steam-sentiment",
        str(ckpt),
        metric="macro_f1",
        mode="max",
        config={"train": {"lr": 1e-4}},
        lineage={"sweep": "s1", "trial_id": "t1"},
        force=force,
    )


def test_register_versions_and_best_pointer(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    first = register(root, fake_checkpoint(tmp_path, "a", 0.70))
    assert first.promoted
    v1 = first.version
    assert Path(v1.path) == root / "steam-sentiment" / v1.version / "model"
    assert (Path(v1.path) / "model.safetensors").read_bytes() == b"weights-a"
    assert not (Path(v1.path) / "training_state.pt").exists()  # training state stays out
    assert v1.metrics["macro_f1"] == 0.70
    assert v1.lineage["data_fingerprint"] == "abc123" and v1.lineage["trial_id"] == "t1"
    assert v1.config == {"train": {"lr": 1e-4}}

    better = register(root, fake_checkpoint(tmp_path, "b", 0.80))
    assert better.promoted
    reg = Registry(str(root))
    assert reg.resolve("steam-sentiment").version == better.version.version
    assert reg.resolve("steam-sentiment:best").version == better.version.version
    assert reg.resolve("best").version == better.version.version

    worse = register(root, fake_checkpoint(tmp_path, "c", 0.75))
    assert not worse.promoted and "does not beat" in worse.reason
    # The worse version exists (immutable, addressable) but best did not move.
    assert reg.resolve(f"steam-sentiment:{worse.version.version}").metrics["macro_f1"] == 0.75
    assert reg.resolve("best").version == better.version.version
    assert len(reg.version_ids("steam-sentiment")) == 3

    # promote refuses a worse version without --force ...
    with pytest.raises(RegistryError, match="refused"):
        reg.promote("steam-sentiment", worse.version.version)
    assert reg.resolve("best").version == better.version.version
    # ... and records a forced move.
    forced = reg.promote("steam-sentiment", worse.version.version, force=True, reason="rollback")
    assert forced.promoted
    pointer = reg.best_pointer("steam-sentiment")
    assert pointer is not None
    assert pointer["version"] == worse.version.version and pointer["forced"] is True
    assert pointer["previous"] == better.version.version and pointer["reason"] == "rollback"
    history = reg.promotions("steam-sentiment")
    assert [h["forced"] for h in history] == [False, False, True]

    # The registered model is a plain HF checkpoint dir; the temp dirs are gone.
    assert not [p for p in (root / "steam-sentiment").iterdir() if p.name.startswith(".tmp")]


def test_unknown_refs_name_the_ref_and_root(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    reg = Registry(str(root))
    with pytest.raises(SteamRayError, match=r"'nope'.*registry"):
        reg.resolve("nope")
    register(root, fake_checkpoint(tmp_path, "a", 0.7))
    with pytest.raises(SteamRayError, match=rf"steam-sentiment:v9.*{root}"):
        reg.resolve("steam-sentiment:v9")


def test_half_written_version_is_invisible(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    done = register(root, fake_checkpoint(tmp_path, "a", 0.7))
    # A writer that died mid-copy (object-store style: files but no version.json).
    partial = root / "steam-sentiment" / "20990101-000000-dead00"
    (partial / "model").mkdir(parents=True)
    (partial / "metrics.json").write_text("{}")
    reg = Registry(str(root))
    assert reg.version_ids("steam-sentiment") == [done.version.version]
    with pytest.raises(RegistryError):
        reg.resolve("steam-sentiment:20990101-000000-dead00")


def _register_worker(args: tuple[str, str, Any]) -> str:
    root, ckpt, start = args
    # Slow pointer reads (as on an object store) widen the read-compare-write window: without
    # the registry's lock, concurrent writers then lose each other's pointer updates.
    read = Registry.best_pointer

    def slow_read(self: Registry, name: str) -> dict[str, Any] | None:
        pointer = read(self, name)
        time.sleep(0.3)
        return pointer

    Registry.best_pointer = slow_read  # type: ignore[method-assign]
    start.wait()
    return str(register(Path(root), Path(ckpt)).version.version)


def test_concurrent_registrations_are_safe(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    scores = [0.61, 0.93, 0.72, 0.88, 0.65, 0.79]
    ckpts = [fake_checkpoint(tmp_path, f"c{i}", s) for i, s in enumerate(scores)]
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Manager().Barrier(len(scores))
    with ctx.Pool(len(scores)) as pool:
        versions = pool.map(_register_worker, [(str(root), str(c), start) for c in ckpts])
    reg = Registry(str(root))
    assert sorted(versions) == reg.version_ids("steam-sentiment")  # all complete, none lost
    best = reg.resolve("best")
    assert best.metrics["macro_f1"] == max(scores)  # no lost update of the pointer
    for v in versions:
        mv = reg.resolve(f"steam-sentiment:{v}")
        assert (Path(mv.path) / "config.json").is_file()


def test_registry_cli(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    first = register(root, fake_checkpoint(tmp_path, "a", 0.7)).version
    second = register(root, fake_checkpoint(tmp_path, "b", 0.6)).version
    runner = CliRunner()
    listed = runner.invoke(app, ["registry", "list", "--root", str(root)])
    assert listed.exit_code == 0, listed.output
    assert f"* steam-sentiment:{first.version}" in listed.output
    assert f"  steam-sentiment:{second.version}" in listed.output

    path = runner.invoke(app, ["registry", "path", "steam-sentiment", "--root", str(root)])
    assert path.exit_code == 0 and path.output.strip() == first.path

    shown = runner.invoke(
        app, ["registry", "show", f"steam-sentiment:{second.version}", "-r", str(root)]
    )
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["metrics"]["macro_f1"] == 0.6

    refused = runner.invoke(
        app, ["registry", "promote", f"steam-sentiment:{second.version}", "-r", str(root)]
    )
    assert refused.exit_code == 1 and "refused" in refused.output
    forced = runner.invoke(
        app,
        ["registry", "promote", f"steam-sentiment:{second.version}", "--force", "-r", str(root)],
    )
    assert forced.exit_code == 0, forced.output
    assert Registry(str(root)).resolve("best").version == second.version

    missing = runner.invoke(app, ["registry", "path", "other:best", "-r", str(root)])
    assert missing.exit_code == 1 and "other" in missing.output and str(root) in missing.output


def test_the_shared_score_rule() -> None:
    """One rule for the registry's pointer and a sweep's best (steam_ray.scores)."""
    from steam_ray.scores import beats, finite

    assert [finite(v) for v in (0.5, 2, True, None, "0.9", float("nan"), float("inf"))] == [
        0.5,
        2.0,
        1.0,
        None,
        None,
        None,
        None,
    ]
    assert beats(0.9, 0.8, "max") and not beats(0.8, 0.9, "max") and not beats(0.8, 0.8, "max")
    assert beats(0.1, 0.2, "min") and not beats(0.2, 0.1, "min") and not beats(0.2, 0.2, "min")
    assert beats(0.1, None, "max") and not beats(None, 0.1, "max") and not beats(None, None, "min")
    assert not beats(float("nan"), 0.1, "max") and not beats(float("nan"), 0.1, "min")
