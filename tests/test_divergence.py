"""Divergence of a candidate's answers from its baseline's, from top-k log-probabilities."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import entropy
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.cli import main
from evalsvc.config import load_config
from evalsvc.config.divergence import DivergenceConfig
from evalsvc.engine.runner import Runner
from evalsvc.errors import MalformedResponseError
from evalsvc.identity import content_hash
from evalsvc.serving.logprobs import compact, request_params
from evalsvc.stats.divergence import CaseDivergence, Token, compare_answers, from_stored, summarise, topk_kl
from evalsvc.store.db import open_engine
from evalsvc.store.schema import CachedResponse, CaseResult
from evalsvc.suites import resolve
from tests.conftest import write_config, write_suite
from tests.fake_endpoint import FakeEndpoint, word_logprobs

VOCAB = [f"t{i}" for i in range(12)]


def _dist(seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, len(VOCAB))
    logits += shift * np.arange(len(VOCAB)) / len(VOCAB)
    p = np.exp(logits - logits.max())
    return p / p.sum()


def _top(p: np.ndarray, k: int) -> dict[str, float]:
    order = np.argsort(-p)[:k]
    return {VOCAB[i]: float(np.log(p[i])) for i in order}


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("k", [1, 3, 6])
def test_topk_kl_never_exceeds_the_true_kl(seed: int, k: int) -> None:
    p, q = _dist(seed), _dist(seed + 1000)
    assert topk_kl(_top(p, k), _top(q, k)) <= entropy(p, q) + 1e-12


@pytest.mark.parametrize("seed", range(5))
def test_topk_kl_is_the_true_kl_when_k_covers_the_vocabulary(seed: int) -> None:
    p, q = _dist(seed), _dist(seed + 7, shift=3.0)
    assert topk_kl(_top(p, len(VOCAB)), _top(q, len(VOCAB))) == pytest.approx(entropy(p, q), rel=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_topk_kl_stays_a_lower_bound_when_q_lists_other_tokens(seed: int) -> None:
    """Q's short list misses some of P's top-k: those take q at most Q's smallest listed value."""
    p, q = _dist(seed), _dist(seed + 500, shift=-4.0)
    bound = topk_kl(_top(p, 6), _top(q, 2))
    assert 0.0 <= bound <= entropy(p, q) + 1e-12


def test_topk_kl_by_hand() -> None:
    """P = (0.5, 0.3 | tail 0.2), Q = (0.25, 0.25 | tail 0.5): two singletons and the tail bucket."""
    p = {"a": math.log(0.5), "b": math.log(0.3)}
    q = {"a": math.log(0.25), "b": math.log(0.25)}
    expected = 0.5 * math.log(0.5 / 0.25) + 0.3 * math.log(0.3 / 0.25) + 0.2 * math.log(0.2 / 0.5)
    assert topk_kl(p, q) == pytest.approx(expected)


def test_topk_kl_of_a_distribution_with_itself_is_zero() -> None:
    p = _top(_dist(3), 4)
    assert topk_kl(p, p) == pytest.approx(0.0, abs=1e-12)


def _answer(tokens: list[str], dists: list[np.ndarray], k: int = 5) -> list[Token]:
    return [Token(t, float(np.log(d[VOCAB.index(t)])), _top(d, k)) for t, d in zip(tokens, dists, strict=True)]


def test_identical_answers_from_the_same_distributions() -> None:
    dists = [_dist(s) for s in range(4)]
    answer = _answer(["t1", "t2", "t3", "t4"], dists)
    d = compare_answers(answer, answer)
    assert (d.same_output, d.first_divergence, d.kld, d.delta_p) == (1, 4, 0.0, 0.0)


def test_same_answers_from_a_shifted_distribution_diverge() -> None:
    """The candidate says the same words, less surely: no output differs, the KL sees it."""
    tokens = ["t1", "t2", "t3"]
    base = _answer(tokens, [_dist(s) for s in range(3)])
    cand = _answer(tokens, [_dist(s, shift=2.0) for s in range(3)])
    d = compare_answers(base, cand)
    assert d.same_output == 1 and d.first_divergence == 3
    assert d.kld is not None and d.kld > 0


