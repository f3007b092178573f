"""The per-worker training function run by Ray Train's TorchTrainer (one process per rank)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from steam_ray import storage
from steam_ray.config import TrainConfig, resolve_model
from steam_ray.train.checkpoint import (
    INFO_FILE,
    load_training_state,
    now_iso,
    read_json,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    training_state,
)
from steam_ray.train.data import Batch, estimate_steps_per_epoch, make_collate, train_batches
from steam_ray.train.metrics import gather_metrics
from steam_ray.train.tracking import Tracker

ID2LABEL = {0: "negative", 1: "positive"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}
ATTEMPTS_FILE = "attempts.json"
FAIL_MARKER = "_fail_injected"


def load_model(name_or_path: str) -> Any:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        name_or_path,
        num_labels=2,
        id2label=ID2LABEL,
        label2id=LABEL2ID,
        dtype=torch.float32,
    )


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_ranks_have(has_batch: bool) -> bool:
    """True only if every rank still has a batch: keeps DDP step counts equal across ranks
    (streaming_split shards and token-budget batching give ranks different batch counts)."""
    if not _distributed():
        return has_batch
    flag = torch.tensor([1 if has_batch else 0], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def param_checksum(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer: equal across ranks iff DDP kept them in sync."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def gather_objects(obj: Any) -> list[Any]:
    if not _distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.amp == "off":
        return None
    if cfg.amp == "bf16":
        return torch.bfloat16
    if device.type != "cuda":
        return None  # "auto"/"fp16" on CPU: fp32 (CPU fp16 autocast is slow and lossy).
    if cfg.amp == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else None


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # No weight decay on biases and LayerNorm weights (the usual BERT fine-tuning recipe).
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def linear_schedule(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def class_weights(positive: int, negative: int) -> torch.Tensor:
    """Inverse-frequency weights (n / (2 * n_c)) for CrossEntropy over [negative, positive]."""
    total = positive + negative
    return torch.tensor(
        [total / (2 * max(negative, 1)), total / (2 * max(positive, 1))], dtype=torch.float32
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    shard: Any,
    cfg: TrainConfig,
    pad_id: int,
    device: torch.device,
    dtype: torch.dtype | None,
    world_size: int,
) -> dict[str, float]:
    """Validation over this rank's shard, then metrics over all ranks' predictions.

    Runs the unwrapped module: a DDP forward may broadcast buffers (a collective), and ranks
    hold different numbers of validation batches.
    """
    model.eval()
    cap = math.ceil(cfg.max_eval_rows / world_size) if cfg.max_eval_rows else None
    probs: list[float] = []
    labels: list[int] = []
    loss_sum = 0.0
    batches = shard.iter_torch_batches(
        batch_size=cfg.eval_batch_size, collate_fn=make_collate(pad_id)
    )
    for batch in batches:
        if cap is not None and len(labels) >= cap:
            break
        y = batch["labels"].to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            ).logits.float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        probs.extend(torch.softmax(logits, dim=-1)[:, 1].tolist())
        labels.extend(y.tolist())
    model.train()
    return gather_metrics(probs, labels, loss_sum)


def _bump_attempts(run_dir: str) -> int:
    path = storage.join(run_dir, ATTEMPTS_FILE)
    count = 0
    if storage.exists(path):
        with contextlib.suppress(ValueError):
            count = int(storage.read_text(path).strip() or 0)
    storage.write_text(path, f"{count + 1}\n")
    return count + 1


def _maybe_inject_failure(cfg: TrainConfig, run_dir: str, step: int, rank: int, world: int) -> None:
    if cfg.fail_at_step is None or step != cfg.fail_at_step or rank != world - 1:
        return
    marker = storage.join(run_dir, FAIL_MARKER)
    if storage.exists(marker):
        return
    # Die only once the controller has committed a checkpoint (its snapshot file lists one):
    # reports reach the controller asynchronously, and a death before that is a resume from
    # step 0 — real Ray behaviour, but not the case this hook exists to exercise.
    snapshot = storage.join(run_dir, "checkpoint_manager_snapshot.json")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(storage.read_text(snapshot)).get("checkpoint_results"):
                break
        time.sleep(0.5)
    storage.write_text(marker, f"rank {rank} exited at step {step}\n")
    os._exit(1)  # a real process death, as a crashed or preempted worker


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint
    from transformers import AutoTokenizer

    cfg = TrainConfig.model_validate(config["train"])
    run: dict[str, Any] = config["run"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # Fractional CPU reservations: don't let each worker spawn one thread per core.
    torch.set_num_threads(cfg.threads_per_worker or max(1, int(cfg.cpus_per_worker)))
    device = ray.train.torch.get_device()
    started_at = now_iso()

    # Same seed on every rank for the head's init (DDP broadcasts rank 0's weights anyway).
    seed_everything(cfg.seed)
    checkpoint = ray.train.get_checkpoint()
    state: dict[str, Any] | None = None
    model: Any
    lineage: list[dict[str, Any]] = []
    resumed_from: str | None = None
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            model = load_model(ckpt_dir)
            tokenizer = AutoTokenizer.from_pretrained(ckpt_dir)
            state = load_training_state(ckpt_dir)
            lineage = list(read_json(os.path.join(ckpt_dir, INFO_FILE)).get("lineage", []))
        resumed_from = checkpoint.path
    else:
        source = resolve_model(cfg.model)
        model = load_model(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    seed_everything(cfg.seed + rank)

    model = ray.train.torch.prepare_model(model)
    raw: torch.nn.Module = getattr(model, "module", model)
    is_ddp = raw is not model

    optimizer = build_optimizer(raw, cfg)
    per_epoch = estimate_steps_per_epoch(
        run["train_rows"],
        run["train_tokens"],
        world,
        cfg.batch_size,
        cfg.token_budget,
        cfg.grad_accum_steps,
    )
    total_steps = cfg.max_steps or per_epoch * cfg.epochs
    scheduler = linear_schedule(optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps)
    dtype = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    weight = (
        class_weights(run["train_positive"], run["train_negative"]).to(device)
        if cfg.class_weighted
        else None
    )

    global_step, start_epoch, skip_steps = 0, 0, 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        global_step, start_epoch = int(state["global_step"]), int(state["epoch"])
        skip_steps = int(state["step_in_epoch"])
        set_rng_state(state["rng"])
    resumed_from_step = global_step

    attempt = _bump_attempts(run["run_dir"]) if rank == 0 else 0
    attempt = int(gather_objects(attempt)[0])
    lineage.append(
        {
            "attempt": attempt,
            "started_at": started_at,
            "resumed_from_step": resumed_from_step,
            "resumed_from_checkpoint": resumed_from,
        }
    )
    tracker = Tracker(
        enabled=rank == 0,
        run_dir=run["run_dir"],
        project=cfg.wandb_project,
        run_name=cfg.wandb_run_name or f"{run['experiment_name']}-a{attempt}",
        config=cfg.model_dump(mode="json"),
        tensorboard=cfg.tensorboard,
        wandb=cfg.wandb,
    )
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    t0 = time.perf_counter()
    last_eval_step = global_step if state is not None else -1
    recent_loss: list[float] = []

    def evaluate_and_report(epoch: int, step_in_epoch: int, train_loss: float | None) -> None:
        nonlocal last_eval_step
        val = evaluate(raw, val_shard, cfg, pad_id, device, dtype, world)
        hashes = gather_objects(param_checksum(raw))
        nodes = gather_objects(ray.get_runtime_context().get_node_id())
        metrics: dict[str, Any] = {
            **val,
            "step": global_step,
            "epoch": epoch,
            "train_loss": train_loss if train_loss is not None else math.nan,
            "lr": float(scheduler.get_last_lr()[0]),
            "world_size": world,
            "attempt": attempt,
            "resumed_from_step": resumed_from_step,
            "resumed_from": resumed_from or "",
            "param_hashes": hashes,
            "node_ids": nodes,
            "elapsed_s": time.perf_counter() - t0,
        }
        tracker.log({f"val/{k}": v for k, v in val.items()}, global_step)
        with tempfile.TemporaryDirectory(prefix="steam-ray-ckpt-") as tmp:
            ckpt = None
            if rank == 0:
                info = {
                    "config": cfg.model_dump(mode="json"),
                    "world_size": world,
                    "global_step": global_step,
                    "epoch": epoch,
                    "data": cfg.data,
                    "data_fingerprint": run["data_fingerprint"],
                    "tokenizer_fingerprint": run["tokenizer_fingerprint"],
                    "steam_ray_version": run["version"],
                    "git_sha": run["git_sha"],
                    "run_started_at": run["started_at"],
                    "attempt_started_at": started_at,
                    "saved_at": now_iso(),
                    "attempt": attempt,
                    "resumed_from_step": resumed_from_step,
                    "lineage": lineage,
                }
                state_now = training_state(
                    optimizer,
                    scheduler,
                    global_step=global_step,
                    epoch=epoch,
                    step_in_epoch=step_in_epoch,
                    scaler=scaler,
                )
                save_checkpoint(
                    tmp, model=raw, tokenizer=tokenizer, metrics=metrics, info=info, state=state_now
                )
                ckpt = Checkpoint.from_directory(tmp)
            ray.train.report(
                metrics, checkpoint=ckpt, checkpoint_dir_name=f"checkpoint_step{global_step:06d}"
            )
        last_eval_step = global_step

    done = cfg.max_steps is not None and global_step >= cfg.max_steps
    epoch, step_in_epoch = start_epoch, skip_steps
    max_epochs = cfg.epochs if cfg.max_steps is None else 1_000_000
    log_t, log_samples, log_tokens = time.perf_counter(), 0, 0
    while not done and epoch < max_epochs:
        batches: Iterator[Batch] = iter(
            train_batches(
                train_shard,
                batch_size=cfg.batch_size,
                token_budget=cfg.token_budget,
                pad_id=pad_id,
                seed=cfg.seed + epoch,
                window_rows=cfg.bucket_window_rows,
            )
        )
        skip_micro = skip_steps * cfg.grad_accum_steps if epoch == start_epoch else 0
        step_in_epoch = skip_steps if epoch == start_epoch else 0
        micro = 0
        steps_this_epoch = 0
        while True:
            batch = next(batches, None)
            if not all_ranks_have(batch is not None):
                break
            assert batch is not None
            if skip_micro > 0:  # resume mid-epoch: skip what the restored steps consumed
                skip_micro -= 1
                continue
            micro += 1
            sync_now = micro % cfg.grad_accum_steps == 0
            no_sync = model.no_sync() if is_ddp and not sync_now else contextlib.nullcontext()
            with no_sync:
                with torch.autocast(
                    device.type, dtype=dtype or torch.float32, enabled=dtype is not None
                ):
                    logits = model(
                        input_ids=batch["input_ids"].to(device),
                        attention_mask=batch["attention_mask"].to(device),
                    ).logits
                loss = F.cross_entropy(logits.float(), batch["labels"].to(device), weight=weight)
                scaled = loss / cfg.grad_accum_steps
                to_backward: Any = scaler.scale(scaled) if scaler is not None else scaled
                to_backward.backward()
            recent_loss.append(float(loss.detach()))
            log_samples += int(batch["labels"].shape[0])
            log_tokens += int(batch["attention_mask"].sum())
            if not sync_now:
                continue
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            step_in_epoch += 1
            steps_this_epoch += 1

            if global_step % cfg.log_every_steps == 0:
                dt = max(time.perf_counter() - log_t, 1e-9)
                tracker.log(
                    {
                        "train/loss": sum(recent_loss) / len(recent_loss),
                        "train/lr": float(scheduler.get_last_lr()[0]),
                        # Rank 0's rate times the world size: ranks run in lockstep under DDP.
                        "train/samples_per_s": log_samples * world / dt,
                        "train/tokens_per_s": log_tokens * world / dt,
                        "train/epoch": float(epoch),
                    },
                    global_step,
                )
                log_t, log_samples, log_tokens = time.perf_counter(), 0, 0
            _maybe_inject_failure(cfg, run["run_dir"], global_step, rank, world)
            train_loss = sum(recent_loss) / len(recent_loss)
            if cfg.eval_every_steps and global_step % cfg.eval_every_steps == 0:
                evaluate_and_report(epoch, step_in_epoch, train_loss)
                recent_loss.clear()
            if cfg.max_steps is not None and global_step >= cfg.max_steps:
                done = True
                break
        # An incomplete accumulation at the end of an epoch is dropped, not half-applied.
        optimizer.zero_grad(set_to_none=True)
        if done:
            break
        epoch += 1
        skip_steps = 0
        if last_eval_step != global_step and cfg.eval_every_steps is None:
            loss_now = sum(recent_loss) / len(recent_loss) if recent_loss else None
            evaluate_and_report(epoch, 0, loss_now)
            recent_loss.clear()
        if steps_this_epoch == 0:
            break  # the data yields no full step: stop rather than loop forever
    if last_eval_step != global_step:
        loss_now = sum(recent_loss) / len(recent_loss) if recent_loss else None
        evaluate_and_report(epoch, step_in_epoch if done else 0, loss_now)
    tracker.close()
