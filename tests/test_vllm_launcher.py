"""The vLLM launcher's command, lifecycle and failure paths, with a stand-in server process."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from evalsvc.config import load_config
from evalsvc.config.variants import Generation, fingerprint
from evalsvc.engine.runner import Runner
from evalsvc.errors import ServingError
from evalsvc.serving import serve
from evalsvc.store.db import open_engine
from evalsvc.suites import resolve
from tests.conftest import ROOT, write_config, write_suite


def _project(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    write_suite(tmp_path / "suites", "echo", '{"id": "a", "input": "say 1", "checks": [{"type": "contains", "value": "1"}]}')
    write_config(tmp_path, f"""\
        store: sqlite:///store.db
        variants:
          - name: fp8
            family: f
            quantization: FP8
            local:
              engine: vllm
              model_path: model
              entrypoint: tests.stand_in_server
              dtype: bfloat16
              quantization_method: fp8
              tensor_parallel_size: 2
              gpu_ids: [2, 3]
              extra_args: {{max_model_len: 4096, enforce_eager: true}}
              {extra}
        """)
    return tmp_path


def test_launcher_starts_the_server_with_the_variants_gpus_and_args_and_stops_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _project(tmp_path)
    monkeypatch.setenv("STAND_IN_RECORD", str(tmp_path / "record.json"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    cfg = load_config(project / "evalsvc.yaml")
    outcome = Runner(cfg, open_engine(cfg.store_url()), progress=False, log_dir=tmp_path / "logs").run(
        resolve(cfg.suites_dir, ["echo"])[0], cfg.variants[0])
    assert outcome.status == "succeeded", outcome.error
    record = json.loads((tmp_path / "record.json").read_text())
    argv = record["argv"]
    assert record["cuda"] == "2,3"
    for flag, value in (("--tensor-parallel-size", "2"), ("--dtype", "bfloat16"), ("--quantization", "fp8"),
                        ("--max-model-len", "4096"), ("--served-model-name", "fp8")):
        assert argv[argv.index(flag) + 1] == value
    assert "--enforce-eager" in argv
    port = int(argv[argv.index("--port") + 1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the server must be stopped after the run"


def test_a_server_that_dies_at_start_is_a_serving_error_with_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _project(tmp_path)
    monkeypatch.setenv("STAND_IN_MODE", "crash")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    cfg = load_config(project / "evalsvc.yaml")
    with pytest.raises(ServingError, match=r"(?s)exited with code 3 during start-up.*cannot load the model"):
        with serve(cfg.variants[0], tmp_path / "logs"):
            pass


def test_a_server_that_never_answers_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _project(tmp_path, "start_timeout_s: 2")
    monkeypatch.setenv("STAND_IN_MODE", "mute")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    cfg = load_config(project / "evalsvc.yaml")
    with pytest.raises(ServingError, match=r"did not answer .* within 2s"):
        with serve(cfg.variants[0], tmp_path / "logs"):
            pass


def test_serving_args_and_checkpoint_bytes_are_in_the_fingerprint(tmp_path: Path) -> None:
    project = _project(tmp_path)
    v = load_config(project / "evalsvc.yaml").variants[0]
    assert v.local is not None
    base = fingerprint(v, Generation())
    assert fingerprint(v.model_copy(update={"local": v.local.model_copy(update={"dtype": "float16"})}), Generation()) != base
    extra = {"extra_args": {"max_model_len": 8192}}
    assert fingerprint(v.model_copy(update={"local": v.local.model_copy(update=extra)}), Generation()) != base
    (project / "model" / "config.json").write_text('{"architectures": ["MistralForCausalLM"]}')
    assert fingerprint(v, Generation()) != base


def test_sigterm_to_a_run_stops_its_managed_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    project = _project(tmp_path)
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(50))
    write_suite(project / "suites", "echo", cases)
    env = {**os.environ, "STAND_IN_RECORD": str(tmp_path / "record.json"), "STAND_IN_DELAY": "0.5", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "evalsvc.cli", "run", "-c", str(project / "evalsvc.yaml"), "--no-progress"],
                            cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (tmp_path / "record.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    argv = json.loads((tmp_path / "record.json").read_text())["argv"]
    port = int(argv[argv.index("--port") + 1])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    time.sleep(0.5)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the managed server must not outlive evalsvc"


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists() else "X"
    return state not in ("Z", "X")  # a zombie has exited


@pytest.mark.parametrize("ignores_sigterm", [False, True], ids=["server-stops-on-sigterm", "server-ignores-sigterm"])
def test_a_killed_evalsvc_leaves_no_server_and_its_resumed_run_sends_only_the_missing_cases(
        tmp_path: Path, ignores_sigterm: bool) -> None:
    """SIGKILL evalsvc mid-run: the server gets SIGTERM from its parent-death signal and stops; one that ignores it
    is reaped (its whole process group) by the next launch. The resumed run sends only the cases not yet answered."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from sqlalchemy import create_engine, func, select
    from sqlalchemy.orm import Session

    from evalsvc.store.schema import CaseResult

    project = _project(tmp_path)
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(60))
    write_suite(project / "suites", "echo", cases)
    env = {**os.environ, "STAND_IN_RECORD": str(tmp_path / "record.json"), "STAND_IN_DELAY": "0.3", "PYTHONPATH": str(ROOT),
           "EVALSVC_CACHE": str(tmp_path / "cache"), "STAND_IN_IGNORE_TERM": "1" if ignores_sigterm else ""}
    run = [sys.executable, "-m", "evalsvc.cli", "run", "-c", str(project / "evalsvc.yaml"), "--no-progress"]
    proc = subprocess.Popen(run, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (tmp_path / "record.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.5)
    server = json.loads((tmp_path / "record.json").read_text())["pid"]
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    time.sleep(1.5)
    assert _alive(server) == ignores_sigterm  # the parent-death signal stopped it, unless it ignores SIGTERM
    engine = create_engine(f"sqlite:///{project / 'store.db'}")
    with Session(engine) as s:
        done = s.scalar(select(func.count()).select_from(CaseResult).where(CaseResult.status == "ok"))
    engine.dispose()
    assert 0 < done < 60
    (tmp_path / "record.json").unlink()
    resumed = subprocess.run(run, cwd=project, env={**env, "STAND_IN_IGNORE_TERM": ""}, capture_output=True, text=True,
                             timeout=120)
    assert not _alive(server), "a server left by a killed evalsvc is reaped at the next launch"
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f" {60 - done}/0" in resumed.stdout.replace("\n", " "), resumed.stdout  # sent/cached: only the missing cases


def test_two_servers_never_share_a_gpu_set_they_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two firings in threads (as two schedules due in the same minute run) whose variants use GPUs 2,3: the second
    server starts only once the first has stopped; a variant on GPU 0 runs beside them."""
    import threading
    import time

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("EVALSVC_CACHE", str(tmp_path / "cache"))
    cfg = load_config(_project(tmp_path) / "evalsvc.yaml")
    same = cfg.variants[0]
    other = same.model_copy(update={"local": same.local.model_copy(update={"gpu_ids": [0]})})
    spans: dict[str, tuple[float, float]] = {}

    def hold(name: str, variant) -> None:  # type: ignore[no-untyped-def]
        with serve(variant, tmp_path / "logs" / name):
            began = time.monotonic()
            time.sleep(2.5)
        spans[name] = (began, time.monotonic())

    threads = [threading.Thread(target=hold, args=(n, v)) for n, v in (("first", same), ("second", same), ("gpu0", other))]
    for t in threads:
        t.start()
        time.sleep(0.3)
    for t in threads:
        t.join(120)
    (_, first_end), (second_began, _) = sorted([spans["first"], spans["second"]])
    assert second_began >= first_end, "the second server on GPUs 2,3 started before the first stopped"
    assert spans["gpu0"][0] < first_end, "a server on other GPUs does not wait for them"
