"""Firings as Ray Jobs against a stand-in of Ray's Jobs REST API: ids, attempts, re-fires and an absent head.

The stand-in answers /api/jobs/ as Ray 2.60's dashboard does (POST: 200, or 400 "... already exists"; GET: the job with
its status and metadata, or 404). A test plays the job's driver (`evalsvc fire`) by closing the firing row, or not,
when a job is posted. tests/test_ray.py runs the same lifecycle against a real Ray head.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.config import load_config
from evalsvc.service import ray_firings
from evalsvc.service.runs import open_store
from evalsvc.store.schema import Firing
from tests.conftest import echo_cases, write_config, write_suite

SLOT = "2026-12-02T03:00Z"


class JobsApi:
    """Jobs by submission id: {"status", "metadata"}; ``on_post(sub, body)`` runs after each accepted submission."""

    def __init__(self, port: int = 0) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.posted: list[str] = []
        self.on_post: Callable[[str, dict[str, Any]], None] = lambda sub, body: None
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: str) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                sub = body["submission_id"]
                if sub in api.jobs:
                    return self._send(400, f"Traceback ...\nValueError: Job with submission_id {sub} already exists. "
                                           "Please use a different submission_id.")
                api.jobs[sub] = {"status": "RUNNING", "message": "", "metadata": body["metadata"]}
                api.posted.append(sub)
                on_post = api.on_post  # the hook in force when this job was accepted, not one a test sets afterwards
                self._send(200, json.dumps({"submission_id": sub}))
                on_post(sub, body)

            def do_GET(self) -> None:
                sub = self.path.rstrip("/").split("/")[-1]
                if sub not in api.jobs:
                    return self._send(404, "Job does not exist")
                self._send(200, json.dumps({"submission_id": sub, **api.jobs[sub]}))

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[JobsApi]:
    monkeypatch.setattr(ray_firings, "POLL_S", 0.05)
    server = JobsApi()
    yield server
    server.close()


def _project(folder: Path, jobs_url: str, retries: int = 2, jobs_retry_s: float | None = None) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
    write_suite(folder / "suites", "echo", echo_cases(1))
    retry = f", jobs_retry_s: {jobs_retry_s}" if jobs_retry_s is not None else ""
    write_config(folder, f"""\
store: sqlite:///{folder / 'store.db'}
executor: {{type: ray, jobs_url: "{jobs_url}", task_retries: {retries}{retry}}}
schedules: [{{name: nightly, cron: "0 3 * * *", compare: false}}]
variants:
  - name: api
    family: f
    endpoint: {{base_url: "http://127.0.0.1:9/v1", model: m}}
