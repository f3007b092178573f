"""Helpers for benchmarks/gpu/run.sh: the GPU run kit's model, data, stages, load and summary.

    python benchmarks/gpu/kit.py make-model DIR --tokenizer TOKDIR [--tiny]
    python benchmarks/gpu/kit.py make-data CSV --rows N --vocab VOCAB [--min-words W]
    python benchmarks/gpu/kit.py stage NAME BUDGET_S WORK -- CMD ...
    python benchmarks/gpu/kit.py serve-load --checkpoint CK --data DATA --json OUT ...
    python benchmarks/gpu/kit.py summary WORK --json OUT

Only torch, transformers, psutil, httpx, pyarrow (and tensorboard, if there) beyond the repo:
what the GPU machine's image has. The model is DistilBERT-base, randomly initialised (the
architecture of bench_gpu_mfu.py, whose 34% MFU the training loop is compared with): the
synthetic reviews' labels are random, so pretrained weights would measure nothing more, and
the machine cannot reach the hub. Its tokenizer is the packaged MiniLM one (the same
bert-base-uncased WordPiece vocabulary of 30,522 tokens DistilBERT uses).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)
STAGES = ("setup", "prepare", "train", "tune", "serve")
#: Every figure the summary reports (None where a stage failed or, for MFU, on a CPU).
FIGURE_KEYS = (
    "device",
    "peak_tflops",
    "prepare_rows",
    "prepare_rows_per_s",
    "train_steps",
    "train_batch_size",
    "train_tokens_per_sample",
    "train_samples_per_s",
    "train_tokens_per_s",
    "train_tflops",
    "train_mfu",
    "train_mfu_all_params",
    "non_embedding_params",
    "params",
    "train_macro_f1",
    "sweep_trials",
    "sweep_trials_ok",
    "sweep_wall_s",
    "sweep_best_metric",
    "serve_req_s",
    "serve_p50_ms",
    "serve_p99_ms",
    "serve_errors",
    "serve_requests",
    "serve_device",
    "serve_backend",
)


# -- the model and the data -----------------------------------------------------------------


def make_model(out: Path, tokenizer: Path, tiny: bool) -> None:
    """A randomly initialised DistilBERT classifier with the given tokenizer, HF layout."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    # --tiny: the CPU dry run's toy size (a step takes milliseconds, the layout is the same).
    dims = dict(n_layers=2, dim=64, n_heads=2, hidden_dim=128) if tiny else {}
    cfg = DistilBertConfig(num_labels=2, **dims)
    model = DistilBertForSequenceClassification(cfg)
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (tokenizer / name).is_file():
            shutil.copy2(tokenizer / name, out / name)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: DistilBERT {cfg.n_layers}x{cfg.dim}, {params / 1e6:.2f} M params -> {out}")


def make_data(csv_path: Path, rows: int, vocab: Path, min_words: int | None) -> None:
    """A synthetic Steam-schema CSV (benchmarks/synth.py) with words from ``vocab``.

    synth.py draws its words from the packaged MiniLM vocabulary, which the GPU machine lacks:
    its ``vocabulary`` is replaced by the carried vocab.txt (same filter). ``min_words``
    replaces the Steam length mix by reviews of min_words..2x words, so that every row fills
    ``--max-length`` and the training loop runs fixed-length batches, as bench_gpu_mfu.py does.
    """
    sys.path.insert(0, str(BENCH))
    import numpy as np
    import synth

    words = tuple(w for w in vocab.read_text().split("\n") if w.isalpha() and len(w) > 1)
    synth.vocabulary = lambda: words  # type: ignore[assignment]  # read at call time
    if min_words is not None:

        def long_reviews(n: int, seed: int) -> Any:
            return np.random.default_rng(seed).integers(min_words, 2 * min_words, size=n)

        synth.review_lengths = long_reviews  # type: ignore[assignment]
    t0 = time.perf_counter()
    synth.generate_steam_csv(csv_path, rows, seed=0)
    mib = csv_path.stat().st_size / 2**20
    print(f"data: {rows:,} rows, {mib:.1f} MiB -> {csv_path} ({time.perf_counter() - t0:.1f} s)")


# -- stages: a command under a hard time budget -----------------------------------------------


