"""Hyperparameter sweeps: Ray Tune over Ray Train (V2) runs, one TorchTrainer per trial.

Ray 2.60's pattern for Train V2: a ``Tuner`` over a function trainable (the trial *driver*,
which reserves ~no CPU) that builds a ``TorchTrainer`` whose ``RunConfig`` carries
``TuneReportCallback``: every ``ray.train.report`` of rank 0 (our validation metrics are
already gathered over all ranks) becomes a Tune result, so schedulers see each evaluation.

Layout: OUTPUT is the Tune experiment dir. Trial ``<id>``'s Tune files and its Ray Train run
(checkpoints, ``tensorboard/``, ``wandb/``) share ``OUTPUT/trial_<id>/``, so
``tensorboard --logdir OUTPUT`` shows every trial. ``OUTPUT/result.json`` is the sweep's
summary, ``OUTPUT/history.json`` every trial's evaluations (for ``steam-ray tune report``).

Stopping: when ASHA stops a trial, Tune ends the trial actor; the Ray Train controller and its
workers, actors owned by it, go with it. The run's placement group belongs to the job: Ray
Train's detached ``PlacementGroupCleaner`` removes it once the state API (the dashboard) says
the controller is dead, so an ASHA sweep requires the dashboard (``require_state_api``), and
then the CPUs return to the cluster (``tests/integration/test_tune.py`` checks that on the
pinned Ray).
"""

from __future__ import annotations

import logging
import math
import os
import posixpath
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steam_ray import cluster, storage
from steam_ray.config import Config, SearchParam, TrainConfig, TuneConfig
from steam_ray.errors import ConfigError
from steam_ray.scores import beats, finite
from steam_ray.train.checkpoint import git_sha, now_iso
from steam_ray.train.metrics import json_safe
from steam_ray.train.optim import steps_per_epoch

if TYPE_CHECKING:
    from steam_ray.data.manifest import Manifest

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
HISTORY_FILE = "history.json"
SWEEP_FILE = "sweep.json"
TRIAL_PREFIX = "trial_"
DRIVER_RESOURCES: dict[str, float] = {"CPU": 0.0, "memory": 1.0}
FINISHED_FILE = "trial_finished.json"
# Reported by Ray Tune's TuneReportCallback next to the metrics of a report with a checkpoint.
CHECKPOINT_KEY = "checkpoint_path"
# Per-evaluation values kept in history.json (others, like node ids, are run diagnostics).
CURVE_KEYS = ("step", "epoch", "loss", "accuracy", "macro_f1", "roc_auc", "train_loss", "lr")


def trial_dir_name(trial: Any) -> str:
    return f"{TRIAL_PREFIX}{trial.trial_id}"


def trial_train_config(cfg: Config) -> TrainConfig:
    """The ``train`` section with the sweep's fixed per-trial overrides applied."""
    merged = {**cfg.train.model_dump(mode="json"), **cfg.tune.train}
    return TrainConfig.model_validate(merged)


def _param(p: SearchParam) -> Any:
    from ray import tune

    if p.type == "choice":
        return tune.choice(list(p.values or []))
    assert p.low is not None and p.high is not None  # checked by SearchParam
    if p.type == "loguniform":
        return tune.loguniform(p.low, p.high)
    if p.type == "uniform":
        return tune.uniform(p.low, p.high)
    return tune.randint(int(p.low), int(p.high))


def param_space(tcfg: TuneConfig) -> dict[str, Any]:
    return {name: _param(p) for name, p in tcfg.space.items()}


def _validate_space(base: TrainConfig, tcfg: TuneConfig) -> None:
    """Every corner of the space must be a valid train config: fail now, not in trial 7."""
    corners: list[dict[str, Any]] = [dict(p) for p in tcfg.points_to_evaluate]
    for name, p in tcfg.space.items():
        values = p.values if p.type == "choice" else [p.low, p.high]
        for value in values or []:
            corners.append({name: int(value) if p.type == "randint" and value else value})
    for point in corners:
        try:
            TrainConfig.model_validate({**base.model_dump(mode="json"), **point})
        except ValueError as exc:
            raise ConfigError(
                f"tune search space value {point} is not a valid train setting: {exc}"
            ) from None


