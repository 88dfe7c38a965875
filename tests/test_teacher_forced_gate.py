"""The gate's teacher-forced divergence (divergence.mode; engine/teacher_forced.py, verdicts/divergence.py): a candidate
served as vLLM is scored on every token of the baseline's answers while its server is up, each case is stored, and the
report names the mode. The candidate is a stand-in for vLLM's /tokenize and completions with prompt_logprobs."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from evalsvc.cli import main
from evalsvc.dashboard.divergence import case_divergence
from evalsvc.serving import base as serving_base
from evalsvc.serving.base import Served
from evalsvc.store.schema import ForcedCase
from tests.conftest import write_config, write_suite
from tests.fake_endpoint import FakeEndpoint

N = 12
PROMPT_IDS = [1, 2, 3]
BASE_P = 0.8  # the baseline's probability of its own token; "x" and "y" 0.05 each, the tail the rest
FORCED = [(0.6, 0.1), (0.3, 0.1), (0.3, 0.5)]  # the candidate's (own token, "x") at each position of "echo: say N"
Y = 0.05  # the candidate's "y" everywhere


def _words(text: str) -> list[str]:
    return re.findall(r" ?\S+", text)


def _chat_logprobs(sureness: float, alt: float) -> Callable[[dict[str, Any], str], dict[str, Any]]:
    """Each generated word one token (its leading space kept, so the joined tokens are the answer's text)."""
    def logprobs(body: dict[str, Any], text: str) -> dict[str, Any]:
        return {"content": [{"token": w, "logprob": math.log(sureness), "top_logprobs": [
            {"token": w, "logprob": math.log(sureness)}, {"token": "x", "logprob": math.log(alt)},
            {"token": "y", "logprob": math.log(alt)}]} for w in _words(text)]}
    return logprobs


class ForcedVllm:
    """The candidate's scoring side: /tokenize by words, and prompt_logprobs after the prompt with ``FORCED``;
    ``fail(body)`` true answers that scoring request with HTTP 500. Generation falls through to the fake's reply."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {"x": 100, "y": 101}
        self.fail: Callable[[dict[str, Any]], bool] = lambda body: False

    def _id(self, word: str) -> int:
        return self.vocab.setdefault(word, 200 + len(self.vocab))

    def __call__(self, number: int, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes] | None:
        if "add_generation_prompt" in body:
            return 200, {}, json.dumps({"count": 3, "tokens": PROMPT_IDS}).encode()
        if "add_special_tokens" in body:
            return 200, {}, json.dumps({"tokens": [self._id(w) for w in _words(body["prompt"])]}).encode()
        if "prompt_logprobs" not in body:
            return None
        if self.fail(body):
            return 500, {}, b'{"error": "engine dead"}'
        words = {i: w for w, i in self.vocab.items()}
        entries: list[Any] = [None] * len(PROMPT_IDS)
        for pos, tid in enumerate(body["prompt"][len(PROMPT_IDS):]):
            own, x = FORCED[pos]
            entries.append({str(tid): {"logprob": math.log(own), "rank": 1 + (x > own), "decoded_token": words[tid]},
                            "100": {"logprob": math.log(x), "rank": 1 + (own > x), "decoded_token": "x"},
                            "101": {"logprob": math.log(Y), "rank": 3, "decoded_token": "y"}})
        return 200, {}, json.dumps({"choices": [{"index": 0, "text": "", "prompt_logprobs": entries}]}).encode()

    def asked(self, requests: list[dict[str, Any]]) -> int:
        return sum("prompt_logprobs" in r for r in requests)


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def _forced_kld() -> float:
    """Mean over the three tokens of the KL of the grouped distributions: the own token, "x", "y" and the tail."""
    p = [BASE_P, 0.05, 0.05, 1 - BASE_P - 0.1]
    return sum(_kl(p, [own, x, Y, 1 - own - x - Y]) for own, x in FORCED) / len(FORCED)


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeEndpoint, FakeEndpoint, ForcedVllm, list[str]]]:
    """The baseline (an endpoint) and the candidate, served through a stand-in for evalsvc's vLLM backend; the list
    records each start of the candidate's server."""
    forced = ForcedVllm()
    starts: list[str] = []
    with FakeEndpoint() as base, FakeEndpoint(reply=lambda body: "nope " + body["messages"][-1]["content"]) as cand:
        base.logprobs = _chat_logprobs(BASE_P, 0.05)
        cand.logprobs = _chat_logprobs(0.6, 0.1)
        cand.behaviour = forced

        class Backend:
            @contextmanager
            def serve(self, variant: Any, log_dir: Path) -> Iterator[Served]:
                starts.append(variant.name)
                yield Served(cand.base_url, "c")

        monkeypatch.setitem(serving_base._BACKENDS, "vllm", Backend)
        yield base, cand, forced, starts


def _project(tmp_path: Path, base: FakeEndpoint, mode: str = "auto", candidate: str = "vllm") -> Path:
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(N))
    write_suite(tmp_path / "suites", "echo", cases)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    served = (f'local: {{engine: vllm, model_path: "{tmp_path / "model"}"}}' if candidate == "vllm"
              else f'endpoint: {{base_url: "{base.base_url}", model: c}}')
    write_config(tmp_path, f"""\
        store: sqlite:///{tmp_path / "store.db"}
        max_retries: 0
        divergence: {{mode: {mode}}}
        baselines: {{f: base}}
        variants:
          - {{name: base, family: f, endpoint: {{base_url: "{base.base_url}", model: b}}}}
          - {{name: cand, family: f, {served}}}
        """)
    return tmp_path


