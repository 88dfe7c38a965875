"""Model servers start without evalsvc's secrets: the Ray token, the store's URL and passwords, API keys, webhooks."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from evalsvc.config import load_config
from evalsvc.serving import llamacpp, vllm
from evalsvc.serving.environment import server_env
from tests.conftest import write_config

SECRETS = {"RAY_AUTH_TOKEN": "t", "EVALSVC_STORE": "postgresql+psycopg://u:pw@db/e", "PGPASSWORD": "pw",
           "OPENAI_API_KEY": "k", "EVALSVC_SLACK_WEBHOOK": "https://hooks", "SLACK_BOT_TOKEN": "x"}
KEPT = {"HF_TOKEN": "hf", "CUDA_VISIBLE_DEVICES": "2,3", "HF_HOME": "/models/hf", "PATH": "/usr/bin"}


def test_server_env_drops_the_secrets_and_keeps_what_a_server_needs() -> None:
    env = server_env({**SECRETS, **KEPT}, OMP_NUM_THREADS="4")
    assert env == {**KEPT, "OMP_NUM_THREADS": "4"}


@pytest.mark.parametrize("engine", ["vllm", "llama.cpp"])
def test_a_launched_model_server_gets_no_secret_of_its_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            engine: str) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    local = "{engine: vllm, model_path: m}" if engine == "vllm" else "{model_path: m.gguf}"
    write_config(tmp_path, f"variants:\n  - name: v\n    family: f\n    local: {local}\n")
    variant = load_config(tmp_path / "evalsvc.yaml").variants[0]
    for name, value in {**SECRETS, **KEPT}.items():
        monkeypatch.setenv(name, value)
    seen: dict[str, str] = {}

    @contextmanager
    def launched(cmd: list[str], env: dict[str, str], *args: Any, **kwargs: Any) -> Any:
        seen.update(env)
        yield None

    module = vllm if engine == "vllm" else llamacpp
    monkeypatch.setattr(module, "launched", launched)
    backend = vllm.VllmBackend() if engine == "vllm" else llamacpp.LlamaCppBackend()
    with backend.serve(variant, tmp_path / "logs"):
        pass
    assert seen and not set(SECRETS) & set(seen), sorted(set(SECRETS) & set(seen))
    assert {k: seen[k] for k in KEPT} == KEPT
