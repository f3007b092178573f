"""Tracker on an object-store run dir: TensorBoard and W&B write locally and every flush (each
evaluation) uploads, so a trial stopped by ASHA or a crashed attempt keeps its curves; close()
uploads a last time and removes the temp dir. Real fake-gcs-server, real backends."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gcs_emulator
import pytest

from steam_ray import storage
from steam_ray.config import TrainConfig
from steam_ray.train.recipe import FineTuneRecipe
from steam_ray.train.tracking import Tracker

BUCKET = "tracking"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[gcs_emulator.GcsEmulator]:
    em = gcs_emulator.start(tmp_path_factory.mktemp("gcs") / "fake-gcs.log")
    em.create_bucket(BUCKET)
    yield em
    em.stop()


@pytest.fixture
def gcs(
    emulator: gcs_emulator.GcsEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[gcs_emulator.GcsEmulator]:
    """gs:// URIs of this test go to the emulator; the variable and the cache are reset after."""
    monkeypatch.setenv(storage.GCS_EMULATOR_ENV, emulator.url)
    gcs_emulator.use(emulator)
    yield emulator
    storage.clear_cache()


def _tracker(run_dir: str, **kw: Any) -> Tracker:
    return Tracker(
        enabled=True, run_dir=run_dir, project="unit", run_name="t", config={"lr": 1e-3}, **kw
    )


def _size(uri: str) -> int:
    fs, inner = storage.resolve(uri)
    return int(fs.get_file_info(inner).size)


def test_each_flush_uploads_and_close_removes_the_temp_dir(
    gcs: gcs_emulator.GcsEmulator,
) -> None:
    tracker = _tracker(f"gs://{BUCKET}/runs/a/trial_0")
    tracker.log({"val/macro_f1": 0.5, "val/loss": 0.7}, step=10)
    tracker.flush()  # an evaluation: no close, as for a trial ASHA stops next
    names = gcs.objects(BUCKET, "runs/a/trial_0/")
    events = [n for n in names if n.startswith("runs/a/trial_0/tensorboard/events.out.tfevents")]
    assert len(events) == 1, names
    assert any(n.startswith("runs/a/trial_0/wandb/") for n in names), names
    first = _size(f"gs://{BUCKET}/{events[0]}")

    tracker.log({"val/macro_f1": 0.6, "val/loss": 0.6}, step=20)
    tracker.flush()  # the appended event file replaces the earlier object
    assert _size(f"gs://{BUCKET}/{events[0]}") > first

    local = Path(tracker._local_dir)
    assert local.is_dir()
    tracker.close()
    assert not local.exists()
    names = gcs.objects(BUCKET, "runs/a/trial_0/")
    assert events[0] in names
    # finish() wrote W&B's offline run log: it is there as well
    assert any(n.endswith(".wandb") for n in names), names
    tracker.close()  # idempotent


def test_an_upload_failure_warns_and_keeps_the_files(
    gcs: gcs_emulator.GcsEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = _tracker("gs://no-such-bucket/runs/a", wandb=False)
    tracker.log({"train/loss": 1.0}, step=1)
    with caplog.at_level(logging.WARNING, logger="steam_ray.train.tracking"):
        tracker.flush()  # never raises into the training loop
        tracker.close()
    assert "uploading tracking files to gs://no-such-bucket/runs/a failed" in caplog.text
    local = Path(tracker._local_dir)
    try:
        assert local.is_dir() and any(local.rglob("events.out.tfevents*"))  # the only copy
        assert str(local) in caplog.text
    finally:
        shutil.rmtree(local, ignore_errors=True)


def test_a_local_run_dir_is_written_in_place(tmp_path: Path) -> None:
    tracker = _tracker(str(tmp_path / "run"), wandb=False)
    tracker.log({"train/loss": 1.0}, step=1)
    tracker.flush()
    tracker.close()
    assert any((tmp_path / "run" / "tensorboard").glob("events.out.tfevents*"))


class _FailingShard:
    """A train shard whose worker goes away: reading it raises."""

    def iter_torch_batches(self, **_: Any) -> Any:
        raise RuntimeError("shard lost")

    def iter_batches(self, **_: Any) -> Any:
        raise RuntimeError("shard lost")


def test_a_failed_attempt_still_uploads_and_cleans_up(
    gcs: gcs_emulator.GcsEmulator, minilm_path: str, tmp_path: Path
) -> None:
    run_dir = f"gs://{BUCKET}/runs/failed"
    cfg = TrainConfig(model=minilm_path, max_steps=4, wandb=False)
    run = {"run_dir": run_dir, "experiment_name": "unit", "version": "test", "git_sha": None}
    recipe = FineTuneRecipe(cfg, run, rank=0, world_size=1)
    recipe.setup()
    recipe.start_attempt(1, resumed_from=None)
    assert recipe.tracker is not None
    local = recipe.tracker._local_dir
    with pytest.raises(RuntimeError, match="shard lost"):
        recipe.train(_FailingShard(), None)
    assert not os.path.exists(local)  # closed in the finally
    names = gcs.objects(BUCKET, "runs/failed/tensorboard/")
    assert any("events.out.tfevents" in n for n in names), names