def _gate(project: Path) -> tuple[dict[str, Any], str, int]:
    out = CliRunner().invoke(main, ["gate", "-c", str(project / "evalsvc.yaml"), "--candidate", "cand", "--allow-inconclusive",
                                    "--json", str(project / "gate.json"), "--markdown", str(project / "gate.md")],
                             catch_exceptions=False)
    report = json.loads((project / "gate.json").read_text())
    return report, (project / "gate.md").read_text() if (project / "gate.md").exists() else out.output, out.exit_code


def _stored(project: Path) -> list[ForcedCase]:
    engine = create_engine(f"sqlite:///{project / 'store.db'}")
    with Session(engine) as s:
        rows = list(s.scalars(select(ForcedCase).order_by(ForcedCase.case_id)))
    engine.dispose()
    return rows


def test_a_vllm_candidate_is_scored_on_every_token_of_the_baseline_answers_and_the_report_says_teacher_forced(
        tmp_path: Path, stand_in: Any) -> None:
    """The candidate's own answers differ at their first token ("nope"), so the shared prefix would hold one position;
    teacher-forced, every case's kld is the mean over the three tokens of "echo: say N", and the candidate's top-1
    agrees with the baseline's on two of them."""
    base, cand, forced, starts = stand_in
    report, text, code = _gate(_project(tmp_path, base))
    assert code == 0, text
    rows = {r["metric"]: r for r in report["divergence"]}
    assert rows["kld"]["mode"] == "teacher_forced" and "teacher-forced" in rows["kld"]["method"]
    assert rows["kld"]["estimate"] == pytest.approx(_forced_kld(), rel=1e-3) and rows["kld"]["n"] == N
    assert rows["top1_agreement"]["estimate"] == pytest.approx(2 / 3, rel=1e-3)
    assert rows["first_divergence_median"]["estimate"] == 2.0
    assert "| echo | kld |" in text and "| teacher forced |" in text
    assert forced.asked(cand.requests) == N and starts == ["cand"]  # one server: the runs' and the scoring's
    stored = _stored(tmp_path)
    assert [r.status for r in stored] == ["ok"] * N and all(r.positions == 3 for r in stored)
    assert [r.top1_agreement for r in stored] == pytest.approx([2 / 3] * N)
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    table = case_divergence(engine, stored[0].baseline_run_id, stored[0].candidate_run_id)  # the Compare page's
    engine.dispose()
    assert set(table["mode"]) == {"teacher forced"} and list(table["top1_agreement"]) == pytest.approx([2 / 3] * N)
    assert list(table["kld"]) == pytest.approx([_forced_kld()] * N, rel=1e-3)


