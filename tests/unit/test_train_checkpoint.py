"""Checkpoint save/load round trip, resume state, and loading without steam_ray."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from train_fixtures import run_isolated

from steam_ray.config import TrainConfig
from steam_ray.train.checkpoint import (
    INFO_FILE,
    METRICS_FILE,
    load_training_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    training_state,
)
from steam_ray.train.model import load_model, param_checksum
from steam_ray.train.optim import build_optimizer, build_scheduler, class_weights


@pytest.fixture(scope="module")
def saved(
    tmp_path_factory: pytest.TempPathFactory, minilm_path: str
) -> tuple[Path, dict[str, object]]:
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    model = load_model(minilm_path)
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = TrainConfig(lr=1e-3)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=10)
    batch = tok(["great game", "awful crash"], return_tensors="pt", padding=True)
    loss = torch.nn.functional.cross_entropy(model(**batch).logits, torch.tensor([1, 0]))
    loss.backward()
    opt.step()
    sched.step()
    state = training_state(opt, sched, global_step=7, epoch=1, step_in_epoch=3)
    out = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(
        out,
        model=model,
        tokenizer=tok,
        metrics={"accuracy": 0.5, "macro_f1": 0.4, "roc_auc": float("nan"), "loss": 0.7},
        info={"config": cfg.model_dump(mode="json"), "world_size": 2},
        state=state,
    )
    return out, {"checksum": param_checksum(model), "lr": sched.get_last_lr()[0], "opt": opt}


def test_checkpoint_files_and_json(saved: tuple[Path, dict[str, object]]) -> None:
    out, _ = saved
    for name in ("config.json", "model.safetensors", "tokenizer.json", METRICS_FILE, INFO_FILE):
        assert (out / name).is_file(), name
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert metrics["roc_auc"] is None  # NaN written as null: valid JSON
    assert json.loads((out / INFO_FILE).read_text())["world_size"] == 2
    assert json.loads((out / "config.json").read_text())["id2label"] == {
        "0": "negative",
        "1": "positive",
    }


def test_model_round_trip_is_exact(saved: tuple[Path, dict[str, object]]) -> None:
    out, ref = saved
    assert param_checksum(load_model(str(out))) == ref["checksum"]


def test_resume_state_restores_optimizer_and_scheduler(
    saved: tuple[Path, dict[str, object]],
) -> None:
    out, ref = saved
    state = load_training_state(out)
    assert (state["global_step"], state["epoch"], state["step_in_epoch"]) == (7, 1, 3)
    model = load_model(str(out))
    cfg = TrainConfig(lr=1e-3)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=10)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    assert sched.get_last_lr()[0] == pytest.approx(ref["lr"])
    src = ref["opt"]
    assert isinstance(src, torch.optim.AdamW)
    a = next(iter(src.state.values()))["exp_avg"]
    b = next(iter(opt.state.values()))["exp_avg"]
    assert torch.equal(a, b)


def test_rng_state_round_trip() -> None:
    state = rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


def test_loads_with_plain_transformers_without_steam_ray(
    saved: tuple[Path, dict[str, object]],
) -> None:
    out, _ = saved
    code = (
        "import sys, transformers as t\n"
        f"p = {str(out)!r}\n"
        "m = t.AutoModelForSequenceClassification.from_pretrained(p)\n"
        "tok = t.AutoTokenizer.from_pretrained(p)\n"
        "print(m(**tok(['fun game'], return_tensors='pt')).logits.shape[-1])\n"
        "assert not any(k.startswith('steam_ray') for k in sys.modules)\n"
        "try:\n    import steam_ray\nexcept ImportError:\n    print('no-steam-ray')\n"
    )
    proc = run_isolated(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == "2"


def test_linear_schedule_warmup_then_decay() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, TrainConfig(lr=1.0, warmup_ratio=1 / 3), total_steps=6)
    lrs = []
    for _ in range(7):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    # transformers' linear schedule: 0 at step 0, peak after warmup, 0 after the last step.
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0])


def test_class_weights_balance_the_classes() -> None:
    w = class_weights(positive=82, negative=18)
    assert w[0] * 18 == pytest.approx(w[1] * 82)
    assert w[0] > w[1]