def test_first_divergence_counts_tokens_before_the_first_difference() -> None:
    dists = [_dist(s) for s in range(4)]
    base = _answer(["t1", "t2", "t3", "t4"], dists)
    cand = _answer(["t1", "t2", "t5", "t4"], dists)
    d = compare_answers(base, cand)
    assert (d.same_output, d.first_divergence, d.positions) == (0, 2, 3)


def test_a_shorter_answer_diverges_where_it_ends() -> None:
    dists = [_dist(s) for s in range(3)]
    d = compare_answers(_answer(["t1", "t2", "t3"], dists), _answer(["t1", "t2"], dists[:2]))
    assert (d.same_output, d.first_divergence, d.positions) == (0, 2, 2)


def test_mean_kld_over_the_shared_positions_is_the_mean_of_per_token_bounds() -> None:
    pb, pc = [_dist(s) for s in range(3)], [_dist(s + 50) for s in range(3)]
    base = _answer(["t1", "t2", "t3"], pb)
    cand = _answer(["t1", "t9", "t3"], pc)
    d = compare_answers(base, cand)
    expected = np.mean([topk_kl(base[i].top, cand[i].top) for i in range(2)])  # positions 0 and 1 share their context
    assert d.kld == pytest.approx(expected)
    assert d.delta_p == pytest.approx(math.exp(cand[0].logprob) - math.exp(base[0].logprob))


def test_empty_answers_have_no_kld() -> None:
    d = compare_answers([], [])
    assert (d.same_output, d.first_divergence, d.kld, d.delta_p) == (1, 0, None, None)


# -- asking for log-probabilities and storing them ---------------------------------------------------------------------



def _run(project: Path, top_logprobs: int | None = None):
    path = project / "evalsvc.yaml"
    if top_logprobs is not None:
        path.write_text(path.read_text() + f"divergence: {{top_logprobs: {top_logprobs}}}\n")
    cfg = load_config(path)
    engine = open_engine(cfg.store_url())
    suite = resolve(cfg.suites_dir, ["echo"])[0]
    return Runner(cfg, engine, progress=False).run(suite, cfg.variants[0]), engine, cfg


def _rows(engine) -> list[CaseResult]:
    with Session(engine) as s:
        return list(s.scalars(select(CaseResult).order_by(CaseResult.case_id)))


def test_divergence_config_defaults_to_top_5_and_forbids_unknown_keys() -> None:
    assert DivergenceConfig().top_logprobs == 5
    with pytest.raises(ValueError):
        DivergenceConfig(top_k=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        DivergenceConfig(top_logprobs=21)


def test_request_params_by_api() -> None:
    assert request_params("chat", 5) == {"logprobs": True, "top_logprobs": 5}
    assert request_params("completions", 3) == {"logprobs": 3}
    assert request_params("chat", 0) == {}


def test_compact_reads_chat_and_completions_logprobs_alike() -> None:
    chat = {"content": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105],
                         "top_logprobs": [{"token": "Hi", "logprob": -0.25}, {"token": "Hey", "logprob": -1.5}]}]}
    completions = {"tokens": ["Hi"], "token_logprobs": [-0.25], "top_logprobs": [{"Hi": -0.25, "Hey": -1.5}]}
    expected = [["Hi", -0.25, [["Hi", -0.25], ["Hey", -1.5]]]]
    assert compact(chat, "chat") == compact(completions, "completions") == expected
    assert from_stored(expected) == [Token("Hi", -0.25, {"Hi": -0.25, "Hey": -1.5})]


def test_compact_names_a_malformed_entry() -> None:
    with pytest.raises(MalformedResponseError, match=r"logprobs\.content\[0\]"):
        compact({"content": [{"token": "Hi", "logprob": "high"}]}, "chat")


