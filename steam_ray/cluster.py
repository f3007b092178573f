"""The Ray cluster this process works on: connecting to it, and its shape.

On an autoscaling cluster (KubeRay: a 0-CPU head, worker groups from 0) a job starts before
any worker exists, so what is alive *now* says little: sizes come from what the cluster can
grow to, which the autoscaler publishes in the GCS (its node groups' resources x max count).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from steam_ray.errors import ConfigError

log = logging.getLogger(__name__)

#: How long a TCP probe of the cluster's GCS may take before the address counts as dead.
PROBE_TIMEOUT_S = 3.0
UNBOUNDED = 2**31


def _target() -> tuple[str | None, str]:
    """(the GCS address ``ray.init()`` will connect to, where that address comes from)."""
    from ray._common.utils import get_ray_address_file
    from ray._private.utils import read_ray_address

    named = os.environ.get("RAY_ADDRESS", "").strip()
    if named:
        return named, "RAY_ADDRESS"
    recorded = read_ray_address()
    path = get_ray_address_file(None)
    return recorded, f"the cluster recorded in {path}"


def _reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            return True
    except (OSError, ValueError):
        return False


def _unreachable(address: str, source: str) -> ConfigError:
    return ConfigError(
        f"cannot reach the Ray cluster at {address} ({source}). If that cluster is gone, run "
        "`ray stop` to clear its record, or set RAY_ADDRESS=local to start a new local Ray "
        "for this command; otherwise check the address and that the head is up."
    )


def connect(**init_kwargs: Any) -> None:
    """``ray.init`` unless connected. A named (``RAY_ADDRESS``) or recorded cluster that does
    not answer is a one-line ConfigError at once, not a ``ray.init`` traceback minutes later."""
    import ray

    if ray.is_initialized():
        return
    address, source = _target()
    # host:port GCS addresses only: "auto"/"local", ray:// and http:// mean other things.
    probe = address is not None and "://" not in address and ":" in address
    if probe and address is not None and not _reachable(address):
        raise _unreachable(address, source)
    try:
        ray.init(**init_kwargs)
    except ConnectionError as exc:
        raise _unreachable(address or "?", source) from exc


@dataclass(frozen=True)
class Shape:
    """CPUs/GPUs now and at most (the autoscaler's node groups), and nodes alive now."""

    cpus: float
    gpus: float
    max_cpus: float
    max_gpus: float
    nodes: int
    autoscaling: bool

    @property
    def multi_node(self) -> bool:
        """More than one node now, or worker groups the autoscaler can add."""
        return self.nodes > 1 or self.autoscaling


#: What the cluster can grow to, declared by its manifest (worker groups' maxReplicas x each
#: pod's CPUs / GPUs): Ray's autoscalers (v1 and v2) do not publish their node groups' maxima,
#: so a job submitted to a cluster scaled to zero has no other way to know them.
MAX_CPUS_ENV = "STEAM_RAY_MAX_CPUS"
MAX_GPUS_ENV = "STEAM_RAY_MAX_GPUS"


def declared_maxima() -> dict[str, float] | None:
    """``STEAM_RAY_MAX_CPUS``/``_GPUS`` (None: neither set); a bad value is a ConfigError."""
    out: dict[str, float] = {}
    for key, env in (("CPU", MAX_CPUS_ENV), ("GPU", MAX_GPUS_ENV)):
        value = os.environ.get(env, "").strip()
        if not value:
            continue
        try:
            out[key] = float(value)
        except ValueError:
            raise ConfigError(f"{env}={value!r} is not a number of {key}s") from None
    return out or None


def autoscaler_maxima() -> dict[str, float] | None:
    """Resources the cluster can grow to (None: not an autoscaling cluster, as far as we can
    tell): what its manifest declares, else the GCS record that Ray Train and Ray Data read
    (``get_max_resources_from_cluster_config``; published by some control planes only)."""
    from ray._private.state import state

    declared = declared_maxima()
    if declared is not None:
        return declared
    try:
        maxima = state.get_max_resources_from_cluster_config()
    except Exception as exc:  # an older GCS without the record: as if no autoscaler
        log.debug("no autoscaler config: %s", exc)
        return None
    # A group without a max count reads as sys.maxsize: no bound to size from.
    bounded = {k: float(v) for k, v in (maxima or {}).items() if v < UNBOUNDED}
    return bounded if maxima else None


def shape() -> Shape:
    """The shape of the connected cluster (connecting if needed)."""
    import ray

    connect()
    now: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    maxima = autoscaler_maxima()
    cpus, gpus = float(now.get("CPU", 0)), float(now.get("GPU", 0))
    return Shape(
        cpus=cpus,
        gpus=gpus,
        max_cpus=max(cpus, (maxima or {}).get("CPU", 0.0)),
        max_gpus=max(gpus, (maxima or {}).get("GPU", 0.0)),
        nodes=sum(1 for n in nodes if n.get("Alive")),
        autoscaling=maxima is not None,
    )


@contextlib.contextmanager
def steady_cwd() -> Iterator[None]:
    """Run a long Ray driver call (``Tuner.fit``, ``TorchTrainer.fit``) from a directory that
    nothing replaces, then return to the caller's directory by its path.

    A Ray job's driver runs in its unpacked working dir, and every node's runtime-env agent
    that first sets up the job unpacks it again with ``overwrite=True`` (rmtree + unpack,
    ray/_private/runtime_env/working_dir.py). Where nodes share that path (nodes on one
    machine, as in a local autoscaling cluster) the driver's cwd is deleted under it, and
    Tune's result listing, which resolves relative paths, failed with a bare ``[Errno 2]``
    after every trial had finished. Paths must already be absolute (the config's are).
    """
    try:
        before: str | None = os.getcwd()
    except FileNotFoundError:
        before = None
    os.chdir(tempfile.gettempdir())
    try:
        yield
    finally:
        if before is not None and os.path.isdir(before):
            os.chdir(before)


def describe_os_error(exc: OSError) -> str:
    """An OSError as one line that names its path: its own filename(s), else the working
    directory when that is what vanished (``os.getcwd`` raises with no filename)."""
    if exc.filename is not None or exc.errno is None:  # no errno: our own message
        return str(exc)
    try:
        os.getcwd()
    except FileNotFoundError:
        where = os.environ.get("PWD", "?")
        return f"{exc}: the working directory {where} was removed while the command ran"
    frames = traceback.extract_tb(exc.__traceback__)
    origin = f" (raised at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{exc}: no path given{origin}"


def leave_working_dir(argv: list[str]) -> list[str]:
    """A Ray job driver leaves its unpacked working dir for good (see ``steady_cwd``: any node
    that sets up any job sharing the package re-unpacks that dir, and every relative path
    resolved afterwards failed with a bare ``[Errno 2]``). Arguments naming a file there
    (``--config my.yaml``) become absolute first; the upload holds only code, so no data or
    output path is relative to it."""
    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        return argv
    out = [
        os.path.join(cwd, a) if not os.path.isabs(a) and os.path.isfile(os.path.join(cwd, a)) else a
        for a in argv
    ]
    os.chdir(tempfile.gettempdir())
    return out