def planned_steps(base: TrainConfig, tcfg: TuneConfig, train_rows: int, train_tokens: int) -> int:
    """Optimizer steps of the longest trial (the smallest batch in the space): ASHA's max_t."""
    if base.max_steps is not None:
        return base.max_steps
    batch = tcfg.space.get("batch_size")
    sizes = [int(v) for v in batch.values or []] if batch and batch.type == "choice" else []
    smallest = min(sizes or [base.batch_size])
    per_epoch = steps_per_epoch(
        train_rows,
        train_tokens,
        base.num_workers,
        smallest,
        base.token_budget,
        base.grad_accum_steps,
    )
    return max(1, per_epoch * base.epochs)


def max_concurrent_for(base: TrainConfig, tcfg: TuneConfig, cpus: float, gpus: float) -> int:
    """Trials that fit at once: each needs num_workers x cpus_per_worker CPUs (and GPUs) plus
    its driver's token CPU, and ``reserve_cpus`` stay free for Ray Data ingest (a cluster with
    every CPU held by training workers hangs: ingest never gets a CPU)."""
    if tcfg.max_concurrent is not None:
        return min(tcfg.max_concurrent, tcfg.num_samples)
    per_trial_cpu = base.num_workers * base.cpus_per_worker
    per_trial_gpu = base.num_workers * base.gpus_per_worker
    fit = math.floor((cpus - tcfg.reserve_cpus) / per_trial_cpu + 1e-9)
    if base.use_gpu:
        fit = min(fit, math.floor(gpus / per_trial_gpu + 1e-9))
    if fit < 1:
        raise ConfigError(
            f"one trial needs {per_trial_cpu:g} CPUs ({base.num_workers} workers x "
            f"{base.cpus_per_worker:g}) plus {tcfg.reserve_cpus:g} kept for "
            f"data ingest{f' and {per_trial_gpu:g} GPUs' if base.use_gpu else ''}, "
            f"but the cluster has {cpus:g} CPUs / {gpus:g} GPUs"
        )
    return min(fit, tcfg.num_samples)


def auto_max_concurrent(base: TrainConfig, tcfg: TuneConfig) -> int:
    """Sized by what the cluster can grow to (the CPUs in max_concurrent_for's message): on
    an autoscaling cluster (0 CPUs at submit) Tune's pending trials are what make the
    autoscaler add the nodes they run on."""
    shape = cluster.shape()
    return max_concurrent_for(base, tcfg, shape.max_cpus, shape.max_gpus)


def _split_output(output: str) -> tuple[str, str]:
    """(storage_path, name) so that Tune's experiment dir is exactly OUTPUT."""
    path = output if storage.is_uri(output) else str(Path(output).expanduser().resolve())
    parent, name = posixpath.split(path.rstrip("/"))
    if not name:
        raise ConfigError(f"tune output {output!r} must name a directory")
    return parent, name


def propagate_ray_address_to_train() -> None:
    """Add ``RAY_ADDRESS`` to the variables Ray Train V2 hands on to a run's controller.

    Workaround on a private Ray module. Ray Train copies into the runtime env of its controller
    actor (and from there its workers') only the variables listed in
    ``ray.train.v2._internal.constants.ENV_VARS_TO_PROPAGATE``, read at each ``fit()`` by
    ``get_env_vars_to_propagate()`` (same module; called by
    ``DataParallelTrainer._initialize_and_run_controller`` in
    ``ray/train/v2/api/data_parallel_trainer.py`` and by the worker group in
    ``ray/train/v2/_internal/execution/worker_group/worker_group.py``). Ray 2.60.0 does not list
    ``RAY_ADDRESS``; the detached ``PlacementGroupCleaner`` the controller launches needs it (see
    ``pin_cluster_address``). ``tests/unit/test_tune_config.py`` fails once Ray lists it itself
    (then drop this) or the set goes away. Idempotent: a set.
    """
    from ray.train.v2._internal import constants

    constants.ENV_VARS_TO_PROPAGATE.add("RAY_ADDRESS")