def test_a_run_asks_for_top_logprobs_and_stores_them_per_case(echo_project: Path, fake: FakeEndpoint) -> None:
    fake.logprobs = word_logprobs
    outcome, engine, _ = _run(echo_project)
    assert outcome.status == "succeeded"
    assert all(b["logprobs"] is True and b["top_logprobs"] == 5 for b in fake.requests)
    row = _rows(engine)[0]
    assert row.logprobs == compact(word_logprobs(fake.requests[0], row.output), "chat")
    assert [t.token for t in from_stored(row.logprobs)] == row.output.split(" ")


def test_a_server_sending_more_alternatives_than_asked_has_only_the_k_most_probable_stored(
        echo_project: Path, fake: FakeEndpoint) -> None:
    """The stored size per token is bounded by divergence.top_logprobs, not by what the server chose to send."""
    def generous(body: dict, text: str) -> dict:
        alts = [{"token": f"a{j}", "logprob": -0.1 * (12 - j)} for j in range(12)]  # 12 sent, the most probable last
        return {"content": [{"token": w, "logprob": -0.5, "top_logprobs": alts} for w in text.split(" ")]}

    fake.logprobs = generous
    outcome, engine, _ = _run(echo_project, top_logprobs=2)
    assert outcome.status == "succeeded" and all(b["top_logprobs"] == 2 for b in fake.requests)
    for row in _rows(engine):
        assert all(alts == [["a11", pytest.approx(-0.1)], ["a10", pytest.approx(-0.2)]] for _, _, alts in row.logprobs)


def test_an_endpoint_refusing_logprobs_is_found_out_once_and_its_answers_kept(
        echo_project: Path, fake: FakeEndpoint, caplog: pytest.LogCaptureFixture) -> None:
    fake.behaviour = lambda n, body: ((400, {}, b'{"error": "logprobs are not supported"}') if "logprobs" in body
                                      else None)
    outcome, engine, _ = _run(echo_project)
    assert outcome.status == "succeeded"
    assert sum("logprobs" in b for b in fake.requests) == 1 and len(fake.requests) == 7
    assert all(r.status == "ok" and r.logprobs is None for r in _rows(engine))
    assert any("log-probabilities" in r.getMessage() for r in caplog.records)


def test_top_logprobs_0_asks_for_none_and_keeps_the_cache_key(echo_project: Path, fake: FakeEndpoint) -> None:
    path = echo_project / "evalsvc.yaml"
    path.write_text(path.read_text().replace("    family: fake\n", "    family: fake\n    cache: true\n"))
    outcome, engine, cfg = _run(echo_project, top_logprobs=0)
    assert outcome.status == "succeeded"
    assert not any("logprobs" in b or "top_logprobs" in b for b in fake.requests)
    body = fake.requests[0]
    request = {"messages": body["messages"], **{k: v for k, v in body.items() if k not in ("model", "messages")}}
    key = content_hash({"fp": cfg.fingerprint("fake"), "request": request, "sample": 0}, 64)
    with Session(engine) as s:
        assert s.get(CachedResponse, key) is not None


def test_top_logprobs_is_outside_the_variant_fingerprint(echo_project: Path) -> None:
    path = echo_project / "evalsvc.yaml"
    before = load_config(path).fingerprint("fake")
    path.write_text(path.read_text() + "divergence: {top_logprobs: 20}\n")
    assert load_config(path).fingerprint("fake") == before


# -- the gate's informational divergence rows --------------------------------------------------------------------------


def _gate_project(tmp_path: Path, base: FakeEndpoint, cand: FakeEndpoint, n: int = 12) -> Path:
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(n))
    write_suite(tmp_path / "suites", "echo", cases)
    write_config(tmp_path, f"""\
        store: sqlite:///store.db
        max_retries: 0
        baselines: {{f: base}}
        variants:
          - {{name: base, family: f, endpoint: {{base_url: "{base.base_url}", model: b}}}}
          - {{name: cand, family: f, endpoint: {{base_url: "{cand.base_url}", model: c}}}}
        """)
    return tmp_path


