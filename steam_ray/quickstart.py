"""``steam-ray quickstart``: every stage on the embedded default, in one command.

Local Ray, the packaged all-MiniLM-L6-v2 encoder and the bundled sample (``make quickstart``):

    1 prepare   Ray Data: clean, split (no movie in two splits), tokenize  -> WORKDIR/data
    2 train     Ray Train: DDP fine-tuning                                 -> WORKDIR/train
    3 sweep     Ray Tune: a few short ASHA trials around the train settings -> WORKDIR/tune/
    4 register  both results into the registry; the better one is this run's model
    5 evaluate  metrics, threshold tuned on val, report.html               -> WORKDIR/report
    6 predict   batch inference over the test split's Parquet             -> WORKDIR/predictions
    7 serve     Ray Serve over HTTP: example reviews, a curl line, the try-it page; then stop
              (``--serve``: keep serving until Ctrl-C)

The settings are the packaged ``quickstart`` config (``configs/quickstart.yaml``), chosen by
measurement (benchmarks/RESULTS.md) to fit a 2-core laptop; ``WORKDIR/summary.json`` records
the best checkpoint, its registry version, val/test metrics, the report and seconds per stage.
One function per stage; each prints one line when it starts and one when it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from steam_ray import storage
from steam_ray.config import Config, load_config
from steam_ray.errors import ConfigError

SUMMARY_FILE = "summary.json"
STAGES: tuple[str, ...] = (
    "prepare",
    "train",
    "sweep",
    "register",
    "evaluate",
    "predict",
    "serve",
)
#: Sent to the served model over HTTP at the end (short reviews of other things than films:
#: the sample is film critic snippets).
EXAMPLES: tuple[str, ...] = (
    "Best co-op game I have played in years, we could not stop laughing.",
    "Crashes every ten minutes and support never answered. Refunded.",
    "A gorgeous, moving story with a soundtrack I still hum.",
    "Boring, overpriced and far too short.",
)


def quiet_progress() -> None:
    """Where stdout is not a terminal (CI, ``ray job logs``): no progress-bar redraws.

    Before Ray starts, so its worker processes inherit it: Ray Data's progress (which off a
    TTY becomes a block of log lines every 10 s per dataset: ray/data/_internal/progress),
    and tqdm bars (tqdm >= 4.66 reads TQDM_DISABLE; transformers' loading bars use tqdm).
    """
    # transformers' per-load report ("classifier.weight MISSING", expected for a new head),
    # printed by every worker that loads the base model: noise here, on a terminal or not.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if sys.stdout.isatty():
        return
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def quickstart_config(
    workdir: str, config: str | None = "quickstart", sets: list[str] | None = None
) -> Config:
    """The packaged quickstart settings, every path under ``workdir``, then ``--set``s."""
    root = Path(workdir).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"quickstart --workdir {workdir}: exists and is not a directory")
    data = str(root / "data")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    paths: dict[str, Any] = {
        "data": {"output": data},
        "train": {"data": data, "output": str(root / "train")},
        # A new sweep dir per run: Tune refuses to start a sweep over an old one.
        "tune": {"output": str(root / "tune" / f"sweep-{stamp}"), "registry": None},
        "registry": {"root": str(root / "registry")},
        "evaluate": {"data": data, "output": str(root / "report")},
        "predict": {"output": str(root / "predictions")},
        "serve": {"registry": str(root / "registry")},
    }
    return load_config(config, paths, sets)


@dataclass
class StageTimer:
    """Numbers the stages, prints a line as each starts and ends, records its seconds."""

    total: int = len(STAGES)
    echo: Callable[[str], None] = print
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        n = len(self.seconds) + 1
        self.echo(f"== [{n}/{self.total}] {name}: {what}")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - t0, 1)
        self.echo(f"== [{n}/{self.total}] {name} done in {self.seconds[name]:.0f}s")


def say(message: str) -> None:
    print(f"   {message}", flush=True)


def connect_local(num_cpus: int | None = None) -> bool:
    """Connect to RAY_ADDRESS or an already-initialized Ray, else start a local Ray of our
    own (``address="local"``: never a ``ray start`` cluster found on the machine). True when
    this process started it (then it shuts it down at the end)."""
    import ray

    from steam_ray import cluster
    from steam_ray.tune import pin_cluster_address

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        cluster.connect()
        return False
    cluster.connect(address="local", num_cpus=num_cpus, log_to_driver=True)
    # Name our Ray for what finds its cluster by auto-detection (the state API client that
    # ASHA needs, Ray Train's PlacementGroupCleaner): with another Ray on the machine that
    # fails ("Found multiple active Ray instances"). Undone in ``quickstart``'s finally.
    pin_cluster_address()
    return True


# -- the stages -----------------------------------------------------------------------------


def prepare_stage(cfg: Config) -> dict[str, Any]:
    from steam_ray.data.pipeline import prepare

    manifest = prepare(cfg.data)
    splits = {name: s.rows for name, s in manifest.splits.items()}
    say(
        f"kept {manifest.rows_kept:,} of {manifest.rows_read:,} rows "
        f"(dropped {dict(manifest.dropped)}); splits {splits}"
    )
    return {"rows_kept": manifest.rows_kept, "splits": splits}


def train_stage(cfg: Config) -> dict[str, Any]:
    from steam_ray.train.trainer import train

    t = cfg.train
    budget = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs} epoch(s)"
    batch = f"token budget {t.token_budget}" if t.token_budget else f"batch {t.batch_size}"
    say(f"{t.num_workers} worker(s) x {budget}, {batch}, lr {t.lr:g}")
    record = train(t)
    say(f"val {_metrics_line(record['metrics'])}: {record['best_checkpoint']}")
    return record


def sweep_stage(cfg: Config) -> dict[str, Any]:
    from steam_ray.tune import sweep

    tc = cfg.tune
    say(f"{tc.num_samples} trials, {tc.scheduler.upper()} ({tc.search}), space {sorted(tc.space)}")
    record = sweep(cfg)
    stopped = sum(1 for t in record["trials"] if t["stopped_early"])
    say(
        f"best trial {record['best_trial_id']} val {_metrics_line(record['best_metrics'] or {})}; "
        f"{stopped} of {len(record['trials'])} stopped early"
    )
    return record


def register_stage(cfg: Config, trained: dict[str, Any], swept: dict[str, Any]) -> dict[str, Any]:
    """Both this run's best checkpoints into the registry; the better one (val metric) is the
    run's model. The registry's own ``best`` pointer moves only when a version beats it."""
    from steam_ray.cli import _register_run
    from steam_ray.tune import register_best

    root = cfg.registry.root
    candidates = [{**_register_run(cfg, trained, root, False), "from": "train"}]
    with_registry = cfg.model_copy(update={"tune": cfg.tune.model_copy(update={"registry": root})})
    reg = register_best(swept, with_registry, swept["output"])
    if reg is not None:
        candidates.append({**reg, "from": f"sweep trial {swept['best_trial_id']}"})
    chosen = _better(cfg, candidates)
    say(f"this run's model: {cfg.registry.model_name}:{chosen['version']} ({chosen['from']})")
    return {"chosen": chosen, "candidates": candidates}


def _better(cfg: Config, candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """The candidate whose registered score beats the others' (the first of equals), by the
    registry's own rule (``scores.beats``, each version's recorded metric mode)."""
    from steam_ray.registry import Registry
    from steam_ray.scores import beats, finite

    registry = Registry(cfg.registry.root)
    best, best_score = candidates[0], None
    for candidate in candidates:
        info = registry.version_info(cfg.registry.model_name, candidate["version"])
        score = finite(info.get("score"))
        if candidate is best or beats(score, best_score, info["mode"]):
            best, best_score = candidate, score
    return best


def evaluate_stage(cfg: Config, ref: str) -> dict[str, Any]:
    from steam_ray.evaluate import evaluate

    ecfg = cfg.evaluate.model_copy(update={"checkpoint": ref, "registry": cfg.registry.root})
    result = evaluate(ecfg)
    say(f"val {_metrics_line(result['val'])}; test {_metrics_line(result['test'])}")
    say(f"report: {result['report']}")
    return result


def predict_stage(cfg: Config, ref: str) -> dict[str, Any]:
    from steam_ray.data.manifest import split_dir
    from steam_ray.predict import predict

    pcfg = cfg.predict.model_copy(
        update={
            "checkpoint": ref,
            "registry": cfg.registry.root,
            "input": split_dir(cfg.data.output, "test"),
            "format": "parquet",
            "text_column": "text",
        }
    )
    result = predict(pcfg)
    say(f"{json.dumps({k: v for k, v in result.items() if k != 'config'}, default=str)}")
    return result


def serve_stage(cfg: Config, ref: str, *, keep_serving: bool) -> dict[str, Any]:
    """Deploy on the connected Ray, score EXAMPLES over HTTP, print how to try it; take the
    app down again (after Ctrl-C with ``keep_serving``)."""
    from ray import serve

    from steam_ray.serve.run import deploy, serve_config, source_for

    scfg = cfg.serve.model_copy(update={"checkpoint": ref})
    source = source_for(scfg, cfg.registry)
    url = f"http://{scfg.host}:{scfg.port}{scfg.route_prefix.rstrip('/')}"
    # With --serve, Ctrl-C is ours from before the app answers: one that lands while the
    # examples run must end the wait below, not be swallowed by a handler left by an earlier
    # stage (Ray Train installs one for its fit()).
    with stop_on_signal() if keep_serving else contextlib.nullcontext(None) as stop:
        deploy(serve_config(source, scfg))
        try:
            answer = post_reviews(f"{url}/predict", list(EXAMPLES))
            for text, p in zip(EXAMPLES, answer["predictions"], strict=True):
                say(f"{p['label']:>8}  {p['score']:.3f}  {text}")
            body = json.dumps({"reviews": [EXAMPLES[0]]})
            say(
                f"try it: curl -s -X POST {url}/predict -H 'Content-Type: application/json' "
                f"-d '{body}'"
            )
            say(f"try-it page: {url}/   (API docs: {url}/docs)")
            if stop is not None:
                say("serving until Ctrl-C")
                while not stop.wait(0.5):
                    pass
        finally:
            serve.delete(scfg.app_name)
    say("serve app deleted")
    return {"url": url, "examples": answer["predictions"], "model_version": answer["model_version"]}


def post_reviews(url: str, reviews: list[str], timeout: float = 60.0) -> dict[str, Any]:
    """POST /predict over real HTTP (stdlib: no client dependency)."""
    request = urllib.request.Request(
        url,
        data=json.dumps({"reviews": reviews}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


@contextlib.contextmanager
def stop_on_signal() -> Iterator[threading.Event]:
    """An event SIGINT (Ctrl-C) or SIGTERM sets while inside; the old handlers after."""
    import signal

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _metrics_line(metrics: dict[str, Any]) -> str:
    keys = ("accuracy", "macro_f1", "roc_auc")
    return " ".join(f"{k} {metrics[k]:.4f}" for k in keys if isinstance(metrics.get(k), float))


# -- the recipe -----------------------------------------------------------------------------


def quickstart(cfg: Config, workdir: str, *, keep_serving: bool = False) -> dict[str, Any]:
    """Run the seven stages; returns (and writes to WORKDIR/summary.json) the summary."""
    quiet_progress()
    address = os.environ.get("RAY_ADDRESS")
    started = connect_local()
    timer = StageTimer()
    try:
        # After connecting: the check asks the cluster this run uses how many nodes it has.
        storage.require_shared_storage(str(Path(workdir).resolve()), "quickstart --workdir")
        summary = _run_stages(cfg, timer, keep_serving)
    finally:
        if started:
            import ray

            ray.shutdown()
            if address is None:
                os.environ.pop("RAY_ADDRESS", None)
    summary["seconds"] = {**timer.seconds, "total": round(sum(timer.seconds.values()), 1)}
    path = str(Path(workdir).resolve() / SUMMARY_FILE)
    storage.write_json(path, summary)
    print(f"quickstart done in {summary['seconds']['total']:.0f}s: {path}", flush=True)
    return summary


def _run_stages(cfg: Config, timer: StageTimer, keep_serving: bool) -> dict[str, Any]:
    with timer.stage("prepare", f"the bundled sample -> {cfg.data.output}"):
        data = prepare_stage(cfg)
    with timer.stage("train", f"Ray Train DDP on CPU -> {cfg.train.output}"):
        trained = train_stage(cfg)
    with timer.stage("sweep", f"Ray Tune ASHA -> {cfg.tune.output}"):
        swept = sweep_stage(cfg)
    with timer.stage("register", f"registry {cfg.registry.root}"):
        registered = register_stage(cfg, trained, swept)
    chosen = registered["chosen"]
    ref = f"{cfg.registry.model_name}:{chosen['version']}"
    with timer.stage("evaluate", f"{ref} on val + test -> {cfg.evaluate.output}"):
        evaluated = evaluate_stage(cfg, ref)
    with timer.stage("predict", f"the test split -> {cfg.predict.output}"):
        predicted = predict_stage(cfg, ref)
    with timer.stage("serve", f"{ref} on Ray Serve, {cfg.serve.host}:{cfg.serve.port}"):
        served = serve_stage(cfg, ref, keep_serving=keep_serving)
    return {
        "best_checkpoint": chosen["path"],
        "registry_version": chosen["version"],
        "registry_ref": ref,
        "chosen_from": chosen["from"],
        "metrics": {"val": evaluated["val"], "test": evaluated["test"]},
        "threshold": evaluated["threshold"],
        "report": evaluated["report"],
        "data": data,
        "train": {"run_dir": trained["run_dir"], "val": trained["metrics"]},
        "sweep": {"output": swept["output"], "best_metrics": swept["best_metrics"]},
        "registered": registered["candidates"],
        "predictions": predicted,
        "served": served,
    }
