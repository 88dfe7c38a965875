"""The Ray driver's decisions without a cluster: when a waiting task is out of time, and what each Ray error becomes
(and, in a task, which GPUs its model server may see).

tests/test_ray.py checks the same on a real local Ray cluster where a cluster can show it (a variant waiting for the
GPUs of its firing's other variant); here the cases a cluster cannot stage on demand (a node type gone, Ray's memory
monitor, a lost raylet) are given as Ray would report them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from evalsvc.cluster.capacity import Waiting
from evalsvc.cluster.resources import demand, max_calls
from evalsvc.cluster.validate import check_engine_args, wait_for_fit
from evalsvc.config import load_config
from evalsvc.errors import ConfigError
from tests.conftest import write_config

ONE_NODE = [{"CPU": 4.0, "GPU": 4.0}]


def _cfg(tmp_path: Path, timeout: float = 60, run_timeout: float = 86400) -> Any:
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "config.json").write_text("{}")
    write_config(tmp_path, f"""\
executor: {{type: ray, schedule_timeout_s: {timeout}, run_timeout_s: {run_timeout}}}
variants:
  - name: tp4
    family: f
    local: {{engine: vllm, model_path: m, tensor_parallel_size: 4}}
""")
    return load_config(tmp_path / "evalsvc.yaml")


def test_a_task_waiting_while_other_tasks_hold_the_gpus_is_never_out_of_time(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    (v,) = cfg.variants
    waiting = Waiting(cfg.executor, submitted=0.0)
    for now in (10.0, 100.0, 1000.0):  # the node is busy (no free GPU) the whole time
        waiting.update(now, [v], ONE_NODE, [{"CPU": 3.0, "GPU": 0.0}])
    assert waiting.overdue(v, 1000.0) is None


def test_the_clock_runs_from_when_a_node_had_room_for_the_task(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, timeout=60)
    (v,) = cfg.variants
    waiting = Waiting(cfg.executor, submitted=0.0)
    waiting.update(500.0, [v], ONE_NODE, [{"CPU": 3.0, "GPU": 0.0}])
    waiting.update(1000.0, [v], ONE_NODE, ONE_NODE)  # room from here on
    assert waiting.overdue(v, 1059.0) is None
    why = waiting.overdue(v, 1061.0)
    assert why is not None and why.startswith("capacity: variant tp4's task was not started within schedule_timeout_s "
                                              "(60 s; it needs 1 CPU, 4 GPU): a node had room for it"), why


def test_a_task_no_live_node_can_hold_is_out_of_time_counted_from_the_firing(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, timeout=60)
    (v,) = cfg.variants
    waiting = Waiting(cfg.executor, submitted=0.0)
    waiting.update(30.0, [v], [{"CPU": 8.0, "GPU": 0.0}], [{"CPU": 8.0, "GPU": 0.0}])  # the GPU nodes are gone
    assert waiting.overdue(v, 59.0) is None
    why = waiting.overdue(v, 61.0)
    assert why is not None and "no live node of the Ray cluster can hold it" in why and why.startswith("capacity:"), why


def test_a_cluster_busy_with_other_work_ends_the_wait_after_run_timeout_s_as_a_capacity_problem(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, timeout=60, run_timeout=600)
    (v,) = cfg.variants
    waiting = Waiting(cfg.executor, submitted=0.0)
    waiting.update(601.0, [v], ONE_NODE, [{"CPU": 3.0, "GPU": 0.0}])
    why = waiting.overdue(v, 601.0)
    assert why is not None and why.startswith("capacity: variant tp4's task waited run_timeout_s (600 s"), why


RAY_ERRORS = ["OutOfMemoryError", "OutOfDiskError", "RaySystemError", "LocalRayletDiedError", "TaskUnschedulableError",
              "RuntimeEnvSetupError", "WorkerCrashedError", "NodeDiedError"]


@pytest.mark.parametrize("name", RAY_ERRORS)
def test_every_ray_error_of_a_task_ends_that_variants_runs_with_its_cause(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    rx = pytest.importorskip("ray.exceptions")
    from evalsvc.cluster import executor

    exc = getattr(rx, name)(f"{name} stand-in") if name not in ("WorkerCrashedError", "LocalRayletDiedError") else \
        getattr(rx, name)()

    class Ray:
        def get(self, ref: Any, timeout: float | None = None) -> Any:
            raise exc

    ended: list[tuple[str, str]] = []
    monkeypatch.setattr(executor, "fail_runs", lambda engine, suites, variant, slot, why, **kw: ended.append((variant, why))
                        or ["failed"])
    cfg = _cfg(tmp_path)
    out = executor._collect(Ray(), None, cfg.variants[0], None, [], "slot", cfg.executor, "fp")
    assert out == ["failed"] and ended[0][0] == "tp4"
    assert name in ended[0][1] or "worker died" in ended[0][1], ended


def test_pipeline_parallel_stages_are_counted_in_gpus_and_a_ray_backend_inside_a_task_is_refused(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    (v,) = cfg.variants
    assert demand(v, cfg.executor)["GPU"] == 4
    staged = v.model_copy(update={"local": v.local.model_copy(update={"extra_args": {"pipeline_parallel_size": 2}})})
    assert demand(staged, cfg.executor)["GPU"] == 8  # 4 GPUs a stage, 2 stages, on one node
    check_engine_args([staged])
    on_ray = v.model_copy(update={"local": v.local.model_copy(update={"extra_args": {"distributed_executor_backend": "ray"}})})
    with pytest.raises(ConfigError, match="distributed_executor_backend 'ray' with executor type ray"):
        check_engine_args([on_ray])


def test_a_gpu_task_gets_a_fresh_worker_and_a_cpu_task_may_reuse_one(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    (v,) = cfg.variants
    assert max_calls(v, cfg.executor) == 1  # no CUDA context left on GPUs Ray counts as free
    api = v.model_copy(update={"local": None, "endpoint": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}})
    assert max_calls(api, cfg.executor) == 0


def test_a_gpu_node_being_replaced_at_fire_time_is_waited_for_then_the_firing_goes_on(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    head = {"Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 4.0}}
    gpu = {"Alive": True, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 8.0, "GPU": 4.0}}
    reads = iter([[head], [head, {**gpu, "Alive": False}], [head, gpu]])  # the GPU pod is replaced, then back
    slept: list[float] = []
    assert wait_for_fit(cfg.variants, cfg.executor, lambda: next(reads), slept.append) == [head, gpu]
    assert len(slept) == 2


def test_a_variant_no_node_takes_within_fit_wait_s_is_refused(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    head = {"Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 4.0}}
    slept: list[float] = []
    with pytest.raises(ConfigError, match="variant 'tp4' needs 1 CPU, 4 GPU on one node"):
        wait_for_fit(cfg.variants, cfg.executor, lambda: [head], slept.append)
    assert sum(slept) == cfg.executor.fit_wait_s


class _FakeRay:
    """Ray as the driver sees it, on a clock: a GPU node "a" beside a GPU-less head; the task starts on "a" at
    ``start_at`` and "a" is lost at ``lost_at``, after which Ray's rerun of the task never starts."""

    def __init__(self, start_at: float, lost_at: float, made: dict[str, Any] | None = None) -> None:
        self.now, self.start_at, self.lost_at, self.made = 0.0, start_at, lost_at, made  # made: what the task returns
        self.cancelled: list[tuple[float, bool]] = []
        self.sent: list[tuple[Any, ...]] = []
        self.util = type("util", (), {"get_node_ip_address": staticmethod(lambda: "127.0.0.1")})

    def time(self) -> float:
        return self.now

    def nodes(self) -> list[dict[str, Any]]:
        head = {"NodeID": "h", "Alive": True, "NodeManagerAddress": "127.0.0.1", "Resources": {"CPU": 4.0}}
        a = {"NodeID": "a", "Alive": self.now < self.lost_at, "NodeManagerAddress": "127.0.0.1",
             "Resources": {"CPU": 4.0, "GPU": 4.0}}
        return [head, a]

    def free(self) -> dict[str, dict[str, float]]:  # "a" is busy with the task while it is up
        return {"h": {"CPU": 4.0}, "a": {"CPU": 3.0, "GPU": 0.0}}

    def starts(self, *_: Any) -> dict[str, list[tuple[float, str, str]]]:
        return {"tp4": [(self.start_at, "a", "0,1,2,3")]} if self.now >= self.start_at else {}

    def remote(self, **_: Any) -> Any:
        task = type("task", (), {})()
        task.options = lambda **kw: task
        task.remote = lambda *args: self.sent.append(args) or "ref"
        return lambda fn: task

    def wait(self, refs: list[Any], num_returns: int, timeout: float) -> tuple[list[Any], list[Any]]:
        self.now += 1.0
        assert self.now < 1000, "the driver never gave up on the rerun"
        return (refs, []) if self.made else ([], refs)

    def get(self, ref: Any, timeout: float | None = None) -> Any:
        return self.made

    def cancel(self, ref: Any, force: bool, recursive: bool) -> None:
        self.cancelled.append((self.now, force))


