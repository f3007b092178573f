"""The ingress's admission arithmetic (steam_ray.serve.admission); the Serve side is in
tests/integration/test_serve_app.py."""

from __future__ import annotations

import pytest

from steam_ray.serve.admission import Admission


@pytest.mark.parametrize(
    ("per_replica", "ingress", "replicas", "limit"),
    [
        (32, 1, 1, 32),
        (32, 1, 3, 96),  # follows the autoscaled replica count
        (32, 2, 3, 48),  # split over the ingress replicas
        (32, 1, 0, 32),  # a replica being replaced: one replica's worth, not 0
        (1, 4, 1, 1),  # never below 1
    ],
)
def test_limit(per_replica: int, ingress: int, replicas: int, limit: int) -> None:
    adm = Admission(per_replica, ingress)
    adm.replicas = replicas
    assert adm.limit == limit


def test_enter_until_full_then_leave_frees_a_slot() -> None:
    adm = Admission(2, 1)
    assert adm.try_enter() and adm.try_enter()
    assert not adm.try_enter() and adm.inflight == 2  # a rejection is not counted in flight
    adm.leave()
    assert adm.try_enter() and adm.inflight == 2
