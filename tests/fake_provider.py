"""Ray's fake multi-node provider, with nodes reported up to date as KubeRay's provider does.

Ray 2.60's ``FakeMultiNodeProvider`` keeps the launcher's ``ray-node-status: uninitialized``
tag on every node it starts, and with ``disable_node_updaters`` (as on KubeRay) nothing ever
sets it to ``up-to-date``. The v1 autoscaler only terminates unhealthy nodes that are up to
date, so a worker node whose raylet died stayed "pending, uninitialized" forever: no
replacement was launched and a gang (STRICT_SPREAD) never placed again. On GKE, KubeRay's
provider derives the status from the pod, so a dead pod is replaced. This subclass does the
same for the fake nodes: they are up to date once started (their raylet is running).

The autoscaler imports it as ``provider: {type: external, module: fake_provider.
UpToDateFakeProvider}``, so ``tests/`` is on the head's ``PYTHONPATH`` (tests/autoscaling.py).
"""

from __future__ import annotations

from typing import Any

from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
from ray.autoscaler.tags import STATUS_UP_TO_DATE, TAG_RAY_NODE_STATUS


class UpToDateFakeProvider(FakeMultiNodeProvider):
    def _create_node_with_resources_and_labels(
        self, node_config: Any, tags: Any, count: int, resources: Any, labels: Any
    ) -> None:
        super()._create_node_with_resources_and_labels(node_config, tags, count, resources, labels)
        with self.lock:  # the node just added (ids are zero-padded counters): its raylet is up
            self._nodes[max(self._nodes)]["tags"][TAG_RAY_NODE_STATUS] = STATUS_UP_TO_DATE
