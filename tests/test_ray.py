"""Executor type ray on a real local Ray cluster (simulated GPUs): placement, the store, and every failure.

The drivers are real `evalsvc fire` processes; the variants are stand-in model servers launched through the vLLM
backend (tests/ray_cluster.py). scripts/test.sh runs these tests in a loopback-only network namespace.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.config import load_config
from evalsvc.engine.runner import Runner
from evalsvc.store.db import open_engine, upgrade
from evalsvc.store.schema import CaseResult, Run
from evalsvc.suites import resolve
from tests import ray_cluster as rc
from tests.fake_endpoint import FakeEndpoint

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def head() -> Iterator[rc.Head]:
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("EVALSVC_REQUIRE_RAY"):
            pytest.fail("Ray is required here (EVALSVC_REQUIRE_RAY) but not installed: pip install -e '.[ray]'")
        pytest.skip("ray is not installed (pip install -e '.[ray]')")
    if os.environ.get("EVALSVC_RAY_PHASE") == "inside":  # scripts/test.sh: nothing but loopback to bind or reach
        import socket

        assert [name for _, name in socket.if_nameindex()] == ["lo"]
    head = rc.start_head(num_cpus=4, num_gpus=4)
    yield head
    rc.stop_head(head)


@pytest.fixture
def store(store_url: str) -> str:
    if store_url.startswith("postgresql"):
        upgrade(store_url)
    return store_url


def _runs(url: str) -> list[Run]:
    engine = open_engine(url)
    with Session(engine) as s:
        rows = list(s.scalars(select(Run).order_by(Run.variant_name)))
        s.expunge_all()
    engine.dispose()
    return rows


def _results(url: str, slot: str | None = None) -> list[tuple]:
    engine = open_engine(url)
    with Session(engine) as s:
        q = select(Run.variant_name, CaseResult.case_id, CaseResult.sample_index, CaseResult.status, CaseResult.output,
                   CaseResult.scores).join(Run, Run.id == CaseResult.run_id)
        if slot:
            q = q.where(Run.slot == slot)
        rows = sorted(tuple(r) for r in s.execute(q).all())
    engine.dispose()
    return rows


def _by_pid(events: list[dict]) -> dict[int, dict]:
    servers: dict[int, dict] = {}
    for e in events:
        server = servers.setdefault(e["pid"], {"model": e["model"], "cuda": e["cuda"], "node": e["node"], "requests": []})
        if e["event"] == "start":
            server["start"] = e["t"]
        elif e["event"] == "stop":
            server["stop"] = e["t"]
        else:
            server["requests"].append(e["prompt"])
    return servers


def test_three_2_gpu_variants_on_4_gpus_run_at_most_two_at_once_on_disjoint_devices(
        tmp_path: Path, head: rc.Head, store: str) -> None:
    log = tmp_path / "servers.jsonl"
    variants = "".join(rc.stand_in(name, 2, log, delay=0.3) for name in ("w8a8", "w4a16", "fp8"))
    config = rc.project(tmp_path, store, head.address, variants)
    done = rc.fire(config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {(r.variant_name, r.status) for r in _runs(store)} == {("w8a8", "succeeded"), ("w4a16", "succeeded"),
                                                                  ("fp8", "succeeded")}
    servers = list(_by_pid(rc.events(log)).values())
    assert sorted(s["model"] for s in servers) == ["fp8", "w4a16", "w8a8"]
    for s in servers:
        assert len(s["cuda"].split(",")) == 2 and "stop" in s, s  # Ray's two device ids, and the server stopped
    overlapping = [(a, b) for i, a in enumerate(servers) for b in servers[i + 1:]
                   if a["start"] < b["stop"] and b["start"] < a["stop"]]
    assert overlapping, "two of the variants should have run at the same time (4 GPUs, 2 each)"
    for a, b in overlapping:
        assert not set(a["cuda"].split(",")) & set(b["cuda"].split(",")), (a, b)
    for s in servers:  # never three at once: at each start, at most one other server is up
        assert sum(1 for o in servers if o is not s and o["start"] <= s["start"] < o["stop"]) <= 1
    for name in ("w8a8", "w4a16", "fp8"):  # the driver's log (a Ray Job's log) says where each variant ran
        assert f"variant {name} started on node " in done.stderr, done.stderr[-2000:]


def test_a_worker_killed_mid_run_is_retried_and_the_retry_sends_only_the_missing_cases(
        tmp_path: Path, head: rc.Head, store: str) -> None:
    log = tmp_path / "servers.jsonl"
    variants = rc.stand_in("w8a8", 1, log, stand_in_kill_parent_at=3, stand_in_kill_mark=str(tmp_path / "killed"))
    config = rc.project(tmp_path, store, head.address, variants, n_cases=8)
    done = rc.fire(config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "killed").exists()  # the worker was killed at the first server's 3rd request
    (run,) = _runs(store)
    assert run.status == "succeeded" and run.attempts == 2, (run.status, run.error, run.attempts)
    first, second = sorted(_by_pid(rc.events(log)).values(), key=lambda s: s["start"])
    assert len(first["requests"]) == 3  # answers 1-2 stored; the 3rd was in flight when its worker died
    assert len(second["requests"]) == 8 - 2 and not set(second["requests"]) & set(first["requests"][:2])
    assert len(_results(store)) == 8
    assert rc.all_gone({pid for pid in _by_pid(rc.events(log))}), "a model server outlived its Ray worker"


def test_the_driver_killed_stops_its_tasks_and_the_next_fire_resumes(tmp_path: Path, head: rc.Head, store: str) -> None:
    log = tmp_path / "servers.jsonl"
    config = rc.project(tmp_path, store, head.address, rc.stand_in("w8a8", 1, log, delay=0.4), n_cases=12)
    driver = rc.fire_in_background(config)
    rc.wait_for(lambda: len(_by_pid(rc.events(log)).get(next(iter(_by_pid(rc.events(log))), 0), {}).get("requests", []))
                >= 4, what="4 requests")
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    pids = set(_by_pid(rc.events(log)))
    assert rc.all_gone(pids), "the task (and its server) outlived the killed driver"
    stored = len(_results(store))
    assert 3 <= stored < 12
    done = rc.fire(config)
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = _runs(store)
    assert run.status == "succeeded", run.error
    second = [s for pid, s in _by_pid(rc.events(log)).items() if pid not in pids]
    assert len(second) == 1 and len(second[0]["requests"]) == 12 - stored  # only the missing cases were sent
    assert len(_results(store)) == 12


def test_a_second_task_on_a_locked_run_key_waits_lock_wait_s_then_stands_back(tmp_path: Path, head: rc.Head, store: str) -> None:
    held = threading.Event()  # the first process's requests wait on it: it holds the run key until the task has given up
    endpoint = FakeEndpoint()
    endpoint.behaviour = lambda number, body: held.wait(300) and None
    with endpoint:
        variants = f"""
  - name: api
    family: f
    endpoint: {{base_url: "{endpoint.base_url}", model: m}}"""
        config = rc.project(tmp_path, store, head.address, variants, n_cases=6, executor=", lock_wait_s: 3")
        cfg = load_config(config)
        engine = open_engine(cfg.store_url())
        holder = threading.Thread(target=lambda: Runner(cfg, engine, progress=False, log_dir=tmp_path / "logs").run(
            resolve(cfg.suites_dir, ["echo"])[0], cfg.variants[0], slot=rc.SLOT))
        holder.start()
        rc.wait_for(lambda: len(endpoint.requests) >= 1, what="the first process to start the run")
        began = time.time()
        done = rc.fire(config)
        waited = time.time() - began
        before = len(endpoint.requests)
        held.set()
        holder.join()
    assert done.returncode == 2, done.stdout + done.stderr  # the run is busy elsewhere: not evaluated here
    assert "running  being executed by another evalsvc process right now (waited 3 s for it)" in done.stdout, done.stdout
    assert waited >= 3, waited
    assert before == 1 and len(endpoint.requests) == 6  # the task stood back: every case was asked once, by the holder
    (run,) = _runs(store)
    assert run.status == "succeeded" and run.attempts == 1


def test_an_infeasible_variant_fails_validation_naming_it_and_nothing_is_written(
        tmp_path: Path, head: rc.Head, store: str) -> None:
    log = tmp_path / "servers.jsonl"
    variants = rc.stand_in("w8a8", 2, log) + rc.stand_in("llama-70b-tp8", 8, log)
    config = rc.project(tmp_path, store, head.address, variants, executor=", fit_wait_s: 0")  # no node comes back
    done = rc.fire(config)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "variant 'llama-70b-tp8' needs 1 CPU, 8 GPU on one node" in done.stderr, done.stderr
    assert "node types: 4 CPU, 4 GPU" in done.stderr and "w8a8" not in done.stderr.split("fix:")[0], done.stderr
    assert _runs(store) == [] and not log.exists()


def test_a_variant_waiting_for_gpus_its_firings_other_variant_holds_is_not_timed_out(
        tmp_path: Path, head: rc.Head, store: str) -> None:
    log = tmp_path / "servers.jsonl"
    variants = rc.stand_in("first", 4, log, delay=0.5) + rc.stand_in("second", 4, log, delay=0.5)
    config = rc.project(tmp_path, store, head.address, variants, n_cases=16, executor=", schedule_timeout_s: 3")
    done = rc.fire(config)
    assert done.returncode == 0, done.stdout + done.stderr
    servers = sorted(_by_pid(rc.events(log)).values(), key=lambda s: s["start"])
    assert len(servers) == 2 and servers[1]["start"] - servers[0]["start"] > 3  # the second waited past the timeout
    assert {(r.variant_name, r.status) for r in _runs(store)} == {("first", "succeeded"), ("second", "succeeded")}
    assert "alert:" not in done.stdout, done.stdout


def _verdict_runs(url: str) -> list[tuple[int, int]]:
    from evalsvc.store.schema import VerdictRecord

    engine = open_engine(url)
    with Session(engine) as s:
        rows = list(s.execute(select(VerdictRecord.report_id, VerdictRecord.baseline_run_id, VerdictRecord.candidate_run_id)
                              .where(VerdictRecord.scope == "echo").order_by(VerdictRecord.id)).all())
    engine.dispose()
    return list(dict.fromkeys((b, c) for _, b, c in rows))


def test_workers_whose_fingerprint_differs_from_the_drivers_refuse_and_alert_naming_both_versions(
        tmp_path: Path, head: rc.Head, store: str) -> None:
    log = tmp_path / "servers.jsonl"
    variants = rc.stand_in("base", 1, log, delay=0.05) + rc.stand_in("cand", 1, log, delay=0.05)
    config = rc.project(tmp_path, store, head.address, variants, n_cases=4, extra="baselines: {f: base}")
    config.write_text(config.read_text().replace("compare: false", "compare: true"))
    done = rc.fire(config)
    assert done.returncode == 0, done.stdout + done.stderr
    first = {r.variant_name: r.id for r in _runs(store)}
    assert _verdict_runs(store) == [(first["base"], first["cand"])]  # exactly the runs this firing made
    new_image = tmp_path / "new-image"  # the driver's node runs another image: a vLLM the workers do not have
    (new_image / "vllm-9.9.9.dist-info").mkdir(parents=True)
    (new_image / "vllm-9.9.9.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 9.9.9\n")
    done = rc.fire(config, "--slot", "2026-12-03T03:00Z",
                   extra_env={"PYTHONPATH": rc.RAY_ENV["PYTHONPATH"] + os.pathsep + str(new_image)})
    assert done.returncode == 2, done.stdout + done.stderr  # its runs failed: could not evaluate
    for name in ("base", "cand"):
        line = next(line for line in done.stdout.splitlines() if f"  {name} " in line)
        assert "failed" in line and "engine_version:" in line and "vllm 9.9.9 on the driver" in line, line
        assert f"alert: endpoint:{name}" in done.stdout
    assert {r.slot for r in _runs(store)} == {rc.SLOT}  # nothing ran under the workers' fingerprint
    assert _verdict_runs(store) == [(first["base"], first["cand"])]  # no verdict re-recorded from older runs


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the driver's side only: one store kind is enough
def test_a_driver_that_cannot_compute_a_fingerprint_compares_the_runs_its_tasks_made_and_says_so(
        tmp_path: Path, head: rc.Head, store: str) -> None:
    python = tmp_path / "gpu-pods-only" / "bin" / "python"  # local.python as only the GPU pods have it
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\n[ -n "$NOT_ON_THIS_POD" ] && exit 127\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    log = tmp_path / "servers.jsonl"
    variants = "".join(rc.stand_in(name, 1, log, delay=0.05).replace("entrypoint:", f"python: {python}, entrypoint:")
                       for name in ("base", "cand"))
    config = rc.project(tmp_path, store, head.address, variants, n_cases=4, extra="baselines: {f: base}")
    config.write_text(config.read_text().replace("compare: false", "compare: true"))
    done = rc.fire(config, extra_env={"NOT_ON_THIS_POD": "1"})  # the driver's node: no such interpreter
    assert done.returncode == 0, done.stdout + done.stderr
    runs = {r.variant_name: r for r in _runs(store)}
    assert {(n, r.status) for n, r in runs.items()} == {("base", "succeeded"), ("cand", "succeeded")}
    assert _verdict_runs(store) == [(runs["base"].id, runs["cand"].id)]  # exactly the runs this firing made
    for name in ("base", "cand"):
        assert f"variant {name}: this node cannot compute its fingerprint" in done.stderr, done.stderr[-3000:]
        assert f"variant {name}: its runs were made under fingerprint {runs[name].variant_fingerprint[:12]}" in done.stderr


def test_a_task_over_run_timeout_s_is_cancelled_its_run_failed_and_its_server_stopped(
        tmp_path: Path, head: rc.Head, store: str) -> None:
    log = tmp_path / "servers.jsonl"
    config = rc.project(tmp_path, store, head.address, rc.stand_in("w8a8", 1, log, delay=1.0), n_cases=30,
                        executor=", run_timeout_s: 4")
    done = rc.fire(config)
    assert done.returncode == 2, done.stdout + done.stderr  # its run failed: could not evaluate
    (run,) = _runs(store)
    assert run.status == "failed" and "run_timeout_s" in (run.error or ""), run.error
    assert 0 < len(_results(store)) < 30
    assert rc.all_gone(set(_by_pid(rc.events(log))))


def _firing(url: str, sub: str):
    from evalsvc.store.schema import Firing

    engine = open_engine(url)
    with Session(engine) as s:
        row = s.scalars(select(Firing).where(Firing.submission_id == sub)).first()
        s.expunge_all()
    engine.dispose()
    return row


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the Jobs API does not see the store: one kind is enough
def test_a_firing_is_a_ray_job_whose_submission_id_ray_refuses_to_repeat(tmp_path: Path, head: rc.Head, store: str) -> None:
    from evalsvc.cluster.jobs import DuplicateSubmission, JobsClient
    from evalsvc.service import ray_firings

    log = tmp_path / "servers.jsonl"
    config = rc.project(tmp_path, store, head.address, rc.stand_in("w8a8", 1, log), executor=f', jobs_url: "{head.jobs_url}"')
    cfg = load_config(config)
    slot = "2026-12-02T03:00Z"  # one Ray head serves every store of the module: the store's tag tells them apart
    summary = ray_firings.submit_and_watch(cfg, str(config), cfg.schedules[0], slot)
    sub = f"evalsvc-{ray_firings.store_tag(cfg)}-nightly-{slot.replace(':', '')}-1"
    assert summary["submission_id"] == sub and summary["status"] == "SUCCEEDED", summary
    row = _firing(store, sub)
    assert row.status == "done" and row.runs == {"w8a8/echo": "succeeded"} and row.attempt == 1, (row.status, row.error)
    client = JobsClient(head.jobs_url)
    with pytest.raises(DuplicateSubmission):
        client.submit(sub, "echo again", {})
    client.close()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # as `evalsvc serve` on a cluster runs
def test_a_stopped_scheduler_leaves_its_job_running_and_reconcile_resubmits_a_stopped_job_as_the_next_attempt(
        tmp_path: Path, head: rc.Head, store: str) -> None:
    from evalsvc.cluster.jobs import JobsClient
    from evalsvc.service import ray_firings

    log = tmp_path / "servers.jsonl"
    config = rc.project(tmp_path, store, head.address, rc.stand_in("w8a8", 1, log, delay=0.3), n_cases=12,
                        executor=f', jobs_url: "{head.jobs_url}"')
    cfg = load_config(config)
    client = JobsClient(head.jobs_url)
    stop = threading.Event()
    stop.set()  # `evalsvc serve` stops right after submitting: the evaluation goes on without it
    left = ray_firings.submit_and_watch(cfg, str(config), cfg.schedules[0], "2026-12-01T03:00Z", stop)
    assert left["status"] == "left running"
    rc.wait_for(lambda: client.status(left["submission_id"])[0] == "SUCCEEDED", what="the job to finish on its own")
    assert _firing(store, left["submission_id"]).status == "done"

    slot2 = "2026-12-03T03:00Z"
    sub2 = f"evalsvc-{ray_firings.store_tag(cfg)}-nightly-{slot2.replace(':', '')}-2"
    fid, sub = ray_firings.submit(cfg, str(config), cfg.schedules[0], slot2)
    try:
        rc.wait_for(lambda: sum(1 for e in rc.events(log) if e["event"] == "request") >= 12 + 4, what="the second job's requests")
    except AssertionError:
        raise AssertionError(f"{client.status(sub)}: {client.logs(sub)[-3000:]}") from None
    client.stop(sub)  # the job ends without closing its firing (as when its driver is killed)
    rc.wait_for(lambda: client.status(sub)[0] == "STOPPED", what="the job to stop")
    assert _firing(store, sub).status == "running"
    sent_before = sum(1 for e in rc.events(log) if e["event"] == "request")
    stored_before = len(_results(store, slot2))
    assert 2 <= stored_before < 12
    watching = threading.Event()
    acted = ray_firings.reconcile(cfg, str(config), watching)
    assert acted == [(fid, sub2, "resubmitted after stopped")], acted
    rc.wait_for(lambda: getattr(_firing(store, sub2), "status", None) == "done",
                what="the second attempt to close its firing")
    row = _firing(store, sub2)
    assert row.id == fid and row.attempt == 2 and row.runs == {"w8a8/echo": "succeeded"}
    resent = sum(1 for e in rc.events(log) if e["event"] == "request") - sent_before
    assert resent == 12 - stored_before  # the second attempt sent only what the first had not stored
    watching.set()
    client.close()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_job_stopped_while_the_scheduler_watches_is_submitted_again_and_a_finished_slot_fired_again_runs_anew(
        tmp_path: Path, head: rc.Head, store: str) -> None:
    from evalsvc.cluster.jobs import JobsClient
    from evalsvc.service import ray_firings

    log = tmp_path / "servers.jsonl"
    config = rc.project(tmp_path, store, head.address, rc.stand_in("w8a8", 1, log, delay=0.3), n_cases=12,
                        executor=f', jobs_url: "{head.jobs_url}"')
    cfg = load_config(config)
    client = JobsClient(head.jobs_url)
    slot = "2026-12-04T03:00Z"
    fid, sub = ray_firings.submit(cfg, str(config), cfg.schedules[0], slot)
    watched: list[tuple[str, str]] = []
    watcher = threading.Thread(target=lambda: watched.append(ray_firings.watch(cfg, str(config), fid, sub)))
    watcher.start()  # `evalsvc serve` watching its firing
    rc.wait_for(lambda: len(_results(store, slot)) >= 3, what="the first attempt's answers")
    client.stop(sub)  # the job ends under the watcher's eyes, its firing still running
    watcher.join(timeout=300)
    (status, last), = watched
    assert status == "SUCCEEDED" and last.endswith("-2"), watched
    row = _firing(store, last)
    assert row.id == fid and row.status == "done" and row.runs == {"w8a8/echo": "succeeded"}, (row.status, row.error)
    assert [a.get("ended") for a in row.attempts] == ["STOPPED", "SUCCEEDED"]
    assert len(_results(store, slot)) == 12
    sent = sum(1 for e in rc.events(log) if e["event"] == "request")
    assert sent < 12 + 12  # the second attempt resumed: it did not ask every case again
    again = ray_firings.submit_and_watch(cfg, str(config), cfg.schedules[0], slot)  # `evalsvc schedule run-now`
    assert again["status"] == "SUCCEEDED" and again["submission_id"].endswith("-3"), again
    row = _firing(store, again["submission_id"])
    assert row.status == "done" and row.attempt == 3 and row.finished_at is not None
    assert sum(1 for e in rc.events(log) if e["event"] == "request") == sent  # every run had finished: nothing resent
    client.close()


@pytest.mark.model
def test_the_ray_executor_stores_the_same_case_rows_as_the_local_executor_on_a_real_model(
        tmp_path: Path, head: rc.Head, store: str) -> None:
    from evalsvc.local_models import variant_path
    from tests.conftest import MODELS

    gguf = variant_path(MODELS, "Q8_0")
    if not gguf.is_file():
        if os.environ.get("EVALSVC_REQUIRE_MODELS"):
            pytest.fail(f"{gguf} missing; scripts/setup.sh builds it")
        pytest.skip(f"{gguf} missing; scripts/setup.sh builds it")
    variant = f"""
  - name: smollm2-q8_0
    family: smollm2
    quantization: Q8_0
    local: {{model_path: {gguf}, n_threads: 2}}"""
    extra = "generation: {temperature: 0.0, max_tokens: 24, seed: 0}"
    local_dir, ray_dir = tmp_path / "local", tmp_path / "ray"
    local_dir.mkdir()
    ray_dir.mkdir()
    local_store = f"sqlite:///{local_dir / 'local.db'}"
    config_local = rc.project(local_dir, local_store, head.address, variant, n_cases=6, extra=extra)
    config_local.write_text(config_local.read_text().replace("executor: {type: ray", "executor: {type: local}\n#"))
    config_ray = rc.project(ray_dir, store, head.address, variant, n_cases=6, extra=extra)
    for config in (config_local, config_ray):
        done = rc.fire(config, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
    assert load_config(config_local).executor.type == "local" and load_config(config_ray).executor.type == "ray"
    here, there = _results(local_store), _results(store)
    assert len(here) == 6 and here == there  # case by case: status, output and every score


def test_a_node_whose_suite_files_differ_from_the_drivers_refuses_to_run_naming_them(
        tmp_path: Path, head: rc.Head, store: str) -> None:
    log = tmp_path / "servers.jsonl"
    variants = rc.stand_in("first", 4, log, delay=0.5) + rc.stand_in("second", 4, log, delay=0.5)
    config = rc.project(tmp_path, store, head.address, variants, n_cases=10)
    driver = rc.fire_in_background(config)
    rc.wait_for(lambda: rc.events(log), what="the first variant's server")  # the other task waits for the GPUs
    cases = tmp_path / "suites" / "echo.jsonl"
    cases.write_text(cases.read_text() + '{"id": "new", "input": "say 9", "checks": [{"type": "contains", "value": "9"}]}\n')
    out, _ = driver.communicate(timeout=240)
    assert driver.returncode == 2, out  # one run failed: could not evaluate
    started = _by_pid(rc.events(log))
    assert len(started) == 1
    late = "second" if next(iter(started.values()))["model"] == "first" else "first"
    assert f"{late:<20} echo                 failed" in out and "its suites differ from the driver's: echo is" in out, out
    assert "deploy the same suite files and evalsvc version to every node" in out
    assert late not in {r.variant_name for r in _runs(store)}  # nothing was claimed under the other version


def test_a_node_whose_store_differs_from_the_drivers_refuses_rather_than_write_elsewhere(tmp_path: Path, head: rc.Head) -> None:
    log = tmp_path / "servers.jsonl"
    config = rc.project(tmp_path, f"sqlite:///{tmp_path / 'yaml.db'}", head.address, rc.stand_in("w8a8", 1, log))
    driver_store = f"sqlite:///{tmp_path / 'driver.db'}"  # the driver's EVALSVC_STORE; the nodes have none
    done = rc.fire(config, extra_env={"EVALSVC_STORE": driver_store})
    assert done.returncode == 2, done.stdout + done.stderr  # its run failed: could not evaluate
    # with EVALSVC_STORE set, the driver's config leaves `store:` unread: a node without it has the default store
    assert f"its store is sqlite:///{tmp_path / 'evalsvc.db'}, the driver's {driver_store}" in done.stdout, done.stdout
    assert "give every node of the cluster the same EVALSVC_STORE" in done.stdout
    assert not log.exists() and not (tmp_path / "evalsvc.db").exists()  # nothing served, nothing written elsewhere
