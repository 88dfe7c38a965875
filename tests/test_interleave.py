"""The gate's two arms interleaved: which requests are paired when one arm already has some answers (a resumed run)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from evalsvc.engine.interleave import pairs


def _items(arm: str, keys: list[tuple[str, int]]) -> list[Any]:
    return [SimpleNamespace(case=SimpleNamespace(id=cid), sample=k, arm=arm) for cid, k in keys]


def test_each_case_and_sample_is_paired_and_what_one_arm_already_has_comes_alone() -> None:
    order = {"c0": 0, "c1": 1, "c2": 2, "c3": 3}
    a = _items("a", [("c0", 0), ("c0", 1), ("c2", 0), ("c2", 1), ("c3", 0)])  # c1 answered before (resumed)
    b = _items("b", [("c0", 1), ("c1", 0), ("c1", 1), ("c2", 0), ("c2", 1)])  # c0#0 and c3 answered before
    got = [(x and (x.case.id, x.sample), y and (y.case.id, y.sample)) for x, y in pairs(order, iter(a), iter(b))]
    assert got == [(("c0", 0), None), (("c0", 1), ("c0", 1)), (None, ("c1", 0)), (None, ("c1", 1)),
                   (("c2", 0), ("c2", 0)), (("c2", 1), ("c2", 1)), (("c3", 0), None)]


def test_an_arm_with_nothing_left_leaves_the_other_alone() -> None:
    order = {"c0": 0, "c1": 1}
    got = list(pairs(order, iter([]), iter(_items("b", [("c0", 0), ("c1", 0)]))))
    assert [(x, y.case.id) for x, y in got] == [(None, "c0"), (None, "c1")]
