"""The recipe's pieces without Ray: loss normalisation, per-rank RNG resume, loss window,
precision and optimiser choices, schedule length. Real MiniLM model and tokenizer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from steam_ray.config import TrainConfig
from steam_ray.train.data import Batch, pad_batch, to_device
from steam_ray.train.optim import (
    LossWindow,
    build_optimizer,
    select_amp,
    steps_per_epoch,
)
from steam_ray.train.recipe import FineTuneRecipe

TEXTS = [
    "great fun game",
    "awful",
    "i played hours with friends and the story is a masterpiece",
    "broken buggy crash refund",
    "love it",
    "the graphics are beautiful but the game is boring after two hours",
    "waste",
    "addictive",
]
LABELS = [1, 0, 1, 0, 1, 0, 0, 1]


def _run(tmp: Path) -> dict[str, Any]:
    return {
        "run_dir": str(tmp),
        "experiment_name": "unit",
        "data_fingerprint": "d" * 16,
        "tokenizer_fingerprint": "t" * 16,
        "train_rows": 100,
        "train_tokens": 2000,
        "train_positive": 60,
        "train_negative": 40,
        "version": "test",
        "git_sha": None,
        "started_at": "now",
    }


def _recipe(minilm_path: str, tmp: Path, rank: int = 0, world: int = 1, **kw: Any) -> Any:
    cfg = TrainConfig(model=minilm_path, lr=1e-3, max_steps=10, **kw)
    recipe = FineTuneRecipe(cfg, _run(tmp), rank=rank, world_size=world)
    return recipe


@pytest.fixture(scope="module")
def recipe(minilm_path: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    r = _recipe(minilm_path, tmp_path_factory.mktemp("run"))
    r.setup()
    r.raw.eval()  # no dropout: gradients must be comparable between calls
    return r


def _batch(recipe: Any, idx: list[int]) -> Batch:
    ids = recipe.tokenizer([TEXTS[i] for i in idx])["input_ids"]
    return pad_batch(ids, [LABELS[i] for i in idx], recipe.pad_id)


def _grads(recipe: Any, micro: list[list[int]]) -> torch.Tensor:
    recipe.optimizer.zero_grad(set_to_none=True)
    rows = sum(len(m) for m in micro)
    recipe.accumulate([_batch(recipe, m) for m in micro], rows)
    flat = torch.cat([p.grad.flatten() for p in recipe.raw.parameters() if p.grad is not None])
    recipe.optimizer.zero_grad(set_to_none=True)
    return flat


@pytest.mark.parametrize(
    "split",
    [[[0, 1, 2, 3], [4, 5, 6, 7]], [[0, 1], [2, 3, 4, 5, 6, 7]], [[0], [1, 2], [3, 4, 5, 6, 7]]],
    ids=["2x4", "2+6", "1+2+5"],
)
def test_accumulation_gives_the_one_batch_gradient(recipe: Any, split: list[list[int]]) -> None:
    whole = _grads(recipe, [list(range(8))])
    accumulated = _grads(recipe, split)
    assert torch.allclose(accumulated, whole, rtol=1e-4, atol=1e-6)


def test_rows_weigh_the_same_in_small_and_large_batches(recipe: Any) -> None:
    # Token-budget batches: one row of a long review vs five short ones. The gradient of the
    # step is the mean over its 6 rows, so each batch's share is its row count / 6.
    big, small = [0, 1, 3, 4, 6], [5]
    g_big, g_small = _grads(recipe, [big]), _grads(recipe, [small])
    step = _grads(recipe, [big, small])
    assert torch.allclose(step, (5 * g_big + g_small) / 6, rtol=1e-4, atol=1e-6)


def test_loss_window_is_the_recent_steps_only() -> None:
    window = LossWindow(4, torch.device("cpu"))
    assert window.mean() is None
    for v in range(10):
        window.add(torch.tensor(float(v)))
    assert window.mean() == pytest.approx((6 + 7 + 8 + 9) / 4)
    assert window._buf.numel() == 4  # constant memory, constant work per step


def test_train_step_feeds_the_window_and_steps(recipe: Any) -> None:
    before = recipe.global_step
    loss = recipe.train_step([_batch(recipe, [0, 1]), _batch(recipe, [2, 3])], 4)
    assert recipe.global_step == before + 1
    assert loss.device.type == "cpu" and math.isfinite(float(loss))
    recipe.losses.add(loss)
    assert recipe.losses.mean() == pytest.approx(float(loss))


def test_each_rank_restores_its_own_rng(minilm_path: str, tmp_path: Path) -> None:
    ckpt = str(tmp_path / "ckpt")
    draws = {}
    for rank in (0, 1):
        r = _recipe(minilm_path, tmp_path, rank=rank, world=2)
        r.setup()
        torch.manual_seed(100 + rank)  # the ranks' dropout streams differ
        r.save_checkpoint(ckpt, {"loss": 0.5})
        draws[rank] = torch.rand(4)
    for rank in (1, 0):
        r = _recipe(minilm_path, tmp_path, rank=rank, world=2)
        r.setup(ckpt)
        assert torch.equal(torch.rand(4), draws[rank]), f"rank {rank}"


def test_amp_auto_uses_fp16_before_ampere() -> None:
    assert select_amp("auto", "cuda", (7, 0)) == torch.float16  # V100
    assert select_amp("auto", "cuda", (7, 5)) == torch.float16  # T4
    assert select_amp("auto", "cuda", (8, 0)) == torch.bfloat16  # A100
    assert select_amp("auto", "cuda", (9, 0)) == torch.bfloat16  # H100
    assert select_amp("auto", "cpu", None) is None
    assert select_amp("off", "cuda", (9, 0)) is None
    assert select_amp("bf16", "cpu", None) == torch.bfloat16


def test_loss_checkpoint_metric_defaults_to_min() -> None:
    assert TrainConfig(checkpoint_metric="loss").resolved_checkpoint_mode() == "min"
    assert TrainConfig().resolved_checkpoint_mode() == "max"
    assert TrainConfig(checkpoint_metric="loss", checkpoint_mode="max").resolved_checkpoint_mode()


def test_fused_adamw_on_cuda_only() -> None:
    model = torch.nn.Linear(4, 2)
    cfg = TrainConfig()
    assert not build_optimizer(model, cfg, torch.device("cpu")).defaults["fused"]
    assert build_optimizer(model, cfg, torch.device("cuda")).defaults["fused"] is True


def test_compile_is_opt_in(minilm_path: str, tmp_path: Path) -> None:
    r = _recipe(minilm_path, tmp_path, compile=True)
    r.setup()
    assert isinstance(r.model, torch._dynamo.eval_frame.OptimizedModule)
    assert r.raw is r.model._orig_mod
    assert not isinstance(_recipe(minilm_path, tmp_path).cfg.compile, str)
    assert TrainConfig().compile is False


def test_to_device_keeps_values_on_cpu() -> None:
    batch = pad_batch([[1, 2, 3], [4]], [1, 0], pad_id=0)
    moved = to_device(batch, torch.device("cpu"))
    assert all(torch.equal(moved[k], batch[k]) for k in batch)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_to_device_pins_and_copies_async_on_cuda() -> None:
    batch = pad_batch([[1, 2, 3], [4]], [1, 0], pad_id=0)
    moved = to_device(batch, torch.device("cuda"))
    assert all(v.is_cuda for v in moved.values())
    # Fixed-size batches arrive on the GPU already (Ray Data moves them): passed through, not
    # pinned (pin_memory() on a CUDA tensor raises; every GPU trial failed on it).
    again = to_device(moved, torch.device("cuda", torch.cuda.current_device()))
    assert all(again[k] is moved[k] for k in moved)


def test_fixed_batch_schedule_counts_the_partial_batch() -> None:
    # equal split: 96 rows per rank -> 10 batches of <= 10 rows (the last one has 6).
    assert steps_per_epoch(192, 5000, 2, 10, None, 1) == 10
    assert steps_per_epoch(192, 5000, 2, 10, None, 3) == 3  # the 10th micro-batch is dropped
    assert steps_per_epoch(193, 5000, 2, 8, None, 1) == 12  # the odd row is dropped by Ray
    assert steps_per_epoch(1, 1, 4, 64, None, 1) == 1
    # token budget: an estimate at 80% fill (25k tokens per rank / 800).
    assert steps_per_epoch(1000, 50_000, 2, 10, 1000, 1) == 31


def test_dropout_setting_reaches_every_dropout_of_the_model(minilm_path: str) -> None:
    from steam_ray.train.model import load_model

    def rates(model: torch.nn.Module) -> set[float]:
        return {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}

    default = load_model(minilm_path)
    assert rates(default) == {0.1}  # MiniLM's own
    model = load_model(minilm_path, dropout=0.3)
    assert model.config.hidden_dropout_prob == 0.3
    assert model.config.attention_probs_dropout_prob == 0.3
    assert rates(model) == {0.3}
    # Same weights: dropout changes training noise, not the loaded parameters.
    assert torch.equal(default.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_recipe_builds_the_model_with_the_configured_dropout(
    minilm_path: str, tmp_path: Path
) -> None:
    recipe = _recipe(minilm_path, tmp_path, dropout=0.05)
    recipe.setup()
    assert {m.p for m in recipe.raw.modules() if isinstance(m, torch.nn.Dropout)} == {0.05}
