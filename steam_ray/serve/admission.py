"""Admission control in the ingress: no more model calls in flight than the replicas hold.

Serve's router holds a request that finds every model replica at ``max_ongoing_requests`` and
retries it with exponential backoff (25 ms doubling to 0.5 s, ``RAY_SERVE_ROUTER_RETRY_*``).
Under overload the queued requests sleep while slots free up: at 10x load on 2 cores the model
replica sat ~90% idle and answered 9-11 req/s instead of ~68 (benchmarks/RESULTS.md). Admitting
only what the running replicas hold means every admitted request finds a free slot at once;
the rest get a 503 before their body is read.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("ray.serve")


class Admission:
    """In-flight model calls of one ingress replica, against its share of the capacity."""

    def __init__(self, per_replica: int, ingress_replicas: int) -> None:
        self.per_replica = per_replica
        self.ingress_replicas = ingress_replicas
        self.replicas = 1  # running model replicas, refreshed by track_replicas
        self.inflight = 0

    @property
    def limit(self) -> int:
        # At least one replica's worth: while a lost replica is replaced, requests wait in
        # Serve's router (as they would without this) instead of all getting 503s.
        share = self.per_replica * max(1, self.replicas) // self.ingress_replicas
        return max(1, share)

    def try_enter(self) -> bool:
        if self.inflight >= self.limit:
            return False
        self.inflight += 1
        return True

    def leave(self) -> None:
        self.inflight -= 1


def running_replicas(app_name: str, deployment: str) -> int:
    """RUNNING replicas of a deployment, from Serve's controller (a blocking call)."""
    from ray import serve

    status = serve.status().applications[app_name].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))  # type: ignore[call-overload]


async def track_replicas(
    admission: Admission, app_name: str, deployment: str, every_s: float
) -> None:
    """Keeps ``admission.replicas`` current as the deployment autoscales (runs forever)."""
    while True:
        try:
            admission.replicas = await asyncio.to_thread(running_replicas, app_name, deployment)
        except Exception as exc:  # the controller busy or restarting: keep the last count
            log.debug("replica count not refreshed: %s", exc)
        await asyncio.sleep(every_s)