def kill_tree(pid: int, grace_s: float = 20.0) -> None:
    """SIGTERM the command (a steam-ray driver shuts its own Ray down), then every process it
    started. Descendants are listed first: Ray's own processes leave the command's process
    group (the driver calls setpgrp), and are re-parented once the driver exits."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for sig_procs in ([root], procs):
        for p in sig_procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(sig_procs, timeout=grace_s / 2)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def run_stage(name: str, budget_s: float, work: Path, cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd`` (stdout+stderr to WORK/logs/NAME.log) for at most ``budget_s`` seconds."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    print(f"== {name}: budget {budget_s:.0f} s: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            rc: int | None = proc.wait(timeout=max(1.0, budget_s))
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_tree(proc.pid)
            proc.wait()
            rc = None  # psutil reaped it: its exit status is not ours to read
    record = {
        "name": name,
        "ok": rc == 0 and not timed_out,
        "rc": rc,
        "timed_out": timed_out,
        "wall_s": round(time.perf_counter() - t0, 1),
        "budget_s": round(budget_s, 1),
        "log": str(log_path),
        "tail": _tail(log_path, 15),
    }
    (work / f"stage-{name}.json").write_text(json.dumps(record, indent=2))
    state = "ok" if record["ok"] else ("TIMED OUT" if timed_out else f"FAILED (rc {rc})")
    print(f"== {name}: {state} in {record['wall_s']} s", flush=True)
    if not record["ok"]:
        print("\n".join(f"   | {line}" for line in record["tail"]), flush=True)
    return record


def _tail(path: Path, lines: int) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return [line[:300] for line in text.splitlines()[-lines:]]


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.5)
    raise TimeoutError(f"no Ray head on port {port} after {timeout_s:.0f} s")


def with_ray(cmd: list[str], num_cpus: int | None) -> int:
    """Run ``cmd`` against a Ray head of its own (``ray start --head --block``), then stop it.

    For `steam-ray tune`: its state-API check (steam_ray.tune.require_state_api) asks Ray's
    state client with no address, which auto-detects and refuses when another Ray runs on the
    machine ("Found multiple active Ray instances": the test session's cluster beside the dry
    run). A concrete RAY_ADDRESS names this one. Its own --temp-dir keeps the head out of
    /tmp/ray's address file, so no other bare ray.init() on the machine can join it.
    """
    import bench_serve

    port, dash = bench_serve.free_port(), bench_serve.free_port()
    temp = Path(f"/tmp/srk-{os.getpid()}")  # short: Ray's unix socket paths have a limit
    head = [sys.executable, "-c", "from ray.scripts.scripts import main; main()", "start"]
    head += ["--head", "--block", f"--port={port}", f"--dashboard-port={dash}"]
    head += ["--node-ip-address=127.0.0.1", "--include-dashboard=true", f"--temp-dir={temp}"]
    head += [f"--num-cpus={num_cpus}"] if num_cpus else []
    # Token auth off for this head only (127.0.0.1, the stage's lifetime): Ray 2.60's
    # `ray start` makes a token the stage's own ray.init would then have to be handed.
    auth = {"RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(head, env={**os.environ, **auth, "RAY_ADDRESS": ""})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the stage's budget ran out
    try:
        _wait_port(port, proc, 120)
        env = {**os.environ, **auth, "RAY_ADDRESS": f"127.0.0.1:{port}"}
        return subprocess.run(cmd, env=env, cwd=REPO).returncode
    finally:
        kill_tree(proc.pid, grace_s=20)
        shutil.rmtree(temp, ignore_errors=True)


# -- serve under closed-loop load ------------------------------------------------------------


def serve_config(args: argparse.Namespace) -> dict[str, Any]:
    """``serve:`` of the kit's config: replicas, their GPU share, batching."""
    serve: dict[str, Any] = {
        "num_cpus": args.replica_cpus,
        "num_gpus": args.replica_gpus,
        "max_batch_size": args.max_batch_size,
        "batch_wait_timeout_s": args.batch_wait_ms / 1000,
        "max_ongoing_requests": 256,
        "ingress_replicas": args.ingress_replicas,
        "autoscaling": {"min_replicas": args.replicas, "max_replicas": args.replicas},
    }
    if args.threads:
        serve["threads"] = args.threads
    return {"serve": serve}