def _gate_json(project: Path) -> tuple[dict[str, Any], str]:
    out = CliRunner().invoke(main, ["gate", "-c", str(project / "evalsvc.yaml"), "--candidate", "cand", "--allow-inconclusive",
                                    "--json", str(project / "gate.json")], catch_exceptions=False)
    return json.loads((project / "gate.json").read_text()), out.output


def test_the_gate_shows_a_candidate_with_a_known_kl_from_its_baseline(tmp_path: Path) -> None:
    """The candidate says the same words less surely: P = (0.8, 0.05, 0.05 | tail 0.1), Q = (0.6, 0.1, 0.1 | tail 0.2)
    at every token, so every case's kld is that KL, the answers are all the same, and they never diverge."""
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        base.logprobs = word_logprobs
        cand.logprobs = functools.partial(word_logprobs, sureness=0.6)
        report, text = _gate_json(_gate_project(tmp_path, base, cand))
    expected = 0.8 * math.log(0.8 / 0.6) + 0.1 * math.log(0.05 / 0.1) + 0.1 * math.log(0.1 / 0.2)
    rows = {r["metric"]: r for r in report["divergence"]}
    assert rows["kld"]["estimate"] == pytest.approx(expected, rel=1e-3) and rows["kld"]["n"] == 12
    assert rows["kld"]["ci_low"] <= rows["kld"]["estimate"] <= rows["kld"]["ci_high"]
    assert rows["same_output"]["estimate"] == 1.0
    assert rows["first_divergence_median"]["estimate"] == 3.0  # "echo: say N": three tokens, censored at the end
    assert "Divergence from the baseline" in text
    assert report["verdict"] == "pass" or report["verdict"] == "inconclusive"  # never decided by the divergence rows


def test_the_gate_shows_no_divergence_rows_without_logprobs(tmp_path: Path) -> None:
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        cand.logprobs = word_logprobs
        report, text = _gate_json(_gate_project(tmp_path, base, cand))
    assert report["divergence"] == [] and "Divergence from the baseline" not in text


def test_summaries_bootstrap_each_statistic_over_cases() -> None:
    cases = [CaseDivergence(kld=k, same_output=s, first_divergence=f, delta_p=None, positions=f + 1)
             for k, s, f in [(0.1, 1, 10), (0.3, 0, 2), (0.2, 0, 4), (0.0, 1, 8), (0.4, 0, 1)]]
    rows = {r.metric: r for r in summarise(cases, alpha=0.05)}
    assert rows["kld"].estimate == pytest.approx(0.2)
    assert rows["same_output"].estimate == pytest.approx(0.4)
    assert rows["first_divergence_median"].estimate == 4.0
    assert all(r.ci_low <= r.estimate <= r.ci_high and r.n == 5 for r in rows.values())


def test_summary_intervals_stay_inside_what_the_statistic_can_be() -> None:
    """Every answer differs: no spread to resample, and the bound around a share of 0 must not go below 0."""
    cases = [CaseDivergence(kld=0.3, same_output=0, first_divergence=0, delta_p=None, positions=1) for _ in range(25)]
    rows = {r.metric: r for r in summarise(cases)}
    assert rows["same_output"].estimate == 0.0 and 0.0 <= rows["same_output"].ci_low <= rows["same_output"].ci_high <= 1.0
    assert rows["kld"].ci_low >= 0.0


