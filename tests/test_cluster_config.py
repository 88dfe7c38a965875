"""Executor type ray without a cluster: the setting, each variant's resources, and the checks made before submitting."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalsvc.cluster.jobs import entrypoint, submission_id
from evalsvc.cluster.resources import demand, task_options
from evalsvc.cluster.validate import check_fit, check_store
from evalsvc.config import load_config
from evalsvc.errors import ConfigError
from evalsvc.serving.vllm import command
from tests.conftest import write_config

VARIANTS = """
variants:
  - name: fp8-tp2
    family: llama
    local: {engine: vllm, model_path: m, tensor_parallel_size: 2, data_parallel_size: 2}
  - name: q4
    family: llama
    local: {model_path: q4.gguf, n_threads: 6}
  - name: api
    family: llama
    endpoint: {base_url: "http://127.0.0.1:9/v1", model: m}
"""


def _cfg(tmp_path: Path, body: str):
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "q4.gguf").write_bytes(b"GGUF")
    write_config(tmp_path, body)
    return load_config(tmp_path / "evalsvc.yaml")


def test_the_default_executor_is_local_and_ray_takes_its_settings(tmp_path: Path) -> None:
    assert _cfg(tmp_path, "variants: []\n").executor.type == "local"
    cfg = _cfg(tmp_path, "executor: {type: ray, address: 'ray://head:10001', task_retries: 3, lock_wait_s: 60, "
               "schedule_timeout_s: 900, run_timeout_s: 7200}\n")
    ex = cfg.executor
    assert (ex.type, ex.address, ex.task_retries, ex.lock_wait_s, ex.schedule_timeout_s, ex.run_timeout_s) == (
        "ray", "ray://head:10001", 3, 60, 900, 7200)
    with pytest.raises(ConfigError, match="executor"):
        _cfg(tmp_path, "executor: {type: slurm}\n")


def test_each_variant_asks_ray_for_what_its_engine_uses(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "executor: {type: ray}\n" + VARIANTS)
    vllm, llama, api = cfg.variants
    assert demand(vllm, cfg.executor) == {"CPU": 1.0, "GPU": 4.0}  # tensor_parallel_size x data_parallel_size
    assert demand(llama, cfg.executor) == {"CPU": 6.0, "GPU": 0.0}  # n_threads
    assert demand(api, cfg.executor) == {"CPU": 0.25, "GPU": 0.0}  # a small CPU share
    options = task_options(vllm, cfg.executor)
    assert options["num_gpus"] == 4 and options["max_retries"] == 2 and options["retry_exceptions"] is False
    assert "--data-parallel-size" in command(vllm.local, vllm.name, 8000)


def test_an_accelerator_type_places_the_task_and_is_not_part_of_the_fingerprint(tmp_path: Path) -> None:
    base = "executor: {type: ray}\n" + VARIANTS
    plain = _cfg(tmp_path, base)
    placed = _cfg(tmp_path, base.replace("    local: {engine: vllm", "    placement: {accelerator_type: H100}\n"
                                          "    local: {engine: vllm", 1))
    assert task_options(placed.variants[0], placed.executor)["accelerator_type"] == "H100"
    assert "accelerator_type" not in task_options(plain.variants[0], plain.executor)
    assert placed.fingerprint("fp8-tp2") == plain.fingerprint("fp8-tp2")


def test_gpu_ids_are_refused_with_the_ray_executor(tmp_path: Path) -> None:
    body = "executor: {type: ray}\n" + VARIANTS.replace("data_parallel_size: 2}", "data_parallel_size: 2, gpu_ids: [0, 1]}")
    with pytest.raises(ConfigError, match="gpu_ids with executor type ray; Ray hands each task its GPUs"):
        _cfg(tmp_path, body)
    assert _cfg(tmp_path, body.replace("executor: {type: ray}\n", "")).variants[0].local.gpu_ids == [0, 1]


NODE = {"Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 16.0, "GPU": 2.0, "accelerator_type:A100": 1.0}}


def test_a_variant_no_node_can_take_is_refused_naming_it_and_the_node_types(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "executor: {type: ray}\n" + VARIANTS)
    with pytest.raises(ConfigError) as err:
        check_fit(cfg.variants, cfg.executor, [NODE, {**NODE, "Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}])
    text = str(err.value)
    assert "variant 'fp8-tp2' needs 1 CPU, 4 GPU on one node" in text and "node types: 16 CPU, 2 GPU, A100" in text
    assert "q4" not in text.split("fix:")[0] and "pending forever" in text
    check_fit(cfg.variants[1:], cfg.executor, [NODE])
    placed = _cfg(tmp_path, "executor: {type: ray}\n" + VARIANTS.replace(
        "    local: {model_path: q4.gguf", "    placement: {accelerator_type: H100}\n    local: {model_path: q4.gguf"))
    with pytest.raises(ConfigError, match="variant 'q4' needs 6 CPU, 0 GPU, accelerator H100"):
        check_fit(placed.variants[1:], placed.executor, [NODE])


def test_sqlite_is_refused_for_a_cluster_of_several_machines() -> None:
    other = {**NODE, "NodeManagerAddress": "10.0.0.2"}
    with pytest.raises(ConfigError, match="use PostgreSQL"):
        check_store("sqlite:///x.db", [NODE, other], "10.0.0.1")
    check_store("sqlite:///x.db", [NODE, {**NODE}], "10.0.0.1")  # one machine (a simulated multi-node cluster): fine
    check_store("postgresql+psycopg://db/evalsvc", [NODE, other], "10.0.0.1")


def test_sqlite_is_refused_for_a_one_node_cluster_on_another_machine() -> None:
    with pytest.raises(ConfigError, match="use PostgreSQL"):  # the file would be created there, not here
        check_store("sqlite:///x.db", [NODE], "10.0.0.9")
    with pytest.raises(ConfigError, match="use PostgreSQL"):
        check_store("sqlite:///x.db", [NODE], "10.0.0.1", "ray://gpubox:10001")


def test_a_cluster_address_nothing_listens_on_is_refused_at_once_naming_it() -> None:
    pytest.importorskip("ray")
    import time

    from evalsvc.cluster.executor import connect
    from evalsvc.config.executor import RayExecutor

    began = time.monotonic()
    with pytest.raises(ConfigError, match=r"cannot join the Ray cluster at '127\.0\.0\.1:1'"):
        connect(RayExecutor(type="ray", address="127.0.0.1:1"))
    assert time.monotonic() - began < 10  # ray.init itself would retry for minutes


def test_a_firings_submission_id_is_its_stores_tag_schedule_slot_and_attempt() -> None:
    assert submission_id("0a1b2c3d", "nightly", "2026-12-02T03:00Z", 2) == "evalsvc-0a1b2c3d-nightly-2026-12-02T0300Z-2"
    assert entrypoint("/etc/evalsvc/evalsvc.yaml", "nightly", "2026-12-02T03:00Z", "x") == (
        "evalsvc fire nightly --slot 2026-12-02T03:00Z --config /etc/evalsvc/evalsvc.yaml --submission-id x")
