from __future__ import annotations

import pytest
from pydantic import ValidationError
from rouge_score import rouge_scorer

from evalsvc.checks import build_check, score_output
from evalsvc.suites import Case


def _case(**kw) -> Case:
    base = {"id": "x", "input": "q", "context": (), "references": (), "checks": (), "spec": {}}
    return Case(**{**base, **kw})


def _score(spec: dict, output: str, **case_kw) -> dict[str, float]:
    return build_check(spec).score(output, _case(**case_kw))


@pytest.mark.parametrize(("spec", "output", "expected"), [
    ({"type": "exact", "value": "Paris"}, "  paris. ", 1.0),
    ({"type": "exact", "value": "Paris"}, "Paris, France", 0.0),
    ({"type": "contains", "value": "4"}, "The answer is 42", 0.0),
    ({"type": "contains", "value": "4"}, "It is 4.", 1.0),
    ({"type": "contains", "any_of": ["grey", "gray"]}, "A GRAY cat", 1.0),
    ({"type": "any_of", "any_of": ["H2O"]}, "water is h2o", 1.0),
    ({"type": "regex", "pattern": r"^\d{3}$", "full_match": True}, " 204 ", 1.0),
    ({"type": "numeric", "value": 31}, "21 + 10 = 31", 0.0),
    ({"type": "numeric", "value": 31, "match": "last"}, "21 + 10 = 31", 1.0),
    ({"type": "numeric", "value": 1250}, "1,250 euros", 1.0),
    ({"type": "numeric", "value": -3.5, "tolerance": 0.01}, "-3.499", 1.0),
    ({"type": "json_valid"}, '```json\n{"a": 1}\n```', 1.0),
    ({"type": "json_valid"}, "{'a': 1}", 0.0),
    ({"type": "json_schema", "schema": {"type": "object", "required": ["a"]}}, '{"a": 1}', 1.0),
    ({"type": "json_schema", "schema": {"type": "object", "required": ["a"]}}, '{"b": 1}', 0.0),
    ({"type": "length", "max_words": 3}, "one two three four", 0.0),
    ({"type": "refusal", "expect": True}, "I'm sorry, I can't help with that.", 1.0),
    ({"type": "refusal", "expect": False}, "Paris is the capital.", 1.0),
])
def test_binary_checks(spec: dict, output: str, expected: float) -> None:
    assert _score(spec, output) == {spec.get("name") or spec["type"]: expected}


def test_invalid_json_schema_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="not a valid JSON Schema"):
        build_check({"type": "json_schema", "schema": {"type": "no-such-type"}})


def test_rouge_matches_rouge_score_and_takes_the_best_reference() -> None:
    refs = ("the cat sat on the mat", "a storm cut power to three thousand homes")
    out = "A storm cut the power to 3,000 homes on Monday"
    got = _score({"type": "rouge"}, out, references=refs)
    ref = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    for t in ("rouge1", "rouge2", "rougeL"):
        assert got[t] == pytest.approx(max(ref.score(r, out)[t].fmeasure for r in refs))
    assert got["rouge1"] > 0.5


def test_grounding_separates_copied_from_invented_answers() -> None:
    ctx = ("The meeting is on Tuesday at 3 pm in room 204.",)
    copied = _score({"type": "grounding"}, "The meeting is in room 204.", context=ctx)
    invented = _score({"type": "grounding"}, "Wednesday evening, building nine.", context=ctx)
    assert copied == {"grounding": 1.0, "unsupported_rate": 0.0}
    assert invented["grounding"] == 0.0 and invented["unsupported_rate"] == 1.0


def test_grounding_bigrams_penalise_reordered_words() -> None:
    ctx = ("alice paid bob",)
    assert _score({"type": "grounding", "n": 1}, "bob paid alice", context=ctx)["grounding"] == 1.0
    assert _score({"type": "grounding", "n": 2}, "bob paid alice", context=ctx)["grounding"] == 0.0


def test_pass_requires_every_verdict_and_ignores_measure_only_checks() -> None:
    checks = [build_check({"type": "contains", "value": "Paris"}), build_check({"type": "grounding"}),
              build_check({"type": "length", "max_words": 2})]
    case = _case(context=("Paris is in France",))
    assert score_output(checks, "Paris", case)["pass"] == 1.0
    assert score_output(checks, "It is Paris", case)["pass"] == 0.0
    assert "pass" not in score_output([checks[1]], "Paris", case)