def pin_cluster_address() -> None:
    """Give this trial's Ray Train run its cluster's address (call in the trial's process).

    When Tune stops a trial it kills the trial's actor; Ray Train's detached
    PlacementGroupCleaner then frees the run's placement group once the state API says the
    controller is dead. The cleaner finds the state API by auto-detecting the cluster: with a
    second Ray instance on the machine that raises "Found multiple active Ray instances", its
    monitor thread dies, and the stopped trial keeps its CPUs for good (a sweep then hangs;
    seen on Ray 2.60). Ray Train passes the variables named in ENV_VARS_TO_PROPAGATE from the
    process that calls fit() to its controller (whose child the cleaner is) and workers.
    """
    import ray

    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    propagate_ray_address_to_train()


def run_trial(config: dict[str, Any], *, base: dict[str, Any], sweep: dict[str, Any]) -> None:
    """The trial driver: one Ray Train run with this trial's hyperparameters."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from steam_ray.train.trainer import build_trainer

    pin_cluster_address()  # this process is the trial's own actor: the change stays here
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    name = f"{TRIAL_PREFIX}{trial_id}"
    output = sweep["output"]
    cfg = TrainConfig.model_validate(
        {
            **base,
            **config,
            "output": output,
            "experiment_name": name,
            "wandb_run_name": f"{sweep['name']}-{trial_id}",
        }
    )
    run_info = {
        **sweep["run_info"],
        "run_dir": storage.join(output, name),
        "experiment_name": name,
        "started_at": now_iso(),
    }
    trainer = build_trainer(
        cfg,
        run_info,
        storage_path=output,
        name=name,
        callbacks=[TuneReportCallback()],  # type: ignore[no-untyped-call]
        # One W&B group per sweep, one run per trial.
        worker_env={"WANDB_RUN_GROUP": sweep["name"], "WANDB_JOB_TYPE": "tune-trial"},
    )
    result = trainer.fit()
    # Only a run that reached its end gets here: a trial the scheduler stops is killed in fit().
    # (Tune marks both kinds ``done``; this marker tells them apart in result.json.)
    storage.write_json(
        storage.join(output, name, FINISHED_FILE),
        {"step": (result.metrics or {}).get("step"), "finished_at": now_iso()},
        indent=None,
    )


def _searcher(tcfg: TuneConfig, concurrent: int) -> Any:
    if tcfg.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(points_to_evaluate=tcfg.points_to_evaluate or None, seed=tcfg.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune ignores max_concurrent_trials for a search *generator*: it limits itself.
    return BasicVariantGenerator(
        points_to_evaluate=tcfg.points_to_evaluate or None,
        random_state=tcfg.seed,
        max_concurrent=concurrent,
    )


def _scheduler(tcfg: TuneConfig, base: TrainConfig, max_t: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if tcfg.scheduler == "fifo":
        return FIFOScheduler()  # type: ignore[no-untyped-call]
    assert base.eval_every_steps is not None
    grace = tcfg.grace_period_steps or base.eval_every_steps
    # time_attr = the optimizer step: monotonic, and exact across a resumed trial.
    return ASHAScheduler(
        time_attr="step", max_t=max_t, grace_period=grace, reduction_factor=tcfg.reduction_factor
    )


def require_state_api(timeout_s: int = 30) -> None:
    """Fail fast unless Ray's state API (served by the dashboard) answers.

    Tune stops an early-stopped trial by killing its actor; the Ray Train run's placement
    group belongs to the job, and Ray Train's ``PlacementGroupCleaner`` frees it only after
    asking the state API whether the trial's controller is dead. Without the dashboard it
    never gets an answer: stopped trials keep their CPUs/GPUs and the sweep stalls
    (measured: a 4-CPU sweep hung after ASHA's first two stops).
    """
    import ray
    from ray.util.state import list_nodes

    node_id = ray.get_runtime_context().get_node_id()
    try:
        # This node, not just any answer: with no dashboard of its own, the client falls
        # back to 127.0.0.1:8265, which may be another Ray's on the same machine.
        nodes = list_nodes(
            filters=[("node_id", "=", node_id)],
            timeout=timeout_s,
            raise_on_missing_output=False,
        )
        problem = "" if nodes else "it answers for another Ray cluster"
    except Exception as exc:
        problem = f"{type(exc).__name__}"
    if problem:
        raise ConfigError(
            f"Ray's state API (the dashboard) is not reachable on this cluster ({problem}). "
            "Ray Train frees an early-stopped trial's placement group through it; without it "
            "ASHA-stopped trials keep their CPUs/GPUs and the sweep stalls. Start Ray with its "
            "dashboard (the default; not --include-dashboard=false), or use --scheduler fifo."
        )


def sweep(cfg: Config, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) a sweep; returns and writes OUTPUT/result.json."""
    tcfg = cfg.tune
    base, manifest, max_t = _trial_base(cfg)  # every input check before Ray starts
    storage_path, name = _split_output(tcfg.output)
    output = storage.join(storage_path, name)
    cluster.connect()
    if tcfg.scheduler == "asha":
        require_state_api()
    concurrent = auto_max_concurrent(base, tcfg)
    trainable = _trainable(base, manifest, output, name)
    t0 = time.perf_counter()
    if resume:
        tuner = _restore_tuner(trainable, output, tcfg)
    else:
        _start_experiment(cfg, output, max_t=max_t, concurrent=concurrent)
        tuner = _new_tuner(
            trainable, tcfg, base, max_t=max_t, concurrent=concurrent, where=(storage_path, name)
        )
    log.info(
        "sweep %s: %d trials, %d at a time, max %d steps each",
        name,
        tcfg.num_samples,
        concurrent,
        max_t,
    )
    with cluster.steady_cwd():  # Tune's result listing resolves paths against the cwd
        grid = tuner.fit()
        record = summarize(grid, tcfg, output, base)
    record["elapsed_s"] = round(time.perf_counter() - t0, 2)
    record["max_concurrent"] = concurrent
    record["max_t"] = max_t
    _write_result(record, cfg, output)
    return record


def _trial_base(cfg: Config) -> tuple[TrainConfig, Manifest, int]:
    """The train config every trial starts from, the data's manifest, and max_t (the longest
    trial's optimizer steps); the space is checked against that config too."""
    from steam_ray.train.trainer import validate_inputs

    tcfg = cfg.tune
    base = trial_train_config(cfg).with_absolute_paths()
    manifest = validate_inputs(base)
    train_stats = manifest.splits["train"]
    max_t = planned_steps(base, tcfg, train_stats.rows, train_stats.tokens)
    if base.eval_every_steps is None:
        # Report several times per trial so ASHA has rungs to cut at.
        base = base.model_copy(
            update={"eval_every_steps": max(1, math.ceil(max_t / tcfg.evals_per_trial))}
        )
    if base.checkpoint_metric != tcfg.metric or base.checkpoint_mode != tcfg.mode:
        # A trial keeps the checkpoints that score best on the sweep's own metric.
        base = base.model_copy(
            update={"checkpoint_metric": tcfg.metric, "checkpoint_mode": tcfg.mode}
        )
        validate_inputs(base)
    _validate_space(base, tcfg)
    return base, manifest, max_t


def _trainable(base: TrainConfig, manifest: Manifest, output: str, name: str) -> Any:
    """``run_trial`` with the sweep's fixed arguments bound and the driver's resources."""
    from ray import tune

    from steam_ray.train.trainer import run_info_for

    sweep_info = {
        "output": output,
        "name": name,
        "run_info": run_info_for(base, manifest, output, name),
    }
    trainable = tune.with_parameters(run_trial, base=base.model_dump(mode="json"), sweep=sweep_info)
    # The trial driver only waits on its TorchTrainer: no CPU at all (a fraction would split
    # the nodes' free CPUs, and Ray Data's 1-CPU file listing task would then never run).
    # Tune refuses an all-zero request, hence a token 1 byte of memory.
    return tune.with_resources(trainable, DRIVER_RESOURCES)


def _restore_tuner(trainable: Any, exp_dir: str, tcfg: TuneConfig) -> Any:
    """``--resume``: the Tuner of the sweep already in ``exp_dir``, unfinished/errored trials
    to run again."""
    from ray import tune

    where, fs = storage.for_ray(exp_dir)
    if not tune.Tuner.can_restore(where, storage_filesystem=fs):
        raise ConfigError(f"--resume: no sweep to resume in {tcfg.output}")
    log.info("resuming sweep %s", exp_dir)
    return tune.Tuner.restore(
        where,
        trainable=trainable,
        resume_unfinished=True,
        resume_errored=True,
        storage_filesystem=fs,
    )


def _start_experiment(cfg: Config, exp_dir: str, *, max_t: int, concurrent: int) -> None:
    """Claim ``exp_dir`` for a new sweep (refused if it holds one) and write sweep.json."""
    from ray import tune

    # Our filesystem for a URI: from a bare gs:// string Ray builds its own, and on an
    # emulator (or without GCS credentials) that waited for credentials for good.
    where, fs = storage.for_ray(exp_dir)
    taken = tune.Tuner.can_restore(where, storage_filesystem=fs)
    if storage.exists(storage.join(exp_dir, RESULT_FILE)) or taken:
        raise ConfigError(
            f"{cfg.tune.output} already holds a sweep: pass --resume to continue it, or choose "
            "another --output"
        )
    storage.makedirs(exp_dir)
    storage.write_json(
        storage.join(exp_dir, SWEEP_FILE),
        {"config": cfg.model_dump(mode="json"), "max_t": max_t, "concurrent": concurrent},
    )


def _new_tuner(
    trainable: Any,
    tcfg: TuneConfig,
    base: TrainConfig,
    *,
    max_t: int,
    concurrent: int,
    where: tuple[str, str],
) -> Any:
    """A new Tuner whose experiment dir is ``storage_path/name`` (``where``): OUTPUT."""
    from ray import tune

    storage_path, name = where
    return tune.Tuner(
        trainable,
        param_space=param_space(tcfg),
        tune_config=tune.TuneConfig(
            metric=tcfg.metric,
            mode=tcfg.mode,
            search_alg=_searcher(tcfg, concurrent),
            scheduler=_scheduler(tcfg, base, max_t),
            num_samples=tcfg.num_samples,
            max_concurrent_trials=concurrent if tcfg.search == "optuna" else None,
            trial_dirname_creator=trial_dir_name,
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=name,
            **storage.ray_storage(storage_path),
            failure_config=tune.FailureConfig(max_failures=tcfg.max_failures),
            verbose=1,
        ),
    )


def _write_result(record: dict[str, Any], cfg: Config, output: str) -> None:
    """OUTPUT/result.json; then register the best checkpoint if the sweep has a registry."""
    result_path = storage.join(output, RESULT_FILE)
    storage.write_json(result_path, record)
    if cfg.tune.registry is not None:
        # After result.json is safe: a registry problem must not lose the sweep's summary.
        record["registered"] = register_best(record, cfg, output)
        storage.write_json(result_path, record)


def _stopped_early(
    status: str, last: dict[str, Any], trial_dir: str, config: dict[str, Any], base: TrainConfig
) -> bool:
    """Stopped by the scheduler before the end of its run. A run with a step budget ended early
    iff it reported fewer steps (ASHA also STOPs a trial at max_t, i.e. at its natural end);
    an epoch-based one iff its driver never saw fit() return (no completion marker)."""
    if status != "TERMINATED":
        return False
    budget = config.get("max_steps", base.max_steps)
    if budget is not None:
        return int(last.get("step", 0) or 0) < int(budget)
    return not storage.exists(storage.join(trial_dir, FINISHED_FILE))


def summarize(grid: Any, tcfg: TuneConfig, output: str, base: TrainConfig) -> dict[str, Any]:
    """result.json: every trial, and the sweep's best = the trial whose best checkpoint scores
    best on the metric. Writes OUTPUT/history.json (every trial's evaluations) on the way."""
    trials: list[dict[str, Any]] = []
    history: dict[str, list[dict[str, Any]]] = {}
    for result in grid:
        trial, curve = _trial_summary(result, tcfg, output, base)
        history[trial["trial_id"]] = [json_safe(p) for p in curve]
        trials.append(trial)
    trials.sort(key=lambda t: t["trial_id"])
    best = _best_trial(trials, tcfg)
    storage.write_json(storage.join(output, HISTORY_FILE), history)
    return {
        "metric": tcfg.metric,
        "mode": tcfg.mode,
        "trials": trials,
        "best_checkpoint": best["checkpoint"] if best else None,
        "best_config": best["config"] if best else None,
        "best_metrics": best["best_metrics"] if best else None,
        "best_trial_id": best["trial_id"] if best else None,
        "output": output,
        "finished_at": now_iso(),
    }


def _trial_summary(
    result: Any, tcfg: TuneConfig, output: str, base: TrainConfig
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One trial's entry in result.json, and its learning curve (for history.json)."""
    last = dict(result.metrics or {})
    trial_dir = posixpath.basename(result.path.rstrip("/"))
    trial_id = str(
        last.get("trial_id") or posixpath.basename(result.path).removeprefix(TRIAL_PREFIX)
    )
    curve = _curve(result.metrics_dataframe)
    best_row = _best_evaluation(curve, tcfg, output)
    status = "ERROR" if result.error is not None else "TERMINATED"
    config = dict(result.config or {})
    trial = {
        "trial_id": trial_id,
        "config": config,
        "metrics": json_safe({k: v for k, v in last.items() if _scalar(v)}),
        "best_metrics": json_safe(
            {k: v for k, v in (best_row or {}).items() if k != CHECKPOINT_KEY}
        ),
        "status": status,
        "iterations": int(last.get("training_iteration", 0) or 0),
        "stopped_early": _stopped_early(
            status, last, storage.join(output, trial_dir), config, base
        ),
        "checkpoint": (
            storage.user_path(output, str(best_row[CHECKPOINT_KEY]))
            if best_row is not None
            else None
        ),
        "error": str(result.error) if result.error is not None else None,
    }
    return trial, curve


def _curve(frame: Any) -> list[dict[str, Any]]:
    """A trial's evaluations (the reported rows with a step): CURVE_KEYS and the checkpoint."""
    rows: list[dict[str, Any]] = [] if frame is None else frame.to_dict("records")
    return [
        {k: r.get(k) for k in (*CURVE_KEYS, CHECKPOINT_KEY) if k in r} for r in rows if "step" in r
    ]


def _best_evaluation(
    curve: list[dict[str, Any]], tcfg: TuneConfig, output: str
) -> dict[str, Any] | None:
    """The evaluation whose checkpoint scores best (the first of equals), among those whose
    checkpoint is still on storage."""
    best_row: dict[str, Any] | None = None
    for row in curve:
        score = finite(row.get(tcfg.metric))
        if score is None or not isinstance(row.get(CHECKPOINT_KEY), str):
            continue
        if best_row is not None and not beats(score, float(best_row[tcfg.metric]), tcfg.mode):
            continue
        # Ray Train keeps `keep_checkpoints` by score; on a tie it may keep a later one
        # than the first best evaluation: only a checkpoint still on storage can win
        # (checked only for a would-be best: one storage request, not one per row).
        if storage.exists(storage.user_path(output, str(row[CHECKPOINT_KEY]))):
            best_row = row
    return best_row


def _best_trial(trials: list[dict[str, Any]], tcfg: TuneConfig) -> dict[str, Any] | None:
    """The trial whose best checkpoint scores best (the first of equals in ``trials``' order)."""
    best: dict[str, Any] | None = None
    for trial in trials:
        score = finite(trial["best_metrics"].get(tcfg.metric))
        if score is None or trial["checkpoint"] is None:
            continue
        if best is None or beats(score, float(best["best_metrics"][tcfg.metric]), tcfg.mode):
            best = trial
    return best


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float | str | bool) or value is None


def register_best(record: dict[str, Any], cfg: Config, output: str) -> dict[str, Any] | None:
    """Register the sweep's best checkpoint; the ``best`` pointer moves only if it is better."""
    from steam_ray.registry import register_checkpoint

    if record["best_checkpoint"] is None or cfg.tune.registry is None:
        return None
    best_cfg = trial_train_config(cfg).model_copy(update=record["best_config"] or {})
    reg = register_checkpoint(
        cfg.tune.registry,
        cfg.registry.model_name,
        record["best_checkpoint"],
        metric=cfg.tune.metric,
        mode=cfg.tune.mode,
        config={
            "train": best_cfg.model_dump(mode="json"),
            "tune": cfg.tune.model_dump(mode="json"),
        },
        lineage={
            "sweep": output,
            "trial_id": record["best_trial_id"],
            "tokenizer": cfg.train.model,
            "git_sha_registered": git_sha(),
        },
        reason=f"sweep {output}",
    )
    return {
        "name": reg.version.name,
        "version": reg.version.version,
        "path": reg.version.path,
        "promoted": reg.promoted,
        "reason": reg.reason,
    }
