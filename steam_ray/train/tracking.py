"""Experiment tracking from rank 0: Weights & Biases (offline by default) and TensorBoard.

Tracking is best effort: any failure is logged as a warning and the backend is switched off,
never allowed to kill a training run.
"""

from __future__ import annotations

import logging
import os
import tempfile
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
        if not enabled:
            return
        # Object-store run dirs: write locally, upload on close (neither backend writes gs://).
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

    def close(self) -> None:
        if not self.enabled:
            return
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
        if self._remote_dir is not None:
            try:
                import pyarrow.fs as pafs

                fs, inner = storage.resolve(self._remote_dir)
                pafs.copy_files(
                    self._local_dir, inner, destination_filesystem=fs, use_threads=False
                )
            except Exception as exc:
                log.warning("uploading tracking files to %s failed: %s", self._remote_dir, exc)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
