"""Ray's Jobs REST API (the dashboard's /api/jobs/), as `evalsvc serve` uses it: submit, read a job, stop.

A firing is submitted as a Ray Job whose driver is `evalsvc fire SCHEDULE --slot SLOT`; its submission id is made of
the store's tag (its identity: another evalsvc store sharing the Ray cluster makes other ids), the schedule, the slot
and the attempt, and Ray refuses a second job with the same id, so an attempt is never submitted twice. The job runs
on the cluster, so restarting the scheduler does not stop it. No Ray install is needed here: plain HTTP.
RAY_AUTH_TOKEN, when set, is sent as a bearer token (Ray's token authentication). A head that does not answer, or
answers 5xx (its job agent starting or restarting), is tried again with backoff for ``retry_s``.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from typing import Any

import httpx

from evalsvc.errors import EvalsvcError

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class JobsError(EvalsvcError):
    """The Ray Jobs API refused a request or could not be reached."""


class DuplicateSubmission(JobsError):
    """A job with this submission id exists already (Ray refused it)."""


class Unreachable(JobsError):
    """The Jobs API did not answer (or kept answering 5xx) for as long as the client retried."""


def submission_id(store: str, schedule: str, slot: str, attempt: int) -> str:
    """``evalsvc-<store tag>-<schedule>-<slot>-<attempt>``, with the slot's ':' left out (ids are used in URLs)."""
    return f"evalsvc-{store}-{schedule}-{re.sub(r'[^A-Za-z0-9_.-]', '', slot)}-{attempt}"


def entrypoint(config_path: str, schedule: str, slot: str, sub_id: str) -> str:
    return " ".join(shlex.quote(a) for a in ["evalsvc", "fire", schedule, "--slot", slot, "--config", config_path,
                                             "--submission-id", sub_id])


class JobsClient:
    def __init__(self, url: str, timeout_s: float = 30.0, retry_s: float = 180.0) -> None:
        token = os.environ.get("RAY_AUTH_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.retry_s = retry_s
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer; no answer or a 5xx is tried again (1, 2, 4 ... 30 s apart) until ``retry_s`` has passed."""
        deadline, pause = time.monotonic() + self.retry_s, 1.0
        while True:
            try:
                resp = self.http.request(method, path, **kwargs)
                if resp.status_code < 500 or "already exists" in resp.text:
                    return resp
                why = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                why = str(exc) or type(exc).__name__
            if time.monotonic() + pause > deadline:
                raise Unreachable(f"cannot reach Ray's Jobs API at {self.url} ({why}, tried for {self.retry_s:g} s); is "
                                  "the Ray head up, and executor.jobs_url its dashboard address (port 8265)?")
            time.sleep(pause)
            pause = min(pause * 2, 30.0)

    def submit(self, sub_id: str, command: str, metadata: dict[str, str]) -> None:
        body = {"entrypoint": command, "submission_id": sub_id, "metadata": metadata, "entrypoint_num_cpus": 0}
        resp = self._call("POST", "/api/jobs/", json=body)
        if resp.status_code >= 400:  # Ray answers with its traceback: the last line says why
            if "already exists" in resp.text:
                raise DuplicateSubmission(f"Ray already has a job {sub_id}")
            why = next((line for line in reversed(resp.text.strip().splitlines()) if line.strip(" .")), "")
            raise JobsError(f"Ray refused job {sub_id} (HTTP {resp.status_code}): {why[-500:]}")

    def job(self, sub_id: str) -> dict[str, Any] | None:
        """Ray's record of the job (status, message, metadata...); None when Ray does not know the id."""
        resp = self._call("GET", f"/api/jobs/{sub_id}")
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise JobsError(f"Ray's Jobs API answered HTTP {resp.status_code} for {sub_id}: {resp.text[:300]}")
        return dict(resp.json())

    def status(self, sub_id: str) -> tuple[str, str]:
        """(status, message); status "MISSING" when Ray does not know the id (its head was replaced)."""
        body = self.job(sub_id)
        if body is None:
            return "MISSING", f"Ray has no job {sub_id}"
        return str(body.get("status")), str(body.get("message") or "")

    def logs(self, sub_id: str) -> str:
        """The job driver's output (`evalsvc fire`'s), as Ray kept it."""
        resp = self._call("GET", f"/api/jobs/{sub_id}/logs")
        return str(resp.json().get("logs", "")) if resp.status_code == 200 else ""

    def stop(self, sub_id: str) -> None:
        self._call("POST", f"/api/jobs/{sub_id}/stop")

    def close(self) -> None:
        self.http.close()