def serve_load(args: argparse.Namespace) -> None:
    """`steam-ray serve` on its own local Ray, warm-up, then a closed-loop run
    (bench_serve.py's load generator); the figures to ``--json``."""
    sys.path.insert(0, str(BENCH))
    import bench_serve
    import httpx
    import yaml

    texts = bench_serve.load_texts(argparse.Namespace(synth=False, data=args.data))
    cfg_file = Path(args.json).with_suffix(".serve.yaml")
    cfg_file.write_text(yaml.safe_dump(serve_config(args)))
    port = bench_serve.free_port()
    cmd = [sys.executable, "-m", "steam_ray.cli", "serve", "--checkpoint", args.checkpoint]
    cmd += ["--port", str(port), "--config", str(cfg_file)]
    # No RAY_ADDRESS: `steam-ray serve` then starts a Ray of its own (address="local") in
    # Serve's high-throughput mode and takes it down on SIGTERM; it never joins another Ray.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(cmd, env=env, cwd=REPO)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the stage's budget ran out
    url = f"http://127.0.0.1:{port}"
    try:
        bench_serve.wait_healthy(url, proc, timeout=args.startup_s)
        warm = asyncio.run(bench_serve.closed_loop(url, texts, args.clients, args.warmup))
        if warm["requests"] == 0:
            raise RuntimeError(f"every warm-up request failed ({warm['errors']} errors)")
        result = asyncio.run(bench_serve.closed_loop(url, texts, args.clients, args.seconds))
        result.update(clients=args.clients, seconds=args.seconds, warmup=warm)
        # What the replicas actually run (device, backend, threads): the first thing to read
        # when the req/s looks like a CPU's.
        result["model"] = httpx.get(f"{url}/v1/model", timeout=30).json()
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"serve: {result['req_s']:.1f} req/s, p99 {result['p99_ms']:.0f} ms", flush=True)
    finally:
        # The figures are in: a short grace. Serve's controller can take its whole 30 s
        # shutdown timeout (seen in the dry run); then the rest of the tree gets SIGTERM.
        kill_tree(proc.pid, grace_s=10)


# -- the summary ------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return None


