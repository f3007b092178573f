"""`steam-ray serve` under overload and over time, as a real process on its own local Ray.

    python benchmarks/bench_serve_faults.py --checkpoint CKPT --data DATA overload [--factor 10]
    python benchmarks/bench_serve_faults.py --checkpoint CKPT --data DATA soak [--minutes 10]

overload: first the load the server sustains (``--clients`` closed-loop clients, one review per
request), then ``--factor`` x as many clients. Reported per phase: answered req/s, p50/p99 of
the 200s, 503s (and how fast they came back), any other status. A client that gets a 503 waits
``--backoff-ms`` before its next request, as a client honouring "retry shortly" would (without
it, 503s come back so fast that the load generator itself takes the 2 cores).
The queue bound under test: ``serve.max_ongoing_requests`` + ``serve.max_queued_requests``,
and the ingress's admission control in front of it (``--no-admission`` for the baseline).
``--client lean`` drives the load with raw asyncio sockets instead of httpx: on the server's
own 2 cores 160 httpx clients take a whole core themselves (RESULTS.md), the lean ones ~7%.

soak: ``--clients`` steady closed-loop clients for ``--minutes``; the model replica's resident
memory every 10 s. Flat when the last sample is within 10% of the first (taken after warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import REPO, component, free_port, load_texts, stop, wait_healthy


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else 0.0


def _request_bytes(url: str, texts: list[str]) -> list[bytes]:
    """One pre-encoded HTTP/1.1 keep-alive POST /predict per text (the lean client's)."""
    netloc = url.split("://", 1)[1]
    out = []
    for text in texts:
        body = json.dumps({"reviews": [text]}).encode()
        head = (
            f"POST /predict HTTP/1.1\r\nHost: {netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


class _LeanConnection:
    """One kept-alive HTTP/1.1 connection of the lean client: raw asyncio streams."""

    def __init__(self, host: str, port: int, requests: list[bytes]) -> None:
        self.host, self.port, self.requests = host, port, requests
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __call__(self, rng: random.Random) -> str:
        """Send one of ``requests``, read the whole response: its status, or the error's name."""
        request = rng.choice(self.requests)
        try:
            if self.streams is None:
                self.streams = await asyncio.open_connection(self.host, self.port)
            reader, writer = self.streams
            writer.write(request)
            status = (await reader.readline()).split(b" ", 2)[1].decode()
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"connection" and value.strip().lower() == b"close":
                    close = True
            await reader.readexactly(length)
        except (OSError, IndexError, asyncio.IncompleteReadError) as exc:
            close, status = True, type(exc).__name__
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def load(
    url: str,
    texts: list[str],
    clients: int,
    seconds: float,
    backoff_s: float,
    client_kind: str = "httpx",
) -> dict[str, Any]:
    """Closed-loop clients; latencies by outcome, statuses counted. ``client_kind`` lean: raw
    asyncio sockets with pre-encoded requests, ~10x less CPU per request than httpx, so a
    generator on the server's own cores takes less of them."""
    if client_kind == "lean":
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        requests = _request_bytes(url, texts)
        conns = [_LeanConnection(host, int(port), requests) for _ in range(clients)]
        try:
            return await _closed_loop(list(conns), seconds, backoff_s)
        finally:
            for c in conns:
                c.close()
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def post(rng: random.Random) -> str:
            try:
                r = await client.post(f"{url}/predict", json={"reviews": [rng.choice(texts)]})
                return str(r.status_code)
            except httpx.HTTPError as exc:
                return type(exc).__name__

        return await _closed_loop([post] * clients, seconds, backoff_s)


async def _closed_loop(
    calls: list[Callable[[random.Random], Awaitable[str]]], seconds: float, backoff_s: float
) -> dict[str, Any]:
    """One worker per call: send, wait for the answer, again; after a non-200, wait
    ``backoff_s`` first (a client honouring "retry shortly")."""
    ok: list[float] = []
    busy: list[float] = []
    other: dict[str, int] = {}
    stop_at = time.perf_counter() + seconds

    async def worker(seed: int, call: Callable[[random.Random], Awaitable[str]]) -> None:
        rng = random.Random(seed)
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            status = await call(rng)
            took = time.perf_counter() - t0
            if status == "200":
                ok.append(took)
                continue
            if status == "503":
                busy.append(took)
            else:
                other[status] = other.get(status, 0) + 1
            await asyncio.sleep(backoff_s)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i, call) for i, call in enumerate(calls)))
    return _summary(len(calls), time.perf_counter() - t0, ok, busy, other)