@pytest.mark.model
@pytest.mark.slow
def test_real_llama_cpp_variants_store_their_tokens_and_q4_0_diverges_from_f16(tmp_path: Path) -> None:
    """Measured, not planted: llama.cpp's server returns each generated token with up to 5 alternatives, its tokens spell
    the answer, and Q4_0 moves far from F16 (docs/divergence.md: 0.28 nats on arithmetic; Q8_0 0.004)."""
    from evalsvc.local_models import variant_path
    from tests.conftest import MODELS, ROOT

    paths = {q: variant_path(MODELS, q) for q in ("F16", "Q4_0")}
    if not all(p.is_file() for p in paths.values()):
        pytest.skip("local variants not built; run `bash scripts/setup.sh`")
    write_config(tmp_path, f"""\
        store: sqlite:///store.db
        suites_dir: {ROOT / "suites"}
        concurrency: 1
        baselines: {{f: f16}}
        variants:
          - {{name: f16, family: f, local: {{model_path: {paths["F16"]}, n_threads: 1}}}}
          - {{name: q4_0, family: f, local: {{model_path: {paths["Q4_0"]}, n_threads: 1}}}}
        """)
    out = CliRunner().invoke(main, ["gate", "-c", str(tmp_path / "evalsvc.yaml"), "--candidate", "q4_0", "-s", "arithmetic",
                                    "--allow-inconclusive", "--no-progress", "--json", str(tmp_path / "gate.json")],
                             catch_exceptions=False)
    assert out.exit_code in (0, 1), out.output
    report = json.loads((tmp_path / "gate.json").read_text())
    rows = {r["metric"]: r for r in report["divergence"]}
    assert rows["kld"]["n"] == 25 and rows["kld"]["ci_low"] > 0.05
    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    stored = [r for r in _rows(engine) if r.status == "ok"]
    assert stored and all("".join(t[0] for t in r.logprobs) == r.output and len(r.logprobs) == r.completion_tokens
                          and all(1 <= len(t[2]) <= 5 for t in r.logprobs) for r in stored)


# -- gate.margins make a divergence statistic decide -------------------------------------------------------------------


def test_a_divergence_bound_is_a_margin_of_its_own_and_other_kinds_are_refused_naming_the_fix() -> None:
    from evalsvc.config.gate import GateConfig

    gate = GateConfig.model_validate({"margins": {"kld": {"max": 0.05}, "same_output": {"min": 0.9}}})
    assert gate.margins["kld"].max == 0.05 and gate.margins["same_output"].min == 0.9
    with pytest.raises(ValueError, match=r"margins\.kld\.absolute[\s\S]*write \{max: 0\.05\}"):
        GateConfig.model_validate({"margins": {"kld": {"absolute": 0.05}}})
    with pytest.raises(ValueError, match=r"margins\.pass\.max[\s\S]*for pass write \{absolute: 0\.05\}"):
        GateConfig.model_validate({"margins": {"pass": {"max": 0.05}}})
    with pytest.raises(ValueError, match=r"margins\.same_output\.max[\s\S]*\{min: 0\.9\}"):
        GateConfig.model_validate({"margins": {"same_output": {"max": 0.05}}})


def _sure_by_case(base: float, step: float) -> Any:
    """Log-probabilities whose chosen token's probability depends on the case ("say N"): base + step x (N mod 3), so the
    per-case kld varies and the bootstrap has spread to resample."""
    def logprobs(body: dict[str, Any], text: str) -> dict[str, Any]:
        n = int(body["messages"][-1]["content"].split()[-1])
        return word_logprobs(body, text, sureness=base + step * (n % 3))
    return logprobs


def _bounded(project: Path, margins: str = "kld: {max: 0.05}, same_output: {min: 0.9}") -> Path:
    path = project / "evalsvc.yaml"
    path.write_text(path.read_text() + f"gate: {{margins: {{{margins}}}}}\n")
    return project


def _gate_exit(project: Path) -> tuple[dict[str, Any], int, str]:
    out = CliRunner().invoke(main, ["gate", "-c", str(project / "evalsvc.yaml"), "--candidate", "cand", "--no-progress",
                                    "--json", str(project / "gate.json")], catch_exceptions=False)
    return json.loads((project / "gate.json").read_text()), out.exit_code, out.output