def device_peak() -> tuple[str, float | None]:
    """The GPU's name (torch, else nvidia-smi) and its dense bf16 peak (bench_gpu_mfu.py)."""
    sys.path.insert(0, str(BENCH))
    import torch
    from bench_gpu_mfu import PEAK_BF16_TFLOPS

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    else:
        smi = shutil.which("nvidia-smi")
        query = [smi or "nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        out = subprocess.run(query, capture_output=True, text=True) if smi else None
        name = out.stdout.strip().splitlines()[0] if out and out.returncode == 0 else "cpu"
    peak = next((p for key, p in PEAK_BF16_TFLOPS.items() if key in name), None)
    return name, peak


def model_shape(model_dir: Path) -> dict[str, int]:
    """Parameters (all, and outside the token/position embeddings), layers, hidden size."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.from_pretrained(model_dir, num_labels=2)
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = AutoModelForSequenceClassification.from_config(cfg)
    params = sum(p.numel() for p in model.parameters())
    embed = sum(p.numel() for p in model.base_model.embeddings.parameters() if p.dim() == 2)
    layers = getattr(cfg, "n_layers", None) or cfg.num_hidden_layers
    hidden = getattr(cfg, "dim", None) or cfg.hidden_size
    return {"params": params, "non_embedding": params - embed, "layers": layers, "hidden": hidden}


def throughput_windows(run_dir: Path, train_log: Path) -> list[tuple[int, float, float]]:
    """(step, samples/s, tokens/s) of each logging window of the run: TensorBoard's
    ``train/samples_per_s`` and ``train/tokens_per_s``, else the workers' console lines."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
        acc.Reload()
        samples = {e.step: e.value for e in acc.Scalars("train/samples_per_s")}
        tokens = {e.step: e.value for e in acc.Scalars("train/tokens_per_s")}
        windows = [(s, samples[s], tokens[s]) for s in sorted(samples) if s in tokens]
        if windows:
            return windows
    except Exception as exc:  # no tensorboard package, or no event file
        print(f"summary: TensorBoard events unreadable ({exc}); using the train log")
    return _log_windows(train_log)


def _log_windows(train_log: Path) -> list[tuple[int, float, float]]:
    pattern = re.compile(
        r"\[steam-ray\] step (\d+):.*samples_per_s=([\d.]+).*tokens_per_s=([\d.]+)"
    )
    found: dict[int, tuple[int, float, float]] = {}
    text = train_log.read_text(errors="replace") if train_log.exists() else ""
    for m in pattern.finditer(text):
        found[int(m.group(1))] = (int(m.group(1)), float(m.group(2)), float(m.group(3)))
    return [found[s] for s in sorted(found)]


def train_figures(work: Path, peak: float | None, skip_windows: int) -> dict[str, Any]:
    """Samples/s and MFU of the training loop: the median logging window after the first
    ``skip_windows`` (compilation, CUDA and Ray Data warm-up). FLOPs per sample as in
    bench_gpu_mfu.py: 6·N·seq + 12·layers·seq²·hidden, N = the non-embedding parameters,
    seq = real tokens per sample (every row fills max_length with the kit's long reviews)."""
    sys.path.insert(0, str(BENCH))
    from bench_gpu_mfu import flops_per_step

    record = read_json(work / "train" / "result.json") or {}
    run_dir = Path(record.get("run_dir", work / "train" / "kit"))
    windows = throughput_windows(run_dir, work / "logs" / "train.log")
    timed = windows[skip_windows:] or windows[-1:]
    shape = model_shape(work / "model")
    out: dict[str, Any] = {
        "train_steps": record.get("global_step"),
        "train_macro_f1": (record.get("metrics") or {}).get("macro_f1"),
        "params": shape["params"],
        "non_embedding_params": shape["non_embedding"],
        "train_windows": [list(w) for w in windows],
    }
    if not timed:
        return out
    sps = statistics.median(w[1] for w in timed)
    tps = statistics.median(w[2] for w in timed)
    seq = tps / sps
    layers, hidden = shape["layers"], shape["hidden"]
    tflops = sps * flops_per_step(shape["non_embedding"], layers, hidden, 1, seq) / 1e12  # type: ignore[arg-type]
    tflops_all = sps * flops_per_step(shape["params"], layers, hidden, 1, seq) / 1e12  # type: ignore[arg-type]
    out.update(
        train_samples_per_s=round(sps, 1),
        train_tokens_per_s=round(tps, 1),
        train_tokens_per_sample=round(seq, 1),
        train_tflops=round(tflops, 2),
        train_mfu=round(tflops / peak, 4) if peak else None,
        train_mfu_all_params=round(tflops_all / peak, 4) if peak else None,
    )
    return out


def sweep_figures(work: Path) -> dict[str, Any]:
    record = read_json(work / "tune" / "result.json") or {}
    trials = record.get("trials") or []
    metric = record.get("metric", "macro_f1")
    return {
        "sweep_trials": len(trials) or None,
        "sweep_trials_ok": sum(t.get("status") == "TERMINATED" for t in trials) if trials else None,
        "sweep_wall_s": record.get("elapsed_s"),
        "sweep_best_metric": (record.get("best_metrics") or {}).get(metric),
        "sweep_metric": metric,
    }


def serve_figures(work: Path) -> dict[str, Any]:
    r = read_json(work / "serve.json") or {}
    model = r.get("model") or {}  # /v1/model of the running replicas
    return {
        "serve_req_s": _round(r.get("req_s"), 1),
        "serve_p50_ms": _round(r.get("p50_ms"), 1),
        "serve_p99_ms": _round(r.get("p99_ms"), 1),
        "serve_errors": r.get("errors"),
        "serve_requests": r.get("requests"),
        "serve_device": model.get("device"),
        "serve_backend": model.get("backend"),
    }


def prepare_figures(work: Path, wall_s: float | None) -> dict[str, Any]:
    manifest = read_json(work / "data" / "manifest.json") or {}
    rows = manifest.get("rows_read")
    rate = round(rows / wall_s, 1) if rows and wall_s else None
    return {
        "prepare_rows": rows,
        "prepare_rows_per_s": rate,
        "prepare_splits": manifest.get("splits"),
    }


def _round(value: Any, digits: int) -> Any:
    return round(value, digits) if isinstance(value, int | float) else None


def summary(args: argparse.Namespace) -> int:
    """Collect every stage's record and figure into one JSON; print a table; 0 if all ok."""
    work = Path(args.work)
    stages = {
        s: read_json(work / f"stage-{s}.json") or {"name": s, "ok": False, "rc": None}
        for s in STAGES
    }
    name, peak = device_peak()
    figures: dict[str, Any] = {"device": name, "peak_tflops": peak}
    figures.update(prepare_figures(work, stages["prepare"].get("wall_s")))
    for part in (
        lambda: train_figures(work, peak, args.skip_windows),
        lambda: sweep_figures(work),
        lambda: serve_figures(work),
    ):
        try:
            figures.update(part())
        except Exception as exc:  # one stage's missing output must not hide the others
            print(f"summary: {type(exc).__name__}: {exc}")
    figures["train_batch_size"] = args.batch_size
    result = {
        "mode": args.mode,
        "ok": all(s.get("ok") for s in stages.values()),
        "stages": {
            k: {f: v.get(f) for f in ("ok", "rc", "timed_out", "wall_s", "budget_s")}
            for k, v in stages.items()
        },
        "figures": {k: figures.get(k) for k in FIGURE_KEYS},
        "details": {k: v for k, v in figures.items() if k not in FIGURE_KEYS},
        "settings": json.loads(args.settings) if args.settings else {},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    print_table(result)
    print(f"summary: {args.json}")
    return 0 if result["ok"] else 1


def print_table(result: dict[str, Any]) -> None:
    f = result["figures"]

    def show(value: Any, fmt: str = "{}") -> str:
        return "n/a" if value is None else fmt.format(value)

    print("\n== GPU run kit summary " + ("(dry run, CPU)" if result["mode"] == "dry-run" else ""))
    for stage, s in result["stages"].items():
        state = "ok" if s["ok"] else ("timed out" if s.get("timed_out") else f"FAILED rc={s['rc']}")
        print(f"  {stage:8s} {state:12s} {show(s.get('wall_s'))} s of {show(s.get('budget_s'))} s")
    print(f"  device   {f['device']} (peak {show(f['peak_tflops'])} TFLOP/s bf16)")
    print(f"  prepare  {show(f['prepare_rows'])} rows, {show(f['prepare_rows_per_s'])} rows/s")
    print(
        f"  train    {show(f['train_samples_per_s'])} samples/s, "
        f"{show(f['train_tokens_per_s'])} tokens/s, {show(f['train_tflops'])} TFLOP/s, "
        f"MFU {show(f['train_mfu'], '{:.1%}')} (non-embedding N = "
        f"{show(f['non_embedding_params'])}; all params: "
        f"{show(f['train_mfu_all_params'], '{:.1%}')}), batch {show(f['train_batch_size'])}, "
        f"{show(f['train_tokens_per_sample'])} tokens/sample"
    )
    print(
        f"  sweep    {show(f['sweep_trials_ok'])}/{show(f['sweep_trials'])} trials ok in "
        f"{show(f['sweep_wall_s'])} s, best {show(f['sweep_best_metric'], '{:.4f}')}"
    )
    print(
        f"  serve    {show(f['serve_req_s'])} req/s, p50 {show(f['serve_p50_ms'])} ms, "
        f"p99 {show(f['serve_p99_ms'])} ms, {show(f['serve_errors'])} errors of "
        f"{show(f['serve_requests'])} requests, on {show(f['serve_device'])} "
        f"({show(f['serve_backend'])})"
    )


# -- command line ----------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-model")
    p.add_argument("out", type=Path)
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--tiny", action="store_true")
    p = sub.add_parser("setup", help="make-model + make-data in one process")
    p.add_argument("work", type=Path)
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--min-words", type=int, default=None)
    p = sub.add_parser("make-data")
    p.add_argument("csv", type=Path)
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--vocab", type=Path, required=True)
    p.add_argument("--min-words", type=int, default=None)
    p = sub.add_parser("stage")
    p.add_argument("name")
    p.add_argument("budget_s", type=float)
    p.add_argument("work", type=Path)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("with-ray", help="CMD against a Ray head of its own")
    p.add_argument("--num-cpus", type=int, default=None)
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("serve-load")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--startup-s", type=float, default=240)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--replica-cpus", type=float, default=1.0)
    p.add_argument("--replica-gpus", type=float, default=0.0)
    p.add_argument("--ingress-replicas", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p = sub.add_parser("summary")
    p.add_argument("work", type=Path)
    p.add_argument("--json", required=True)
    p.add_argument("--mode", default="gpu")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--skip-windows", type=int, default=3)
    p.add_argument("--settings", default=None, help="JSON: the run's settings, recorded as is")
    args = ap.parse_args()
    if args.cmd == "make-model":
        make_model(args.out, args.tokenizer, args.tiny)
    elif args.cmd == "setup":
        make_model(args.work / "model", args.tokenizer, args.tiny)
        make_data(args.work / "steam.csv", args.rows, args.tokenizer / "vocab.txt", args.min_words)
    elif args.cmd == "make-data":
        make_data(args.csv, args.rows, args.vocab, args.min_words)
    elif args.cmd == "stage":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        return 0 if run_stage(args.name, args.budget_s, args.work, command)["ok"] else 1
    elif args.cmd == "with-ray":
        sys.path.insert(0, str(BENCH))
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        return with_ray(command, args.num_cpus)
    elif args.cmd == "serve-load":
        serve_load(args)
    elif args.cmd == "summary":
        return summary(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
