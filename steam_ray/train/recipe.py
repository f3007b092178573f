"""The fine-tuning recipe run on every rank, shaped like a torchtune recipe:
``setup`` -> ``train`` (-> ``train_step`` / ``evaluate`` / ``save_checkpoint``), with
``load_checkpoint`` on resume. Each method is small and runs without Ray (rank 0 of 1, CPU);
``train_loop_per_worker`` (bottom) is Ray Train's entry point on every rank, and reaches the
Ray Train context only through ``ray_adapter``. The recipe's pieces live beside it: model
(``model``), optimiser/schedule/precision (``optim``), batches (``data``), validation
(``evaluation``), checkpoint contents and lineage (``checkpoint``), tracking (``tracking``).

Resume semantics (mid-epoch): a checkpoint records the epoch and the optimizer steps taken in
it. On resume every rank re-reads that epoch from the start of its shard and skips exactly
that many steps' worth of micro-batches (``steps * grad_accum_steps``) before training again.
Ray Data's ``streaming_split`` does not guarantee the same order or the same block-to-rank
assignment across runs, so the skipped micro-batches are the same *number* but not
necessarily the same *rows*: in the resumed epoch some rows may be trained on twice and as
many not at all. Epoch boundaries, step counts, the LR schedule, optimizer state and each
rank's RNG state are restored exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from steam_ray import storage
from steam_ray.config import TrainConfig, resolve_model
from steam_ray.train import distributed, ray_adapter
from steam_ray.train.checkpoint import (
    bump_attempts,
    checkpoint_info,
    lineage_entry,
    load_rank_state,
    load_training_state,
    now_iso,
    read_lineage,
    save_checkpoint,
    save_rank_state,
    set_rng_state,
    training_state,
)
from steam_ray.train.data import Batch, to_device, train_batches
from steam_ray.train.evaluation import evaluate_shard
from steam_ray.train.faults import maybe_inject_failure
from steam_ray.train.model import load_model, param_checksum
from steam_ray.train.optim import (
    LossWindow,
    amp_dtype,
    autocast,
    build_optimizer,
    build_scheduler,
    class_weights,
    schedule_steps,
)
from steam_ray.train.tracking import Tracker

log = logging.getLogger(__name__)

#: (metrics, checkpoint dir or None, checkpoint dir name) -> None; ``ray.train.report`` in Ray.
Reporter = Callable[[dict[str, Any], str | None, str], None]


def take(batches: Iterator[Batch], k: int) -> list[Batch] | None:
    """The next ``k`` micro-batches (one optimizer step), or None if fewer remain."""
    out = [b for _, b in zip(range(k), batches, strict=False)]
    return out if len(out) == k else None


class FineTuneRecipe:
    """One rank's training run: model, optimiser, schedule, loop, evaluation, checkpoints."""

    def __init__(
        self,
        cfg: TrainConfig,
        run: dict[str, Any],
        *,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | None = None,
        reporter: Reporter | None = None,
        node_id: str = "local",
    ) -> None:
        self.cfg, self.run = cfg, run
        self.rank, self.world = rank, world_size
        self.device = device or torch.device("cpu")
        self.reporter = reporter
        self.node_id = node_id
        self.started_at = now_iso()
        self.global_step = self.epoch = self.step_in_epoch = 0
        self.attempt = 1
        self.lineage: list[dict[str, Any]] = []
        self.resumed_from: str | None = None
        self.resumed_from_step = 0
        self.last_eval_step = -1
        self.tracker: Tracker | None = None

    # -- set-up --------------------------------------------------------------------------

    def setup(
        self,
        checkpoint_dir: str | None = None,
        wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    ) -> None:
        """Model (from the base model or a checkpoint), optimiser, schedule, precision.

        ``wrap`` puts the model on the device and wraps it for DDP (``prepare_model``).
        """
        from transformers import AutoTokenizer, set_seed

        cfg = self.cfg
        set_seed(cfg.seed)  # the same head init on every rank (DDP broadcasts rank 0's anyway)
        source = checkpoint_dir or resolve_model(cfg.model)
        raw: torch.nn.Module = load_model(source, cfg.dropout)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else 0)
        set_seed(cfg.seed + self.rank)  # dropout masks differ per rank
        model = wrap(raw) if wrap is not None else raw.to(self.device)
        self.raw: torch.nn.Module = getattr(model, "module", model)
        self.ddp: Any = model if model is not self.raw else None
        self.model: Any = torch.compile(model) if cfg.compile else model
        self.optimizer = build_optimizer(self.raw, cfg, self.device)
        self.total_steps = schedule_steps(cfg, self.run, self.world)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total_steps)
        self.amp = amp_dtype(cfg, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.loss_weight = (
            class_weights(self.run["train_positive"], self.run["train_negative"]).to(self.device)
            if cfg.class_weighted
            else None
        )
        self.losses = LossWindow(cfg.loss_window_steps or cfg.log_every_steps, self.device)
        if checkpoint_dir is not None:
            self.load_checkpoint(checkpoint_dir)

    def load_checkpoint(self, directory: str) -> None:
        """Optimiser, schedule, scaler, position and this rank's RNG state."""
        state = load_training_state(directory)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.global_step = int(state["global_step"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.resumed_from_step = self.last_eval_step = self.global_step
        self.lineage = read_lineage(directory)
        mine = load_rank_state(directory, self.rank)
        if mine is not None:
            set_rng_state(mine["rng"])
        else:  # a checkpoint from fewer ranks: a fresh, still per-rank and step-dependent seed
            from transformers import set_seed

            log.warning("no RNG state for rank %d in %s: reseeding", self.rank, directory)
            set_seed(self.cfg.seed + self.rank + self.global_step)

    # -- one optimizer step ---------------------------------------------------------------

    def forward_loss(self, batch: Batch) -> torch.Tensor:
        """Summed (not mean) cross-entropy of one micro-batch: the caller normalises."""
        b = to_device(batch, self.device)
        with autocast(self.device, self.amp):
            logits = self.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        return F.cross_entropy(
            logits.float(), b["labels"], weight=self.loss_weight, reduction="sum"
        )

    def train_step(self, micro_batches: list[Batch], global_rows: int) -> torch.Tensor:
        """One optimizer step over ``micro_batches``; returns this rank's mean loss per row
        as a device tensor (no host sync)."""
        loss = self.accumulate(micro_batches, global_rows)
        self.optimizer_step()
        return loss

    def accumulate(self, micro_batches: list[Batch], global_rows: int) -> torch.Tensor:
        """Forward/backward every micro-batch (DDP syncs gradients on the last one only).

        Every row weighs 1/global_rows whatever its micro-batch's size (token-budget batches
        hold very different row counts): the summed loss is scaled by world/global_rows
        because DDP averages gradients over ranks.
        """
        scale = self.world / global_rows
        total = torch.zeros((), device=self.device)
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = self.ddp.no_sync() if self.ddp is not None and not last else None
            with sync or contextlib.nullcontext():
                loss_sum = self.forward_loss(batch)
                scaled = loss_sum * scale
                out: Any = self.scaler.scale(scaled) if self.scaler is not None else scaled
                out.backward()
            total += loss_sum.detach()
        rows = sum(int(b["labels"].shape[0]) for b in micro_batches)
        return total / rows

    def optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.raw.parameters(), self.cfg.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        self.step_in_epoch += 1

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    # -- evaluation and checkpoints ---------------------------------------------------------

    def evaluate(self, shard: Any) -> dict[str, float]:
        """Validation over this rank's shard, metrics over every rank's predictions.

        Runs the unwrapped module: a DDP forward may broadcast buffers (a collective), and
        ranks hold different numbers of validation batches.
        """
        return evaluate_shard(
            self.raw,
            shard,
            batch_size=self.cfg.eval_batch_size,
            max_rows=self.cfg.max_eval_rows,
            world_size=self.world,
            pad_id=self.pad_id,
            device=self.device,
            amp=self.amp,
        )

    def save_checkpoint(self, directory: str, metrics: dict[str, Any]) -> None:
        """Rank 0: model, tokenizer, metrics, shared state. Every rank: its RNG state."""
        if self.rank == 0:
            state = training_state(
                self.optimizer,
                self.scheduler,
                global_step=self.global_step,
                epoch=self.epoch,
                step_in_epoch=self.step_in_epoch,
                scaler=self.scaler,
            )
            save_checkpoint(
                directory,
                model=self.raw,
                tokenizer=self.tokenizer,
                metrics=metrics,
                info=checkpoint_info(
                    self.cfg,
                    self.run,
                    world_size=self.world,
                    global_step=self.global_step,
                    epoch=self.epoch,
                    attempt=self.attempt,
                    attempt_started_at=self.started_at,
                    resumed_from_step=self.resumed_from_step,
                    lineage=self.lineage,
                ),
                state=state,
            )
        save_rank_state(directory, self.rank, global_step=self.global_step)

    def evaluate_and_report(self, val_shard: Any) -> None:
        """Validate, checkpoint, and ``ray.train.report`` metrics + checkpoint together."""
        val = self.evaluate(val_shard)
        metrics: dict[str, Any] = {
            **val,
            "step": self.global_step,
            "epoch": self.epoch,
            "train_loss": _nan_if_none(self.losses.mean()),
            "lr": self.lr(),
            "total_steps": self.total_steps,
            "world_size": self.world,
            "attempt": self.attempt,
            "resumed_from_step": self.resumed_from_step,
            "resumed_from": self.resumed_from or "",
            "param_hashes": distributed.gather_objects(param_checksum(self.raw)),
            "node_ids": distributed.gather_objects(self.node_id),
            "elapsed_s": time.perf_counter() - self._t0,
        }
        if self.tracker is not None:
            self.tracker.log({f"val/{k}": v for k, v in val.items()}, self.global_step)
            # Before the report: a scheduler may stop the trial on it, killing this worker.
            self.tracker.flush()
        with tempfile.TemporaryDirectory(prefix="steam-ray-ckpt-") as tmp:
            self.save_checkpoint(tmp, metrics)
            if self.reporter is not None:
                self.reporter(metrics, tmp, f"checkpoint_step{self.global_step:06d}")
        self.last_eval_step = self.global_step

    # -- the loop ---------------------------------------------------------------------------

    def log_progress(self, samples: int, tokens: int, dt: float) -> None:
        if self.tracker is None:
            return
        self.tracker.log(
            {
                "train/loss": _nan_if_none(self.losses.mean()),
                "train/lr": self.lr(),
                # Rank 0's rate times the world size: ranks run in lockstep under DDP.
                "train/samples_per_s": samples * self.world / dt,
                "train/tokens_per_s": tokens * self.world / dt,
                "train/epoch": float(self.epoch),
            },
            self.global_step,
        )

    def train_epoch(self, train_shard: Any, val_shard: Any, skip_steps: int) -> tuple[int, bool]:
        """One pass over this rank's shard. Returns (steps taken, done)."""
        cfg = self.cfg
        batches = iter(
            train_batches(
                train_shard,
                batch_size=cfg.batch_size,
                token_budget=cfg.token_budget,
                pad_id=self.pad_id,
                seed=cfg.seed + self.epoch,
                window_rows=cfg.bucket_window_rows,
                shuffle_buffer_rows=cfg.shuffle_buffer_rows,
            )
        )
        steps = 0
        log_t, samples, tokens = time.perf_counter(), 0, 0
        while True:
            micro = take(batches, cfg.grad_accum_steps)
            rows = sum(int(b["labels"].shape[0]) for b in micro) if micro else None
            global_rows = distributed.step_rows(rows)  # every rank calls it, every step
            if global_rows is None or micro is None:
                return steps, False
            if skip_steps > 0:  # resume mid-epoch: replay what the restored steps consumed
                skip_steps -= 1
                continue
            if self.global_step >= self.total_steps:
                log.warning("LR schedule ended (%d steps) before the data", self.total_steps)
                return steps, True
            self.losses.add(self.train_step(micro, global_rows))
            steps += 1
            samples += rows or 0
            tokens += sum(int(b["attention_mask"].sum()) for b in micro)  # host tensors
            if self.global_step % cfg.log_every_steps == 0:
                self.log_progress(samples, tokens, max(time.perf_counter() - log_t, 1e-9))
                log_t, samples, tokens = time.perf_counter(), 0, 0
            maybe_inject_failure(
                cfg.faults, self.run["run_dir"], self.global_step, self.rank, self.world
            )
            if cfg.eval_every_steps and self.global_step % cfg.eval_every_steps == 0:
                self.evaluate_and_report(val_shard)
            if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                return steps, True

    def train(self, train_shard: Any, val_shard: Any) -> None:
        """Epochs until ``epochs`` (or ``max_steps``); evaluates at the end of each epoch
        unless ``eval_every_steps`` is set, and always at the end of the run."""
        try:
            self._train_epochs(train_shard, val_shard)
        finally:  # a failed attempt's curves are uploaded too (and its temp dir removed)
            if self.tracker is not None:
                self.tracker.close()

    def _train_epochs(self, train_shard: Any, val_shard: Any) -> None:
        cfg = self.cfg
        self._t0 = time.perf_counter()
        done = cfg.max_steps is not None and self.global_step >= cfg.max_steps
        max_epochs = cfg.epochs if cfg.max_steps is None else 1_000_000
        skip = self.step_in_epoch
        while not done and self.epoch < max_epochs:
            self.step_in_epoch = skip
            steps, done = self.train_epoch(train_shard, val_shard, skip)
            if done:
                break
            self.epoch, self.step_in_epoch, skip = self.epoch + 1, 0, 0
            if self.last_eval_step != self.global_step and cfg.eval_every_steps is None:
                self.evaluate_and_report(val_shard)
            if steps == 0:
                break  # the data yields no full step: stop rather than loop forever
        if self.last_eval_step != self.global_step:
            self.evaluate_and_report(val_shard)

    # -- one attempt of a run ----------------------------------------------------------------

    def start_attempt(self, attempt: int, resumed_from: str | None) -> None:
        """Record attempt number ``attempt`` of the run (resumed from checkpoint
        ``resumed_from``, or None from the base model) in the lineage; open the tracker."""
        self.attempt, self.resumed_from = attempt, resumed_from
        self.lineage.append(
            lineage_entry(self.attempt, self.started_at, self.resumed_from_step, resumed_from)
        )
        self.tracker = self.make_tracker()

    def make_tracker(self) -> Tracker:
        """W&B / TensorBoard from rank 0 (a no-op elsewhere), named after this attempt."""
        cfg, run = self.cfg, self.run
        return Tracker(
            enabled=self.rank == 0,
            run_dir=run["run_dir"],
            project=cfg.wandb_project,
            run_name=cfg.wandb_run_name or f"{run['experiment_name']}-a{self.attempt}",
            config=cfg.model_dump(mode="json"),
            tensorboard=cfg.tensorboard,
            wandb=cfg.wandb,
        )


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train's entry point on every rank (TorchTrainer's ``train_loop_per_worker``): build
    the recipe from the worker's Ray context, set up from Ray's latest checkpoint (if any),
    count the attempt, train."""
    cfg = TrainConfig.model_validate(config["train"])
    # Fractional CPU reservations: don't let each worker spawn one thread per core.
    torch.set_num_threads(cfg.threads_per_worker or max(1, int(cfg.cpus_per_worker)))
    ctx = ray_adapter.worker_context()
    recipe = FineTuneRecipe(
        cfg,
        config["run"],
        rank=ctx.rank,
        world_size=ctx.world_size,
        device=ctx.device,
        reporter=ray_adapter.report,
        node_id=ctx.node_id,
    )
    distributed.init_host_group()
    with ray_adapter.latest_checkpoint() as (directory, path):
        recipe.setup(directory, wrap=ray_adapter.prepare_model)
    # Rank 0 counts the attempt in the run dir; every rank records the same number.
    count = bump_attempts(config["run"]["run_dir"]) if ctx.rank == 0 else 0
    # Ray names a checkpoint by its path inside the filesystem (``bucket/...`` on GCS): record
    # it the way the run dir is addressed (``gs://bucket/...``), as result.json's paths are.
    resumed_from = storage.user_path(config["run"]["run_dir"], path) if path else None
    recipe.start_attempt(ray_adapter.broadcast_from_rank_zero(count), resumed_from=resumed_from)
    recipe.train(*ray_adapter.dataset_shards())
