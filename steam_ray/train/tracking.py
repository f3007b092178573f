"""Experiment tracking from rank 0: Weights & Biases (offline by default) and TensorBoard.

Tracking is best effort: any failure is logged as a warning and the backend is switched off,
never allowed to kill a training run.

Neither backend writes to an object store, so for a ``gs://``/``s3://`` run dir both write to a
local temp dir that ``flush()`` uploads (the recipe calls it at every evaluation, so a trial
stopped by the scheduler or a crashed attempt keeps what it logged) and ``close()`` uploads a
last time and removes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from steam_ray import storage

log = logging.getLogger(__name__)


class Tracker:
    """Logs scalars to W&B and TensorBoard. A disabled tracker (non-zero ranks) is a no-op."""

    def __init__(
        self,
        *,
        enabled: bool,
        run_dir: str,
        project: str,
        run_name: str,
        config: dict[str, Any],
        tensorboard: bool = True,
        wandb: bool = True,
    ) -> None:
        self.enabled = enabled
        self._wandb: Any = None
        self._tb: Any = None
        self._remote_dir: str | None = None
        # Relative path -> (size, mtime_ns) of what the object store has: flush() uploads only
        # files that changed since (TensorBoard and W&B append to a few files).
        self._uploaded: dict[str, tuple[int, int]] = {}
        self._closed = False
        if not enabled:
            return
        # Object-store run dirs: write locally, upload on flush/close.
        if storage.is_uri(run_dir):
            self._local_dir = tempfile.mkdtemp(prefix="steam-ray-tracking-")
            self._remote_dir = run_dir
        else:
            self._local_dir = run_dir
            os.makedirs(run_dir, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=os.path.join(self._local_dir, "tensorboard"))
            except Exception as exc:
                log.warning("TensorBoard disabled: %s", exc)
        if wandb:
            try:
                import wandb as wb

                # Offline unless the user configured W&B (an API key or an explicit mode).
                mode: Any = os.environ.get("WANDB_MODE") or (
                    "online" if os.environ.get("WANDB_API_KEY") else "offline"
                )
                wandb_dir = os.path.join(self._local_dir, "wandb")
                os.makedirs(wandb_dir, exist_ok=True)
                self._wandb = wb.init(
                    project=project,
                    name=run_name,
                    dir=wandb_dir,
                    mode=mode,
                    config=config,
                    settings=wb.Settings(silent=True, console="off"),
                )
            except Exception as exc:
                log.warning("W&B disabled: %s", exc)
                self._wandb = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        # One console line per log call: Ray forwards it to the driver, so a run shows
        # progress where the user is looking, not only in TensorBoard/W&B. Logged, not
        # printed: Ray Train V2 patches print() in workers and, when the stream is wrapped,
        # both tees it and logs it, so every printed line reached the driver twice.
        shown = " ".join(f"{k.split('/', 1)[-1]}={_fmt(v)}" for k, v in metrics.items())
        log.info("[steam-ray] step %d: %s", step, shown)
        if self._tb is not None:
            try:
                for key, value in metrics.items():
                    self._tb.add_scalar(key, value, step)
            except Exception as exc:
                log.warning("TensorBoard logging failed, disabling: %s", exc)
                self._tb = None
        if self._wandb is not None:
            try:
                self._wandb.log(dict(metrics), step=step)
            except Exception as exc:
                log.warning("W&B logging failed, disabling: %s", exc)
                self._wandb = None

    def flush(self) -> None:
        """Flush both backends' files and upload them to an object-store run dir."""
        if not self.enabled or self._closed:
            return
        if self._tb is not None:
            try:
                self._tb.flush()
            except Exception as exc:
                log.warning("TensorBoard flush failed: %s", exc)
        # W&B has no public flush: its service process writes the offline run files as it
        # goes, and the next flush (or close, after finish()) uploads what it has added.
        self._upload()

    def close(self) -> None:
        """Close both backends, upload a last time, remove the local temp dir. Idempotent."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        for name, backend, closer in (
            ("TensorBoard", self._tb, "close"),
            ("W&B", self._wandb, "finish"),
        ):
            if backend is None:
                continue
            try:
                getattr(backend, closer)()
            except Exception as exc:
                log.warning("%s close failed: %s", name, exc)
        self._tb = self._wandb = None
        if self._remote_dir is None:
            return
        if self._upload():
            shutil.rmtree(self._local_dir, ignore_errors=True)
        else:  # keep the only copy of the run's curves where the warning says
            log.warning("tracking files left in %s", self._local_dir)

    def _upload(self) -> bool:
        """Copy new or changed local files to the remote run dir. Best effort: False (and a
        warning) on failure; a file that failed is retried by the next call."""
        if self._remote_dir is None:
            return True
        try:
            fs, inner = storage.resolve(self._remote_dir)
            made: set[str] = set()
            for rel, stamp in _changed_files(self._local_dir, self._uploaded):
                # Whole file in memory first: an object is then written in one piece, never
                # half (files are small: event logs, W&B's offline run).
                try:
                    data = (Path(self._local_dir) / rel).read_bytes()
                except FileNotFoundError:  # removed since it was listed
                    continue
                target = f"{inner}/{rel}"
                parent = target.rsplit("/", 1)[0]
                if parent not in made:
                    fs.create_dir(parent, recursive=True)
                    made.add(parent)
                with fs.open_output_stream(target) as out:
                    out.write(data)
                self._uploaded[rel] = stamp
        except Exception as exc:
            log.warning("uploading tracking files to %s failed: %s", self._remote_dir, exc)
            return False
        return True


def _changed_files(
    root: str, uploaded: dict[str, tuple[int, int]]
) -> list[tuple[str, tuple[int, int]]]:
    """(POSIX path relative to ``root``, (size, mtime_ns)) of each file not in ``uploaded`` as
    it is now. The stamp is taken before the file is read: a write in between re-uploads."""
    out: list[tuple[str, tuple[int, int]]] = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except OSError:  # removed meanwhile (W&B's temporary files)
                continue
            if not path.is_file() or path.is_symlink():
                continue
            rel = path.relative_to(root).as_posix()
            stamp = (st.st_size, st.st_mtime_ns)
            if uploaded.get(rel) != stamp:
                out.append((rel, stamp))
    return sorted(out)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
