"""Closed-loop HTTP load: `steam-ray serve` vs a plain FastAPI + uvicorn process, same checkpoint.

    python benchmarks/bench_serve.py --checkpoint CKPT --data artifacts/quickstart/data \
        --clients 32 --seconds 30 --repeats 3

32 clients each send one review per request and wait for the answer before the next (closed
loop). Reviews are the test split's texts (a realistic length mix), or synthetic Steam reviews
(benchmarks/synth.py) with ``--synth``. Contenders, one after the other in the same run:
- serve: `steam-ray serve` (its own local Ray), the CPU default backend, dynamic batching,
  Serve's high-throughput mode (HAProxy ingress, RAY_SERVE_THROUGHPUT_OPTIMIZED): the default;
- serve-single / serve-two: the same, forced to one deployment (routes + model) or to an
  ingress in front of a model deployment, whatever ``--single`` and the default say;
- serve-classic: the same with `serve.high_throughput: false` (Serve's Python proxy actor);
- serve-classic-throughput: the proxy actor with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 only;
- plain: one uvicorn process running plain transformers + torch fp32 once per request;
- plain-<backend>: the same, with Serve's backend (separates the backend's gain from batching).
Also the model-only ceiling of Serve's backend: batches of 32 reviews sorted by length, no HTTP.
Loopback addresses only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def load_texts(args: argparse.Namespace) -> list[str]:
    if args.synth:
        sys.path.insert(0, str(REPO / "benchmarks"))
        import csv

        from synth import generate_steam_csv

        path = Path(tempfile.mkdtemp()) / "synth.csv"
        generate_steam_csv(path, 2000, seed=0)
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r["review_text"] for r in csv.DictReader(f)]
        return [r for r in rows if r and r.strip()]
    import pyarrow.parquet as pq

    return pq.read_table(str(Path(args.data) / "test"), columns=["text"]).column("text").to_pylist()


async def closed_loop(url: str, texts: list[str], clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker(seed: int) -> None:
            nonlocal errors
            rng = random.Random(seed)
            while time.perf_counter() < stop_at:
                body = {"reviews": [rng.choice(texts)]}
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"{url}/predict", json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        elapsed = time.perf_counter() - t0
    latencies.sort()

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0
        )

    return {
        "req_s": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": errors,
        "requests": len(latencies),
    }


# Process-title keywords -> component, for the CPU accounting (Ray sets actor process titles).
COMPONENTS = (
    ("bin/haproxy", "haproxy"),
    ("ProxyActor", "proxy"),
    ("ServeController", "controller"),
    ("ServeReplica", "replica"),
    ("raylet", "ray system"),
    ("gcs_server", "ray system"),
    ("dashboard", "ray system"),
    ("log_monitor", "ray system"),
    ("monitor.py", "ray system"),
)


def component(proc: Any) -> str:
    try:
        title = " ".join(proc.cmdline()) or proc.name()
    except Exception:  # exited between listing and reading
        return "gone"
    for key, label in COMPONENTS:
        if key in title:
            if label == "replica":  # ray::ServeReplica:APP:DEPLOYMENT -> the deployment
                return "replica " + title.split(":")[-1].split()[0]
            return label
    return "server" if "ray::" not in title else "other ray workers"


def cpu_seconds(root_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far, per component of the server's process tree."""
    import psutil

    out: dict[str, float] = {}
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return out
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        label = "server" if proc.pid == root_pid else component(proc)
        out[label] = out.get(label, 0.0) + t.user + t.system
    return out