def test_a_kld_bound_passes_a_candidate_whose_kld_interval_lies_below_it(tmp_path: Path) -> None:
    """The same answers from nearly the same distributions: kld ~ 0.001 nats on 60 cases, every answer the same; with
    kld at most 0.05 and same_output at least 0.9 both rows decide (in each suite, on their own) and pass."""
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        base.logprobs = word_logprobs
        cand.logprobs = _sure_by_case(0.77, 0.01)
        report, code, text = _gate_exit(_bounded(_gate_project(tmp_path, base, cand, n=60)))
    rows = {r["metric"]: r for r in report["comparisons"] if r["scope"] == "echo"}
    kld = rows["kld"]
    assert (kld["role"], kld["verdict"], kld["lower_is_better"], kld["margin"]) == ("decides", "pass", True, 0.05)
    assert kld["baseline_mean"] == 0.0 and 0 < kld["candidate_mean"] < 0.01 and -kld["ci_low"] < 0.05
    assert (rows["same_output"]["role"], rows["same_output"]["verdict"]) == ("decides", "pass")
    assert rows["same_output"]["candidate_mean"] == 1.0 and rows["same_output"]["ci_low"] > 0.9 - 1.0
    assert {r["metric"] for r in report["divergence"]} == {"delta_p", "first_divergence_median"}  # the rest decide above
    assert (report["verdict"], code) == ("pass", 0)
    assert "| echo | kld (lower is better) | 60 | 0.000 | 0.0" in text  # the baseline's own 0, not -0.000


def test_a_kld_bound_makes_a_far_candidate_a_regression_naming_it(tmp_path: Path) -> None:
    """The same words said far less surely (chosen token 0.30-0.40 against 0.80): every answer still passes its check,
    so accuracy alone passes the candidate; the kld bound makes it a regression (exit 1)."""
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        base.logprobs = word_logprobs
        cand.logprobs = _sure_by_case(0.30, 0.05)
        report, code, _ = _gate_exit(_bounded(_gate_project(tmp_path, base, cand, n=60), "kld: {max: 0.05}"))
    kld = next(r for r in report["comparisons"] if r["metric"] == "kld")
    assert kld["verdict"] == "regression" and -kld["ci_high"] > 0.05  # the lower end of the kld interval above the bound
    assert (report["verdict"], code) == ("regression", 1)
    assert any(r.startswith("echo/kld regressed") for r in report["decision"]["reasons"])
    passed = next(r for r in report["comparisons"] if r["metric"] == "pass" and r["scope"] == "all suites")
    assert passed["verdict"] == "pass"


def test_a_kld_bound_without_log_probabilities_vetoes_the_pass(tmp_path: Path) -> None:
    """The baseline's endpoint returns none: the suite cannot be decided on kld, and says why, never a silent pass."""
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        cand.logprobs = word_logprobs
        report, code, _ = _gate_exit(_bounded(_gate_project(tmp_path, base, cand, n=60), "kld: {max: 0.05}"))
    assert (report["verdict"], code) == ("inconclusive", 3)
    (undecided,) = report["decision"]["undecided"]
    assert undecided["suite"] == "echo" and "kld decide (gate.margins)" in undecided["reason"]
    assert "log-probabilities" in undecided["reason"]


def test_the_report_shows_delta_p_the_change_in_the_baselines_chosen_token_probability(tmp_path: Path) -> None:
    """Every chosen token at 0.8 for the baseline and 0.6 for the candidate: Δp is −0.2 on every case."""
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        base.logprobs = word_logprobs
        cand.logprobs = functools.partial(word_logprobs, sureness=0.6)
        report, text = _gate_json(_gate_project(tmp_path, base, cand))
    row = next(r for r in report["divergence"] if r["metric"] == "delta_p")
    assert row["estimate"] == pytest.approx(-0.2, abs=1e-3) and row["n"] == 12
    assert -1.0 <= row["ci_low"] <= row["estimate"] <= row["ci_high"] <= 1.0
    assert "| echo | delta_p | -0.2 |" in text and "Δp" in text