def _summary(
    clients: int, elapsed: float, ok: list[float], busy: list[float], other: dict[str, int]
) -> dict[str, Any]:
    return {
        "clients": clients,
        "ok_req_s": round(len(ok) / elapsed, 1),
        "ok": len(ok),
        "ok_p50_ms": round(_pct(ok, 0.5), 1),
        "ok_p99_ms": round(_pct(ok, 0.99), 1),
        "503": len(busy),
        "503_p99_ms": round(_pct(busy, 0.99), 1),
        "other": other,
    }


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    cfg = {
        "serve": {
            "backend": args.backend,
            "threads": os.cpu_count() or 1,
            "num_cpus": 1.0,
            "max_ongoing_requests": args.max_ongoing,
            "max_queued_requests": args.max_queued,
            "admission_control": not args.no_admission,
        }
    }
    cfg_file = Path(tempfile.mkdtemp()) / "serve.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    port = free_port()
    cmd = [sys.executable, "-m", "steam_ray.cli", "serve", "--checkpoint", args.checkpoint]
    cmd += ["--port", str(port), "--config", str(cfg_file)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    log = open(Path(tempfile.gettempdir()) / "bench_serve_faults.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc)
    return proc, url


def replica_rss_mb(root_pid: int) -> float:
    import psutil

    total = 0.0
    for proc in psutil.Process(root_pid).children(recursive=True):
        try:
            if component(proc) == "replica SentimentModel":
                total += proc.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return round(total, 1)


def overload(args: argparse.Namespace, url: str, texts: list[str]) -> dict[str, Any]:
    backoff = args.backoff_ms / 1000
    asyncio.run(load(url, texts, args.clients, 5, backoff, args.client))  # warm-up
    out = {}
    for name, clients in (("sustained", args.clients), ("overload", args.clients * args.factor)):
        r = asyncio.run(load(url, texts, clients, args.seconds, backoff, args.client))
        print(f"{name:9s} {json.dumps(r)}", flush=True)
        out[name] = r
    return out


def soak(
    args: argparse.Namespace, proc: subprocess.Popen[bytes], url: str, texts: list[str]
) -> dict[str, Any]:
    asyncio.run(load(url, texts, args.clients, 30, 0.1))  # warm-up, before the first sample
    samples: list[dict[str, Any]] = []
    totals = {"ok": 0, "503": 0, "other": 0}
    t_end = time.monotonic() + args.minutes * 60
    while time.monotonic() < t_end:
        r = asyncio.run(load(url, texts, args.clients, 10, 0.1))
        rss = replica_rss_mb(proc.pid)
        t_s = round(args.minutes * 60 - (t_end - time.monotonic()))
        samples.append({"t_s": t_s, "rss_mb": rss})
        totals["ok"] += r["ok"]
        totals["503"] += r["503"]
        totals["other"] += sum(r["other"].values())
        print(f"t={samples[-1]['t_s']:4d}s rss {rss:7.1f} MB  {json.dumps(r)}", flush=True)
    first, last = samples[0]["rss_mb"], samples[-1]["rss_mb"]
    peak = max(s["rss_mb"] for s in samples)
    summary = {
        "minutes": args.minutes,
        "requests": totals,
        "rss_mb_first": first,
        "rss_mb_last": last,
        "rss_mb_max": peak,
        "rss_change_pct": round(100 * (last - first) / first, 1) if first else None,
    }
    print(json.dumps(summary), flush=True)
    return {"summary": summary, "samples": samples}


def stop_under_load(
    proc: subprocess.Popen[bytes], url: str, texts: list[str], clients: int
) -> float | None:
    """SIGTERM while clients keep sending (a rollout): seconds from the signal to exit."""
    import signal
    import threading

    load_thread = threading.Thread(
        target=lambda: asyncio.run(load(url, texts, clients, 40, 0.1)), daemon=True
    )
    load_thread.start()
    time.sleep(3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        stop(proc)
        return None
    return round(time.monotonic() - t0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", choices=["overload", "soak"])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default="artifacts/quickstart/data")
    ap.add_argument("--synth", action="store_true")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--backoff-ms", type=float, default=100)
    ap.add_argument("--max-ongoing", type=int, default=32)
    ap.add_argument("--max-queued", type=int, default=32)
    ap.add_argument(
        "--no-admission",
        action="store_true",
        help="serve.admission_control off: the baseline, excess requests wait in Serve's router",
    )
    ap.add_argument(
        "--client",
        choices=["httpx", "lean"],
        default="httpx",
        help="Load generator: httpx, or raw asyncio sockets (lean: far less CPU per request).",
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    texts = load_texts(args)
    proc, url = start_server(args)
    try:
        if args.mode == "overload":
            result = overload(args, url, texts)
        else:
            result = soak(args, proc, url, texts)
        result["sigterm_to_exit_s"] = stop_under_load(proc, url, texts, args.clients)
        print(f"SIGTERM under load -> exit: {result['sigterm_to_exit_s']} s", flush=True)
    finally:
        if proc.poll() is None:
            stop(proc)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **result}, indent=2))


if __name__ == "__main__":
    main()