def cpu_per_request(
    before: dict[str, float], after: dict[str, float], requests: int
) -> dict[str, float]:
    """CPU milliseconds per answered request, per component; where the time goes."""
    n = max(1, requests)
    return {
        k: round((after.get(k, 0.0) - before.get(k, 0.0)) * 1000 / n, 2)
        for k in sorted(set(before) | set(after))
        if after.get(k, 0.0) - before.get(k, 0.0) > 0.005
    }


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def run_contender(
    name: str, cmd: list[str], port: int, texts: list[str], args: argparse.Namespace
) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    log = open(Path(tempfile.gettempdir()) / f"bench_serve_{name}.log", "wb")  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    for attempt in range(3):
        # On a heavily loaded host a local Ray can miss its fixed 30 s raylet start-up window.
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_healthy(url, proc)
            break
        except RuntimeError:
            print(f"{name}: server exited during start-up (attempt {attempt + 1})", flush=True)
            if attempt == 2:
                raise
    try:
        warm = asyncio.run(closed_loop(url, texts, args.clients, args.warmup))
        if warm["requests"] == 0:  # a broken contender is not a slow one: stop here
            failed = warm["errors"]
            raise RuntimeError(f"{name}: all {failed} warm-up requests failed; see {log.name}")
        runs = []
        for i in range(args.repeats):
            import psutil

            me = psutil.Process()
            before, c0 = cpu_seconds(proc.pid), me.cpu_times()
            r = asyncio.run(closed_loop(url, texts, args.clients, args.seconds))
            after, c1 = cpu_seconds(proc.pid), me.cpu_times()
            before["load generator"] = c0.user + c0.system
            after["load generator"] = c1.user + c1.system
            r["cpu_ms_per_request"] = cpu_per_request(before, after, r["requests"])
            print(f"{name:16s} CPU ms/request: {r['cpu_ms_per_request']}", flush=True)
            print(
                f"{name:16s} run {i + 1}: {r['req_s']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                f"p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}",
                flush=True,
            )
            runs.append(r)
        return runs
    finally:
        stop(proc)
        log.close()


def ceiling(args: argparse.Namespace, texts: list[str], backend: str) -> list[float]:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_backends import throughput

    from steam_ray.serve.backends import Predictor

    pred = Predictor(args.checkpoint, backend=backend, threads=args.plain_threads)  # type: ignore[arg-type]
    rng = random.Random(0)
    sample = [rng.choice(texts) for _ in range(2048)]
    return [throughput(pred, sample, 32, args.seconds / 2) for _ in range(args.repeats)]


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("req_s", "p50_ms", "p99_ms"):
        vals = [r[key] for r in runs]
        out[key] = statistics.median(vals)
        out[f"{key}_range"] = (min(vals), max(vals))
    out["errors"] = sum(r["errors"] for r in runs)
    parts = {k for r in runs for k in r.get("cpu_ms_per_request", {})}
    out["cpu_ms_per_request"] = {
        k: statistics.median(r.get("cpu_ms_per_request", {}).get(k, 0.0) for r in runs)
        for k in sorted(parts)
    }
    return out