""")
    return load_config(folder / "evalsvc.yaml")


def _row(cfg: Any) -> Firing:
    with Session(open_store(cfg)) as s:
        row = s.scalars(select(Firing).order_by(Firing.id.desc())).first()
        s.expunge_all()
    assert row is not None
    return row


def _driver_closes(cfg: Any, api: JobsApi, outcome: str = "done") -> Callable[[str, dict[str, Any]], None]:
    """Play `evalsvc fire`: close the firing row as ``outcome``, then the job ends (SUCCEEDED, or FAILED on error)."""
    def on_post(sub: str, body: dict[str, Any]) -> None:
        ray_firings._end(cfg, int(body["metadata"]["evalsvc_firing"]), outcome, None if outcome == "done" else "boom")
        api.jobs[sub]["status"] = "SUCCEEDED" if outcome == "done" else "FAILED"
    return on_post


def test_two_stores_sharing_a_ray_cluster_submit_their_own_jobs_for_the_same_schedule_and_slot(
        tmp_path: Path, api: JobsApi) -> None:
    prod, staging = _project(tmp_path / "prod", api.url), _project(tmp_path / "staging", api.url)
    _, prod_sub = ray_firings.submit(prod, str(tmp_path / "prod" / "evalsvc.yaml"), prod.schedules[0], SLOT)
    _, staging_sub = ray_firings.submit(staging, str(tmp_path / "staging" / "evalsvc.yaml"), staging.schedules[0], SLOT)
    assert prod_sub != staging_sub and api.posted == [prod_sub, staging_sub]  # staging did not adopt prod's job
    tags = [api.jobs[sub]["metadata"]["evalsvc_store"] for sub in api.posted]
    assert tags[0] != tags[1] and all(f"evalsvc-{tag}-nightly-" in sub for tag, sub in zip(tags, api.posted, strict=True))


def test_a_job_that_is_not_this_stores_firing_under_its_id_is_refused_not_adopted(tmp_path: Path, api: JobsApi) -> None:
    cfg = _project(tmp_path, api.url)
    sub = f"evalsvc-{ray_firings.store_tag(cfg)}-nightly-{SLOT.replace(':', '')}-1"
    api.jobs[sub] = {"status": "RUNNING", "message": "", "metadata": {"evalsvc_store": "someone", "evalsvc_firing": "7"}}
    with pytest.raises(ray_firings.JobsError, match="not this store's firing"):
        ray_firings.submit(cfg, str(tmp_path / "evalsvc.yaml"), cfg.schedules[0], SLOT)
    assert _row(cfg).status == "error"


def test_a_job_lost_while_the_scheduler_watches_is_submitted_again_as_the_next_attempt(tmp_path: Path, api: JobsApi) -> None:
    cfg = _project(tmp_path, api.url)
    fid, sub = ray_firings.submit(cfg, str(tmp_path / "evalsvc.yaml"), cfg.schedules[0], SLOT)
    api.jobs.clear()  # the head was replaced: the new one knows no job
    api.on_post = _driver_closes(cfg, api)  # the second attempt's driver finishes the firing
    status, last = ray_firings.watch(cfg, str(tmp_path / "evalsvc.yaml"), fid, sub)
    assert status == "SUCCEEDED" and last == sub[:-1] + "2" and api.posted == [sub, last]
    row = _row(cfg)
    assert (row.id, row.status, row.attempt, row.submission_id) == (fid, "done", 2, last)
    assert [(a["submission_id"], a.get("ended")) for a in row.attempts] == [(sub, "MISSING"), (last, "SUCCEEDED")]


def test_jobs_that_keep_failing_before_their_driver_closes_the_firing_are_submitted_task_retries_plus_one_times(
        tmp_path: Path, api: JobsApi) -> None:
    cfg = _project(tmp_path, api.url, retries=2)

    def dies(sub: str, body: dict[str, Any]) -> None:  # the driver is killed each time: the row stays running
        api.jobs[sub]["status"] = "FAILED"
    api.on_post = dies
    summary = ray_firings.submit_and_watch(cfg, str(tmp_path / "evalsvc.yaml"), cfg.schedules[0], SLOT)
    assert summary["status"] == "FAILED" and len(api.posted) == 3
    row = _row(cfg)
    assert row.status == "error" and row.attempt == 3 and "3 attempts made, task_retries 2" in row.error, row.error
    assert [a.get("ended") for a in row.attempts] == ["FAILED"] * 3


def test_a_firing_its_driver_closed_as_an_error_is_not_submitted_again(tmp_path: Path, api: JobsApi) -> None:
    cfg = _project(tmp_path, api.url)
    api.on_post = _driver_closes(cfg, api, "error")
    summary = ray_firings.submit_and_watch(cfg, str(tmp_path / "evalsvc.yaml"), cfg.schedules[0], SLOT)
    assert summary["status"] == "FAILED" and len(api.posted) == 1
    assert _row(cfg).status == "error" and _row(cfg).error == "boom"


def test_firing_a_finished_slot_again_submits_a_new_attempt_that_the_driver_closes(tmp_path: Path, api: JobsApi) -> None:
    cfg = _project(tmp_path, api.url)
    api.on_post = _driver_closes(cfg, api)
    first = ray_firings.submit_and_watch(cfg, str(tmp_path / "evalsvc.yaml"), cfg.schedules[0], SLOT)
    assert first["status"] == "SUCCEEDED" and _row(cfg).status == "done"
    again = ray_firings.submit_and_watch(cfg, str(tmp_path / "evalsvc.yaml"), cfg.schedules[0], SLOT)  # run-now
    assert again["status"] == "SUCCEEDED" and again["submission_id"] == first["submission_id"][:-1] + "2"
    assert len(api.posted) == 2
    row = _row(cfg)
    assert row.status == "done" and row.attempt == 2 and row.finished_at is not None


def test_firing_a_slot_whose_job_is_still_running_watches_that_job_instead_of_submitting_another(
        tmp_path: Path, api: JobsApi) -> None:
    cfg = _project(tmp_path, api.url)
    fid, sub = ray_firings.submit(cfg, str(tmp_path / "evalsvc.yaml"), cfg.schedules[0], SLOT)
    assert ray_firings.submit(cfg, str(tmp_path / "evalsvc.yaml"), cfg.schedules[0], SLOT) == (fid, sub)
    assert api.posted == [sub]


def test_a_submission_while_the_head_does_not_answer_is_tried_again_until_it_does(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _project(tmp_path, f"http://127.0.0.1:{port}")
    later: list[JobsApi] = []
    threading.Timer(1.5, lambda: later.append(JobsApi(port))).start()  # the head pod comes back
    try:
        _, sub = ray_firings.submit(cfg, str(tmp_path / "evalsvc.yaml"), cfg.schedules[0], SLOT)
        assert later and later[0].posted == [sub]
        assert _row(cfg).status == "running"
    finally:
        for server in later:
            server.close()


def test_the_scheduler_starts_while_the_head_does_not_answer_and_settles_its_firings_once_it_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_firings, "POLL_S", 0.05)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _project(tmp_path, f"http://127.0.0.1:{port}", jobs_retry_s=0)
    with Session(open_store(cfg)) as s, s.begin():
        s.add(Firing(schedule="nightly", slot=SLOT, runs={}, alerts={}, status="running", attempt=1,
                     submission_id="evalsvc-gone-nightly-1", attempts=[{"submission_id": "evalsvc-gone-nightly-1"}]))
    stop = threading.Event()
    acted = ray_firings.reconcile(cfg, str(tmp_path / "evalsvc.yaml"), stop)  # returns: `evalsvc serve` goes on
    assert [what for _, _, what in acted] == ["the Ray head does not answer; watching"]
    server = JobsApi(port)  # the head is back, without the job: the watcher submits the next attempt
    try:
        deadline = time.time() + 30
        while not server.posted and time.time() < deadline:
            time.sleep(0.1)
        assert len(server.posted) == 1 and server.posted[0].endswith("-2"), server.posted
    finally:
        stop.set()
        server.close()