# teacher forcing (engine/teacher_forced.py): a stand-in vLLM that tokenizes by words and scores a given continuation
PROMPT_IDS = [1, 2, 3]
WORDS = {"Paris": 10, " is": 11, " big": 12, " nice": 13, " the": 14}
P_BASE = [{"Paris": 0.7, " the": 0.2}, {" is": 0.9, " big": 0.05}, {" big": 0.6, " nice": 0.3}]  # the rest: the tail
Q_CAND = [{"Paris": 0.5, " the": 0.3}, {" is": 0.8, " big": 0.1}, {" nice": 0.5, " big": 0.4}]


def _stored(dists: list[dict[str, float]], answer: list[str]) -> list[list[Any]]:
    return [[t, math.log(d[t]), [[a, math.log(p)] for a, p in d.items()]] for t, d in zip(answer, dists, strict=True)]


def _forced_vllm(q: list[dict[str, float]]) -> Any:
    """A stand-in for vLLM's /tokenize and completions-with-prompt_logprobs, with the candidate's distributions ``q``."""
    ids_word = {i: w for w, i in WORDS.items()}

    def behaviour(number: int, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        if "prompt_logprobs" in body:
            ids = body["prompt"]
            entries: list[Any] = [None] * len(PROMPT_IDS)
            for pos, tid in enumerate(ids[len(PROMPT_IDS):]):
                listed = {str(WORDS[w]): {"logprob": math.log(p), "rank": r + 1, "decoded_token": w}
                          for r, (w, p) in enumerate(sorted(q[pos].items(), key=lambda wp: -wp[1]))}
                entries.append(listed if str(tid) in listed else
                               {**listed, str(tid): {"logprob": -9.0, "rank": 99, "decoded_token": ids_word[tid]}})
            return 200, {}, json.dumps({"choices": [{"index": 0, "text": "x", "finish_reason": "length",
                                                     "prompt_logprobs": entries}]}).encode()
        if "messages" in body:
            return 200, {}, json.dumps({"count": 3, "tokens": PROMPT_IDS}).encode()
        words = body["prompt"].replace(" ", "\0 ").split("\0")
        return 200, {}, json.dumps({"tokens": [WORDS[w] for w in words if w]}).encode()
    return behaviour


def _score_forced(q: list[dict[str, float]], cases: list[Any]) -> tuple[Any, list[dict[str, Any]]]:
    """``score_cases`` against the stand-in vLLM with the candidate's distributions ``q``; with the requests it got."""
    from evalsvc.engine.teacher_forced import Scorer, score_cases
    from evalsvc.serving.base import Served

    with FakeEndpoint() as cand:
        cand.behaviour = _forced_vllm(q)
        scorer = Scorer(Served(base_url=cand.base_url, model="cand"), k=5)
        try:
            return score_cases(scorer, cases), cand.requests
        finally:
            scorer.close()


def _kl(p: dict[str, float], q: dict[str, float]) -> float:
    """KL of the grouped distributions (each listed token alone, the rest one tail) when both list the same tokens."""
    keys = sorted(p)
    return float(entropy([*(p[k] for k in keys), 1 - sum(p.values())], [*(q[k] for k in keys), 1 - sum(q.values())]))


def test_teacher_forcing_scores_every_token_of_the_baseline_answer_with_known_kl_and_top1() -> None:
    answer = ["Paris", " is", " big"]
    forced, requests = _score_forced(Q_CAND, [("c1", [{"role": "user", "content": "Capital?"}], _stored(P_BASE, answer))])
    asked = [r for r in requests if "prompt_logprobs" in r]
    assert asked == [{"model": "cand", "prompt": [1, 2, 3, 10, 11, 12], "prompt_logprobs": 5, "max_tokens": 1,
                      "temperature": 0}]
    assert {"messages": [{"role": "user", "content": "Capital?"}], "add_generation_prompt": True,
            "model": "cand"} in requests
    assert forced.skipped == {}
    got = forced.cases["c1"]
    assert got.mode == "teacher_forced" and got.positions == 3  # every token, past the first disagreement too
    expected = [_kl(p, q) for p, q in zip(P_BASE, Q_CAND, strict=True)]
    assert got.kld == pytest.approx(sum(expected) / 3, abs=1e-4)  # stored log-probabilities are rounded to 1e-4
    assert got.top1_agreement == pytest.approx(2 / 3)  # the candidate prefers " nice" at the third position
    assert (got.first_divergence, got.same_output, got.baseline_token, got.candidate_token) == (2, 0, " big", " nice")
    assert got.delta_p == pytest.approx(((0.5 - 0.7) + (0.8 - 0.9) + (0.4 - 0.6)) / 3, abs=1e-4)


def test_teacher_forcing_with_the_baseline_own_distributions_has_no_divergence() -> None:
    got = _score_forced(P_BASE, [("c1", [{"role": "user", "content": "q"}],
                                  _stored(P_BASE, ["Paris", " is", " big"]))])[0].cases["c1"]
    assert got.kld == pytest.approx(0.0, abs=1e-4) and got.top1_agreement == 1.0 and got.same_output == 1
    assert got.first_divergence == 3 and (got.baseline_token, got.candidate_token) == (None, None)


def test_teacher_forcing_keeps_the_exact_value_of_a_baseline_token_outside_the_candidates_top_k() -> None:
    q = [{"Paris": 0.5, " the": 0.3}, {" is": 0.8, " big": 0.1}, {" nice": 0.5, " is": 0.4}]  # " big" unlisted at 3
    got = _score_forced(q, [("c1", [{"role": "user", "content": "q"}], _stored(P_BASE, ["Paris", " is", " big"]))])[0].cases["c1"]
    assert got.delta_p == pytest.approx(((0.5 - 0.7) + (0.8 - 0.9) + (math.exp(-9.0) - 0.6)) / 3, abs=1e-4)


def test_teacher_forcing_skips_a_case_whose_tokens_the_candidate_splits_otherwise() -> None:
    stored = _stored([{"Paris is": 0.9}, P_BASE[2]], ["Paris is", " big"])  # another tokenizer: "Paris is" one token
    forced = _score_forced(Q_CAND, [("c1", [{"role": "user", "content": "q"}], stored), ("c2", [], [])])[0]
    assert forced.cases == {}
    assert "positions do not match" in forced.skipped["c1"] and "no tokens" in forced.skipped["c2"]


def test_compact_prompt_names_a_position_that_does_not_list_its_own_token() -> None:
    from evalsvc.serving.logprobs import compact_prompt

    entries = [None, {"7": {"logprob": -0.1, "rank": 1, "decoded_token": "a"}}]
    assert compact_prompt(entries, [5, 7], 1) == [["a", -0.1, [["a", -0.1]]]]
    with pytest.raises(MalformedResponseError, match=r"prompt_logprobs\[1\] does not list the prompt's token 8"):
        compact_prompt(entries, [5, 8], 1)
    with pytest.raises(MalformedResponseError, match="one entry per prompt token"):
        compact_prompt(entries, [5, 7, 9], 1)


def test_summaries_of_teacher_forced_cases_show_top1_and_name_their_mode() -> None:
    from evalsvc.stats.divergence import compare_forced

    base = from_stored(_stored(P_BASE, ["Paris", " is", " big"]))
    forced = from_stored(_stored(Q_CAND, ["Paris", " is", " big"]))
    rows = {r.metric: r for r in summarise([compare_forced(base, forced), compare_forced(base, base)], n_boot=200)}
    assert rows["top1_agreement"].estimate == pytest.approx((2 / 3 + 1) / 2)
    assert all("teacher-forced" in r.method for r in rows.values())
    shared = summarise([compare_answers(base, forced)], n_boot=200)
    assert "top1_agreement" not in {r.metric for r in shared} and all("shared prefix" in r.method for r in shared)
    with pytest.raises(ValueError, match="not the baseline's answer"):
        compare_forced(base, base[:2])