def _driven(monkeypatch: pytest.MonkeyPatch, ray: _FakeRay) -> tuple[Any, list[tuple[str, str, str]]]:
    """The driver module, on ``ray`` and its clock; the runs it ends are recorded, not written."""
    pytest.importorskip("ray")
    from ray._private import state

    from evalsvc.cluster import executor

    ended: list[tuple[str, str, str]] = []
    monkeypatch.setattr(executor, "connect", lambda ex: ray)
    monkeypatch.setattr(executor, "time", ray)
    monkeypatch.setattr(executor, "_board", lambda r: None)
    monkeypatch.setattr(executor, "_snapshot", lambda r, board, last: ray.starts())
    monkeypatch.setattr(executor.validate, "check_store", lambda *a, **k: None)
    monkeypatch.setattr(state, "available_resources_per_node", ray.free)
    monkeypatch.setattr(executor, "fail_runs", lambda engine, suites, variant, slot, why, status="failed", **kw:
                        ended.append((variant, why, status)) or [status])
    return executor, ended


def test_a_task_rerun_after_its_node_was_lost_is_timed_from_then_not_from_its_first_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tmp_path, timeout=60)
    ray = _FakeRay(start_at=5.0, lost_at=100.0)
    executor, ended = _driven(monkeypatch, ray)
    assert executor.run_on_ray(cfg, None, [], cfg.variants, "slot", tmp_path) == ["cancelled"]
    ((when, force),) = ray.cancelled
    assert 100 + 60 < when < 100 + 60 + 5 and not force  # the pending rerun, 60 s after the loss was seen
    ((variant, why, status),) = ended
    assert variant == "tp4" and status == "cancelled"
    assert why.startswith("capacity: variant tp4's task (rerun: the node it started on was lost) was not started within "
                          "schedule_timeout_s (60 s; it needs 1 CPU, 4 GPU): no live node of the Ray cluster can hold it"), why


