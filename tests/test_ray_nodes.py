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
    for key, value in (("period_ms", "500"), ("timeout_ms", "500"), ("failure_threshold", "2")):  # the GCS marks the
        monkeypatch.setenv(f"RAY_health_check_{key}", value)  # lost node dead within about a second, while the rerun runs
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
        assert f"variant w8a8: the node its task started on ({first['node'][:12]}) is lost" in out, out[-3000:]  # seen by the driver
        (run,) = _runs(store)
        assert run.status == "succeeded" and run.attempts == 2, (run.status, run.error)
        servers = sorted(_by_pid(rc.events(log)).values(), key=lambda s: s.get("start", 0))
        assert len(servers) == 2 and servers[1]["node"] != first["node"]  # rerun on the node that is left
        assert len(servers[0]["requests"]) + len(servers[1]["requests"]) <= 12 + 1  # resumed: at most the in-flight one again
        assert len(_results(store)) == 12
        assert rc.all_gone(set(_by_pid(rc.events(log))))
    finally:
        cluster.shutdown()


def test_a_lost_nodes_postgresql_session_ends_and_frees_its_run_locks_though_its_traffic_just_stops() -> None:
    """A lost node sends no FIN: every packet on lo is dropped (tc), so to the server both lock holders vanish. The
    evalsvc engine's keepalives end its session and free its run lock; a plain libpq session keeps its lock."""
    import shutil
    import subprocess
    import tempfile

    import psycopg

    from evalsvc.store.db import make_engine
    from evalsvc.store.locks import RunLocks
    from tests.pg import PostgresServer, pg_bin

    if os.environ.get("EVALSVC_RAY_PHASE") != "inside" or shutil.which("tc") is None or pg_bin() is None:
        pytest.skip("needs a loopback-only network namespace of its own (scripts/test.sh), tc and PostgreSQL")
    root = Path(tempfile.mkdtemp(prefix="pg-lost-", dir="/tmp"))  # the postgres user must reach it
    root.chmod(0o755)
    pg = PostgresServer(root / "pg")
    url = pg.start()
    try:
        locks = RunLocks(make_engine(url))
        assert locks.acquire(42)  # held by a worker of the node about to be lost
        plain = psycopg.connect(f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres", autocommit=True)
        plain.execute("SELECT pg_advisory_lock(7)")

        def free(sql: str) -> bool:  # asked over the server's Unix socket, which the dropped traffic does not touch
            with psycopg.connect(f"host={pg.data} port={pg.port} user=postgres dbname=postgres", autocommit=True) as c:
                got = bool(c.execute(sql).fetchone()[0])
                c.execute("SELECT pg_advisory_unlock_all()")
                return got

        run_lock = f"SELECT pg_try_advisory_lock({locks._NAMESPACE}, 42)"
        assert not free(run_lock) and not free("SELECT pg_try_advisory_lock(7)")
        subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "pfifo", "limit", "0"], check=True)
        try:
            rc.wait_for(lambda: free(run_lock), timeout=150, what="the lost session's run lock to be freed")
            assert not free("SELECT pg_try_advisory_lock(7)")  # without the keepalives: still held
        finally:
            subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True)
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
