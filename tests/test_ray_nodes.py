"""A node lost mid-run: Ray's test cluster with two simulated GPU nodes; the variant's task reruns on the other one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import ray_cluster as rc
from tests.test_ray import _by_pid, _results, _runs, store  # noqa: F401  (the store fixture)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_a_node_lost_mid_run_reruns_the_variant_on_another_node_and_resumes(
        tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    try:
        from ray.cluster_utils import Cluster
    except ImportError:
        if os.environ.get("EVALSVC_REQUIRE_RAY"):
            pytest.fail("Ray is required here (EVALSVC_REQUIRE_RAY) but not installed")
        pytest.skip("ray is not installed")
    for key, value in rc.RAY_ENV.items():  # the cluster's processes inherit them
        monkeypatch.setenv(key, value)
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "include_dashboard": False, "object_store_memory": 80_000_000})
    try:
        nodes = [cluster.add_node(num_cpus=2, num_gpus=2, object_store_memory=80_000_000) for _ in range(2)]
        cluster.wait_for_nodes()
        log = tmp_path / "servers.jsonl"
        config = rc.project(tmp_path, store, cluster.address, rc.stand_in("w8a8", 2, log, delay=0.4), n_cases=12)
        driver = rc.fire_in_background(config)
        first = rc.wait_for(lambda: next((s for s in _by_pid(rc.events(log)).values() if len(s["requests"]) >= 4), None),
                            what="4 requests on the first node")
        lost = next(n for n in nodes if n.node_id == first["node"])
        cluster.remove_node(lost, allow_graceful=False)
        out, _ = driver.communicate(timeout=240)
        assert driver.returncode == 0, out
        (run,) = _runs(store)
        assert run.status == "succeeded" and run.attempts == 2, (run.status, run.error)
        servers = sorted(_by_pid(rc.events(log)).values(), key=lambda s: s.get("start", 0))
        assert len(servers) == 2 and servers[1]["node"] != first["node"]  # rerun on the node that is left
        assert len(servers[0]["requests"]) + len(servers[1]["requests"]) <= 12 + 1  # resumed: at most the in-flight one again
        assert len(_results(store)) == 12
        assert rc.all_gone(set(_by_pid(rc.events(log))))
    finally:
        cluster.shutdown()
