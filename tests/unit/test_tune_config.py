"""The tune: config section and the sweep's sizing rules (no Ray needed)."""

from __future__ import annotations

import pytest

from steam_ray.config import Config, TrainConfig, TuneConfig
from steam_ray.errors import ConfigError
from steam_ray.tune import (
    max_concurrent_for,
    param_space,
    planned_steps,
    propagate_ray_address_to_train,
    trial_train_config,
)


def test_unknown_or_bad_space_is_refused() -> None:
    with pytest.raises(ValueError, match="not train settings"):
        TuneConfig.model_validate(
            {"space": {"learning_rate": {"type": "uniform", "low": 0, "high": 1}}}
        )
    with pytest.raises(ValueError, match="low < high"):
        TuneConfig.model_validate(
            {"space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1e-5}}}
        )
    with pytest.raises(ValueError, match="non-empty"):
        TuneConfig.model_validate({"space": {"batch_size": {"type": "choice", "values": []}}})
    with pytest.raises(ValueError, match="not train settings"):
        TuneConfig.model_validate({"train": {"max_stepz": 3}})
    with pytest.raises(ValueError, match="lacks"):
        TuneConfig.model_validate(
            {"points_to_evaluate": [{"lr": 1e-4}]}
        )  # default space: more keys
    with pytest.raises(ValueError, match="Extra inputs"):
        Config.model_validate({"tune": {"num_sample": 3}})
    with pytest.raises(ValueError, match="pattern"):
        Config.model_validate({"registry": {"model_name": "a/b"}})


def test_space_and_train_overrides() -> None:
    from ray.tune.search.sample import Categorical, Float

    cfg = Config.model_validate(
        {"train": {"lr": 1e-3, "max_steps": 50}, "tune": {"train": {"max_steps": 7}}}
    )
    assert trial_train_config(cfg).max_steps == 7 and trial_train_config(cfg).lr == 1e-3
    space = param_space(cfg.tune)
    assert isinstance(space["lr"], Float) and isinstance(space["batch_size"], Categorical)
    assert space["batch_size"].categories == [16, 32]
    # The model's dropout is searched too, and a sampled value is a valid train setting.
    assert isinstance(space["dropout"], Float)
    assert TrainConfig(dropout=space["dropout"].sample()).dropout is not None


def test_max_concurrent_from_cluster_resources() -> None:
    base = TrainConfig(num_workers=1, cpus_per_worker=1.5)
    tcfg = TuneConfig(num_samples=8)
    # 4 CPUs: one kept for ingest, 3 / 1.5 -> 2 trials; 3.5 CPUs -> 1; 8 CPUs -> 4 trials.
    assert max_concurrent_for(base, tcfg, cpus=4, gpus=0) == 2
    assert max_concurrent_for(base, tcfg, cpus=3.5, gpus=0) == 1
    assert max_concurrent_for(base, tcfg, cpus=8, gpus=0) == 4
    assert max_concurrent_for(TrainConfig(num_workers=1, cpus_per_worker=1), tcfg, 4, 0) == 3
    assert max_concurrent_for(base, TuneConfig(num_samples=2), cpus=64, gpus=0) == 2
    gpu = TrainConfig(num_workers=2, cpus_per_worker=1, use_gpu=True)
    assert max_concurrent_for(gpu, tcfg, cpus=64, gpus=4) == 2
    with pytest.raises(ConfigError, match="cluster has 2 CPUs"):
        max_concurrent_for(TrainConfig(num_workers=2, cpus_per_worker=1), tcfg, cpus=2, gpus=0)
    assert max_concurrent_for(base, TuneConfig(max_concurrent=3), cpus=1, gpus=0) == 3


def test_planned_steps_is_the_longest_trial() -> None:
    tcfg = TuneConfig()  # batch_size in {16, 32}
    assert planned_steps(TrainConfig(max_steps=40), tcfg, 10_000, 1_000_000) == 40
    # Epoch-based: the smallest batch in the space sets max_t.
    steps16 = planned_steps(TrainConfig(num_workers=1, epochs=2), tcfg, 1600, 160_000)
    steps32 = planned_steps(
        TrainConfig(num_workers=1, epochs=2), TuneConfig(space={}), 1600, 160_000
    )
    assert steps16 == 200 and steps32 == 100


def test_gpu_share_packs_trials_onto_a_gpu() -> None:
    from steam_ray.train.trainer import scaling_config

    tcfg = TuneConfig(num_samples=8)
    quarter = TrainConfig(num_workers=1, cpus_per_worker=1, use_gpu=True, gpus_per_worker=0.25)
    # One GPU, 16 CPUs: four quarter-GPU trials fit; whole-GPU trials one at a time.
    assert max_concurrent_for(quarter, tcfg, cpus=16, gpus=1) == 4
    whole = TrainConfig(num_workers=1, cpus_per_worker=1, use_gpu=True)
    assert max_concurrent_for(whole, tcfg, cpus=16, gpus=1) == 1
    with pytest.raises(ConfigError, match=r"0\.25 GPUs"):
        max_concurrent_for(quarter, tcfg, cpus=16, gpus=0)
    # What Ray Train reserves per worker follows the share.
    assert scaling_config(quarter).num_gpus_per_worker == 0.25
    assert scaling_config(whole).num_gpus_per_worker == 1
    assert scaling_config(TrainConfig(num_workers=1)).num_gpus_per_worker == 0
    with pytest.raises(ValueError, match="NCCL"):
        TrainConfig(num_workers=2, use_gpu=True, gpus_per_worker=0.5)
    with pytest.raises(ValueError, match="needs use_gpu"):
        TrainConfig(gpus_per_worker=0.5)


def test_ray_address_workaround_is_still_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``propagate_ray_address_to_train`` edits a private Ray Train set; this fails when the
    installed Ray no longer needs that (it lists RAY_ADDRESS itself: drop the workaround) or no
    longer has the set where it is read."""
    import importlib.util
    import inspect

    from ray.train.v2._internal import constants
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    # The set as the installed Ray defines it: a fresh run of the module, whatever this process
    # has done to the loaded one.
    spec = importlib.util.find_spec(constants.__name__)
    assert spec is not None and spec.loader is not None
    pristine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pristine)
    assert isinstance(pristine.ENV_VARS_TO_PROPAGATE, set)
    assert "RAY_ADDRESS" not in pristine.ENV_VARS_TO_PROPAGATE, (
        "Ray Train now propagates RAY_ADDRESS itself: remove propagate_ray_address_to_train"
    )
    # Ray Train still builds the controller's env from it.
    source = inspect.getsource(DataParallelTrainer._initialize_and_run_controller)
    assert "get_env_vars_to_propagate()" in source

    monkeypatch.setattr(constants, "ENV_VARS_TO_PROPAGATE", set(pristine.ENV_VARS_TO_PROPAGATE))
    propagate_ray_address_to_train()
    propagate_ray_address_to_train()  # idempotent
    propagated = set(constants.ENV_VARS_TO_PROPAGATE)
    assert propagated == pristine.ENV_VARS_TO_PROPAGATE | {"RAY_ADDRESS"}
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.7:6379")
    assert constants.get_env_vars_to_propagate()["RAY_ADDRESS"] == "10.0.0.7:6379"