def test_forcing_the_same_runs_again_asks_only_the_cases_not_scored(tmp_path: Path, stand_in: Any) -> None:
    """A case the endpoint failed on is stored as an error with its cause and falls back to the shared prefix with a
    note; forcing the same pair again asks that case alone, and then nothing."""
    from evalsvc.config import load_config
    from evalsvc.engine.teacher_forced import force_runs
    from evalsvc.suites import load_suite

    base, cand, forced, _ = stand_in
    project = _project(tmp_path, base)
    three = forced.vocab.setdefault(" 3", 99)
    forced.fail = lambda body: three in body["prompt"]
    report, text, code = _gate(project)
    assert code == 0, text
    rows = {r["metric"]: r for r in report["divergence"]}
    assert rows["kld"]["mode"] == "mixed" and rows["kld"]["n"] == N
    assert any("1 case(s) could not be scored teacher-forced" in n and "c3" in n and "HTTP 500" in n
               for n in report["notes"]), report["notes"]
    stored = {r.case_id: r for r in _stored(tmp_path)}
    assert stored["c3"].status == "error" and "HTTP 500" in (stored["c3"].note or "")
    assert sum(r.status == "ok" for r in stored.values()) == N - 1

    cfg = load_config(project / "evalsvc.yaml")
    forced.fail = lambda body: False
    engine = create_engine(f"sqlite:///{project / 'store.db'}")
    pair = (load_suite(project / "suites" / "echo.yaml"), stored["c3"].baseline_run_id, stored["c3"].candidate_run_id)
    before = forced.asked(cand.requests)
    assert force_runs(engine, Served(cand.base_url, "c"), cfg.variant("cand"), 5, [pair]) == 1
    assert force_runs(engine, Served(cand.base_url, "c"), cfg.variant("cand"), 5, [pair]) == 0
    assert forced.asked(cand.requests) == before + 1
    engine.dispose()
    assert [(r.status, r.note) for r in _stored(tmp_path)] == [("ok", None)] * N  # the error's note gone with it


def test_a_candidate_whose_server_fails_every_scoring_request_falls_back_to_the_shared_prefix(
        tmp_path: Path, stand_in: Any) -> None:
    """Never fatal: after three endpoint errors in a row the other cases are not asked; the gate decides as before."""
    base, cand, forced, _ = stand_in
    forced.fail = lambda body: True
    report, text, code = _gate(_project(tmp_path, base))
    assert code == 0, text
    assert forced.asked(cand.requests) == 3
    rows = {r["metric"]: r for r in report["divergence"]}
    assert rows["kld"]["mode"] == "shared_prefix" and rows["kld"]["n"] == N and "top1_agreement" not in rows
    assert any(f"{N} case(s) could not be scored teacher-forced" in n for n in report["notes"]), report["notes"]
    assert {r.status for r in _stored(tmp_path)} == {"error"}


def test_shared_prefix_mode_asks_no_scoring(tmp_path: Path, stand_in: Any) -> None:
    base, cand, forced, _ = stand_in
    report, text, code = _gate(_project(tmp_path, base, mode="shared_prefix"))
    assert code == 0, text
    assert forced.asked(cand.requests) == 0 and _stored(tmp_path) == []
    assert {r["mode"] for r in report["divergence"]} == {"shared_prefix"}


def test_teacher_forced_mode_on_a_candidate_that_cannot_is_a_config_error_naming_it(tmp_path: Path, stand_in: Any) -> None:
    base, cand, _, _ = stand_in
    project = _project(tmp_path, base, mode="teacher_forced", candidate="endpoint")
    out = CliRunner().invoke(main, ["gate", "-c", str(project / "evalsvc.yaml"), "--candidate", "cand"])
    assert out.exit_code == 2
    assert "divergence.mode" in out.output and "variant 'cand'" in out.output and "local.engine: vllm" in out.output
    assert cand.requests == []  # said before anything was asked



def test_a_sequential_gate_scores_each_look_s_new_cases_once_while_its_servers_stay_up(tmp_path: Path, stand_in: Any) -> None:
    base, cand, _, starts = stand_in
    project = _project(tmp_path, base)
    out = CliRunner().invoke(main, ["gate", "-c", str(project / "evalsvc.yaml"), "--candidate", "cand", "--sequential",
                                    "--looks", "3", "--allow-inconclusive", "--json", str(project / "gate.json")],
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    report = json.loads((project / "gate.json").read_text())
    asked = report["sequential"]["cases_asked"]
    scored = [r["prompt"] for r in cand.requests if "prompt_logprobs" in r]
    assert len(scored) == asked == len(_stored(tmp_path)) and len({tuple(p) for p in scored}) == asked
    assert {r["mode"] for r in report["divergence"]} == {"teacher_forced"} and starts == ["cand"]


def test_a_baseline_that_stored_no_log_probabilities_leaves_nothing_to_score(tmp_path: Path, stand_in: Any) -> None:
    """auto: teacher-forced only where the baseline's run stored log-probabilities (its answers without them are JSON
    nulls, which the scoring must skip, not read)."""
    base, cand, forced, _ = stand_in
    base.logprobs = None
    report, text, code = _gate(_project(tmp_path, base))
    assert code == 0, text
    assert forced.asked(cand.requests) == 0 and _stored(tmp_path) == [] and report["divergence"] == []