def main() -> None:
    from steam_ray.config import CPU_DEFAULT_BACKEND

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default="artifacts/quickstart/data")
    ap.add_argument("--synth", action="store_true", help="Synthetic Steam reviews, not test split.")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="Per model replica.")
    ap.add_argument(
        "--plain-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="The plain server's and the model-only ceiling's threads (default: every core).",
    )
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument(
        "--replica-cpus",
        type=float,
        default=1.0,
        help="Logical CPUs per model replica (the ingress takes 0.1 of the node's).",
    )
    ap.add_argument("--backend", default=CPU_DEFAULT_BACKEND)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument(
        "--single",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve.single_deployment for the serve contender (default: the config's, one "
        "deployment on CPU replicas)",
    )
    ap.add_argument(
        "--only",
        default="serve,serve-classic,plain,ceiling",
        help="Contenders, comma-separated, from: serve, serve-single, serve-two, serve-classic, "
        "serve-classic-throughput, plain, plain-backend, ceiling.",
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    texts = load_texts(args)
    words = sorted(len(t.split()) for t in texts)
    print(
        f"{len(texts)} texts, words p50={words[len(words) // 2]} p90={words[int(0.9 * len(words))]}"
        f" max={words[-1]}; {args.clients} clients, {args.seconds}s x {args.repeats}",
        flush=True,
    )
    only = set(args.only.split(","))
    results: dict[str, Any] = {}

    cfg = {
        "serve": {
            "backend": args.backend,
            "threads": args.threads,
            "num_cpus": args.replica_cpus,
            "max_batch_size": args.max_batch_size,
            "batch_wait_timeout_s": args.batch_wait_ms / 1000,
            "max_ongoing_requests": 256,
            "autoscaling": {"min_replicas": args.replicas, "max_replicas": args.replicas},
        }
    }
    contenders: list[tuple[str, list[str], int, dict[str, str]]] = []

    def serve_contender(
        name: str, high_throughput: bool, env: dict[str, str], single: bool | None = None
    ) -> None:
        cfg["serve"]["high_throughput"] = high_throughput
        choice = args.single if single is None else single
        cfg["serve"].pop("single_deployment", None)
        if choice is not None:  # else the config's default
            cfg["serve"]["single_deployment"] = choice
        cfg_file = Path(tempfile.mkdtemp()) / "bench-serve.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg))
        port = free_port()
        cmd = [sys.executable, "-m", "steam_ray.cli", "serve", "--checkpoint", args.checkpoint]
        cmd += ["--port", str(port), "--config", str(cfg_file)]
        contenders.append((name, cmd, port, env))

    if "serve" in only:  # the default: Serve's high-throughput mode (HAProxy ingress)
        serve_contender("serve", True, {})
    if "serve-single" in only:
        serve_contender("serve-single", True, {}, single=True)
    if "serve-two" in only:
        serve_contender("serve-two", True, {}, single=False)
    if "serve-classic" in only:  # Serve's Python HTTP proxy actor
        serve_contender("serve-classic", False, {})
    if "serve-classic-throughput" in only:  # the proxy actor + RAY_SERVE_THROUGHPUT_OPTIMIZED
        serve_contender("serve-classic-throughput", False, {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"})
    plain = [sys.executable, str(REPO / "benchmarks" / "plain_server.py")]
    plain += ["--checkpoint", args.checkpoint, "--threads", str(args.plain_threads)]
    if "plain" in only:
        port = free_port()
        contenders.append(("plain", [*plain, "--port", str(port)], port, {}))
    if "plain-backend" in only:
        port = free_port()
        cmd = [*plain, "--port", str(port), "--backend", args.backend]
        contenders.append((f"plain-{args.backend}", cmd, port, {}))
    for name, cmd, port, extra in contenders:
        os.environ.update(extra)
        try:
            results[name] = summary(run_contender(name, cmd, port, texts, args))
        finally:
            for k in extra:
                os.environ.pop(k, None)
    if "ceiling" in only:
        rates = ceiling(args, texts, args.backend)
        results["ceiling"] = {
            "req_s": statistics.median(rates),
            "req_s_range": (min(rates), max(rates)),
        }
        print(
            f"ceiling ({args.backend}, batches of 32, {args.plain_threads} threads): "
            f"{', '.join(f'{r:.1f}' for r in rates)} reviews/s",
            flush=True,
        )

    print("\n| contender | req/s (median, range) | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        lo, hi = r["req_s_range"]
        if name == "ceiling":
            label = f"model-only ceiling ({args.backend})"
            print(f"| {label} | {r['req_s']:.1f} ({lo:.1f}-{hi:.1f}) | | | |")
            continue
        print(
            f"| {name} | {r['req_s']:.1f} ({lo:.1f}-{hi:.1f}) | {r['p50_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['errors']} |"
        )
    print("\nCPU ms per answered request, by component (median over runs):")
    for name, r in results.items():
        if r.get("cpu_ms_per_request"):
            total = sum(r["cpu_ms_per_request"].values())
            print(f"  {name}: total {total:.1f}; {r['cpu_ms_per_request']}")
    print_ratios(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def print_ratios(results: dict[str, Any]) -> None:
    """Each Serve contender against the plain server and the model-only ceiling."""
    plain, ceil = results.get("plain"), results.get("ceiling")
    print()
    for name, r in results.items():
        if not name.startswith("serve"):
            continue
        if plain:
            print(
                f"{name} / plain: {r['req_s'] / plain['req_s']:.2f}x req/s; "
                f"p99 {r['p99_ms']:.0f} vs {plain['p99_ms']:.0f} ms"
            )
        if ceil:
            print(f"{name} reaches {r['req_s'] / ceil['req_s']:.0%} of the model-only ceiling")


if __name__ == "__main__":
    main()