def test_a_variant_whose_fingerprint_the_driver_cannot_compute_takes_its_tasks_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    write_config(tmp_path, """\
executor: {type: ray}
variants:
  - name: tp4
    family: f
    local: {engine: vllm, model_path: m, tensor_parallel_size: 4, python: /only/on/the/gpu/pods/bin/python}
""")
    cfg = load_config(tmp_path / "evalsvc.yaml")
    with pytest.raises(ConfigError):  # the driver's node has no such interpreter
        cfg.fingerprint("tp4")
    made = {"fingerprint": "f" * 64, "node": "gpu-pod-1",
            "outcomes": [{"run_id": 7, "suite": "echo", "variant": "tp4", "status": "succeeded", "n_cases": 4, "n_ok": 4}]}
    ray = _FakeRay(start_at=0.0, lost_at=1e9, made=made)
    executor, ended = _driven(monkeypatch, ray)
    with caplog.at_level("WARNING", logger=executor.log.name):
        (outcome,) = executor.run_on_ray(cfg, None, [], cfg.variants, "slot", tmp_path)
    assert (outcome.run_id, outcome.status) == (7, "succeeded") and ended == []  # exactly the run the task made
    assert ray.sent[0][-1] is None  # the task is not asked to match a fingerprint the driver does not have
    said = caplog.text
    assert "variant tp4: this node cannot compute its fingerprint" in said and "/only/on/the/gpu/pods/bin/python" in said
    assert "give this node what the variant needs" in said and "fingerprint ffffffffffff, computed on node gpu-pod-1" in said


@pytest.mark.parametrize(("gpu_ids", "given", "seen"), [([], None, ""), ([], "0,1,2,3", ""), ([2, 3], "2,3", "2,3")])
def test_a_gpu_less_task_and_the_model_server_it_starts_see_no_gpu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpu_ids: list[int], given: str | None, seen: str) -> None:
    """Ray leaves a task that asked for no GPU the CUDA_VISIBLE_DEVICES its worker had (none: every GPU of the node);
    the task hides them all, so neither its scorers nor its model server take a GPU Ray gave another task."""
    from evalsvc.cluster import task
    from evalsvc.errors import SuiteError
    from evalsvc.serving.environment import server_env
    from evalsvc.serving.process import DEVICE_SCOPE_ENV

    for name, value in (("CUDA_VISIBLE_DEVICES", given), (DEVICE_SCOPE_ENV, None)):
        monkeypatch.setenv(name, "restored after the test")
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    context = type("context", (), {"get_node_id": lambda self: "node-1"})()
    fake = type("ray", (), {"get_runtime_context": staticmethod(lambda: context),
                            "get_gpu_ids": staticmethod(lambda: gpu_ids)})
    monkeypatch.setitem(sys.modules, "ray", fake)
    told: list[tuple[str, str, str]] = []
    board = type("board", (), {"started": type("m", (), {"remote": staticmethod(lambda *a: told.append(a))})()})()
    cfg = _cfg(tmp_path)
    with pytest.raises(SuiteError, match="no such suite"):  # stops the task right after it set up its devices
        task.evaluate(cfg, "tp4", {"no-such-suite": "v"}, "slot", str(tmp_path), 0, board)
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == seen and server_env().get("CUDA_VISIBLE_DEVICES") == seen
    assert told == [("tp4", "node-1", seen)]
