"""Fault injection for the fault-tolerance tests (``train.faults`` config). Not for real runs."""

from __future__ import annotations

import contextlib
import os
import time

from steam_ray import storage
from steam_ray.config import FaultConfig

FAIL_MARKER = "_fail_injected"


def maybe_inject_failure(
    faults: FaultConfig, run_dir: str, step: int, rank: int, world: int
) -> None:
    """The last rank dies (os._exit) after step ``faults.fail_at_step``, once per run."""
    if faults.fail_at_step is None or step != faults.fail_at_step or rank != world - 1:
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
            if storage.read_json(snapshot).get("checkpoint_results"):
                break
        time.sleep(0.5)
    storage.write_text(marker, f"rank {rank} exited at step {step}\n")
    os._exit(1)  # a real process death, as a crashed or preempted worker
