from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nltk.stem import porter
from rouge_score import rouge_scorer, tokenize

from evalsvc.checks import build_check, fast_rouge
from evalsvc.suites import Case

TYPES = ("rouge1", "rouge2", "rouge3", "rougeL", "rougeLsum")
_SETTINGS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Few words, so that pairs overlap and repeat; inflections that the stemmer merges (and one that it maps out of
# [a-z0-9]); unicode that lower() turns into ASCII letters (Kelvin sign, dotted capital I) or that is dropped.
_WORDS = (
    "the", "a", "cat", "cats", "sat", "sitting", "on", "mat", "mats", "storm", "storms", "cut", "cutting", "power",
    "powered", "homes", "home", "running", "runs", "ran", "agreed", "agreement", "skies", "dying", "ies", "3",
    "3,000", "12ab", "THE", "Cat", "U.S.", "e-mail", "Über", "naïve", "\u212aelvin", "İstanbul", "straße", "東京",
)
_SEPARATORS = (" ", " ", " ", ", ", ". ", ".\n", "\n", "\n\n", " \n ", "\t", "!", " - ", "'s ")


@st.composite
def _texts(draw: st.DrawFn, max_words: int = 40) -> str:
    words = draw(st.lists(st.sampled_from(_WORDS), max_size=max_words))
    seps = draw(st.lists(st.sampled_from(_SEPARATORS), min_size=len(words), max_size=len(words)))
    return "".join(w + s for w, s in zip(words, seps, strict=True))


@pytest.fixture(autouse=True, scope="module", params=["C core", "Python"])
def counting(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs twice: counting in the C extension (built by pip install) and in pure Python."""
    built = fast_rouge._rouge_core
    if request.param == "C core":
        assert built is not None, "evalsvc/checks/_rouge_core.c is not built: run pip install -e . where a C compiler is found"
    else:
        fast_rouge._rouge_core = None
    yield request.param
    fast_rouge._rouge_core = built


_ANY_TEXT = st.one_of(_texts(), st.text(max_size=60), st.text(alphabet="ab \n.", max_size=40))


def _want(target: str, prediction: str, stem: bool, types: tuple[str, ...] = TYPES) -> dict[str, tuple]:
    got = rouge_scorer.RougeScorer(list(types), use_stemmer=stem).score(target, prediction)
    return {t: tuple(s) for t, s in got.items()}


def _got(target: str, prediction: str, stem: bool, types: tuple[str, ...] = TYPES) -> dict[str, tuple]:
    return {t: tuple(s) for t, s in fast_rouge.score(prediction, target, types, stem).items()}


@_SETTINGS
@given(text=_ANY_TEXT, stem=st.booleans())
def test_tokens_are_rouge_scores_tokens(text: str, stem: bool) -> None:
    assert fast_rouge.tokenize(text, stem) == tokenize.tokenize(text, porter.PorterStemmer() if stem else None)


@_SETTINGS
@given(target=_ANY_TEXT, prediction=_ANY_TEXT, stem=st.booleans())
def test_scores_equal_rouge_score_on_generated_pairs(target: str, prediction: str, stem: bool) -> None:
    assert _got(target, prediction, stem) == _want(target, prediction, stem)


@_SETTINGS
@given(target=_texts(), stem=st.booleans(), data=st.data())
def test_scores_equal_rouge_score_on_edited_predictions(target: str, stem: bool, data: st.DataObject) -> None:
    """Predictions made from the target (lines reordered, words dropped) share long subsequences with it."""
    lines = target.split("\n")
    lines = data.draw(st.permutations(lines))
    kept = [" ".join(w for w in line.split(" ") if data.draw(st.booleans())) for line in lines]
    prediction = data.draw(st.sampled_from(["\n", " "])).join(kept)  # as many lines as the target, or one
    assert _got(target, prediction, stem) == _want(target, prediction, stem)


@_SETTINGS
@given(target=_texts(), prediction=_texts(), types=st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True))
def test_each_subset_of_types_scores_the_same(target: str, prediction: str, types: list[str]) -> None:
    # rouge-score tokenizes differently when rougeLsum is the only type; results must not depend on the set.
    assert _got(target, prediction, False, tuple(types)) == _want(target, prediction, False, tuple(types))


@pytest.mark.parametrize(("target", "prediction"), [
    ("", ""),
    ("", "the cat"),
    ("the cat", ""),
    ("...!?", "- -- ,"),
    ("\n\n\n", "\n"),
    ("the cat sat", "\n\n...\n"),
    ("Ünïcödé wörds ünd 東京 2024", "unicode words und 2024 東京"),
    ("\u212aELVIN İstanbul ǅ ﬁne", "kelvin i stanbul fine"),
    ("the the the the the", "the the"),
    ("a a b b a a b b", "b b a a b b a a"),
    ("a b", "b a\nb"),
    ("b\na", "a b"),
    ("a b", "b\na"),
    ("w1 w2 w3 w4 w5", "w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5"),
    ("one two three.\nfour five six.\nseven eight", "eight seven\nsix five four\nthree two one"),
    ("x y x y\nx y\ny x", "y x\nx y x\ny y x x"),
    ("the cats were running\nthe dog runs", "a cat ran\nthe dogs running and running"),
    (" ".join(f"w{i % 37}" for i in range(400)), " ".join(f"w{(i * 7) % 41}" for i in range(350))),
    ("\n".join(" ".join(f"t{(i * j) % 23}" for j in range(30)) for i in range(8)),
     "\n".join(" ".join(f"t{(i + j) % 19}" for j in range(25)) for i in range(9))),
])
@pytest.mark.parametrize("stem", [False, True])
def test_edge_cases_equal_rouge_score(target: str, prediction: str, stem: bool) -> None:
    assert _got(target, prediction, stem) == _want(target, prediction, stem)


def test_union_lcs_follows_lins_example() -> None:
    # Lin (2004), section 3.2: the union LCS of r with c1 and c2 is w1 w2 w3 w5.
    got = fast_rouge.score("w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5", "w1 w2 w3 w4 w5", ["rougeLsum"])["rougeLsum"]
    assert (got.precision, got.recall) == (4 / 10, 4 / 5)


def test_rouge_lsum_takes_the_lcs_that_rouge_score_backtracks_to() -> None:
    # "a b" against "b a" has two LCSs; rouge-score's backtrack takes "a", so the union with "b" covers both.
    got = fast_rouge.score("b a\nb", "a b", ["rougeLsum"])["rougeLsum"]
    assert (got.precision, got.recall) == (2 / 3, 1.0)


def test_score_multi_scores_each_reference_like_score() -> None:
    refs = ["the cat sat on the mat", "a storm cut power\nto homes", ""]
    pred = "The cat sat.\nA storm cut the power"
    assert fast_rouge.score_multi(pred, refs, TYPES, True) == [fast_rouge.score(pred, r, TYPES, True) for r in refs]


@pytest.mark.parametrize("processes", [None, 1, 2])
def test_score_many_gives_the_same_scores_in_order(processes: int | None) -> None:
    pairs = [(f"the cat sat on mat {i}\nruns {i % 3}", f"a cat sat on the mat {i % 5}\nrunning") for i in range(40)]
    got = fast_rouge.score_many(pairs, TYPES, stem=True, processes=processes)
    assert got == [fast_rouge.score(p, r, TYPES, True) for p, r in pairs]
    assert [tuple(g["rougeL"]) for g in got] == [tuple(_want(r, p, True)["rougeL"]) for p, r in pairs]


def test_the_c_core_counts_hits_of_str_and_of_token_lists() -> None:
    from evalsvc.checks import _rouge_core

    # the cat sat | on the mat  against  the cat | sat on a mat: unigrams the, cat, sat, on, mat; bigrams the-cat,
    # cat-sat, sat-on; LCS "the cat sat on mat"; union LCS: {the, cat} + {sat}, then {the} + {on, mat}, but the
    # prediction's only "the" is taken already: 3 + 2 hits.
    ref, pred = "The cat sat\non the MAT.", "the cat\nsat, on a mat"
    want = (6, 6, 5, 3, 5, 5)
    assert _rouge_core.hits(ref, pred, (1, 2), True, True, 1 << 22) == want
    as_lists = [[w.lower().strip(".,") for w in line.split()] for line in ref.split("\n")], [["the", "cat"], ["sat", "on", "a", "mat"]]
    assert _rouge_core.hits(*as_lists, (1, 2), True, True, 1 << 22) == want
    assert _rouge_core.hits(ref, pred, (3,), False, False, 1 << 22) == (6, 6, 2, -1, -1)  # "the cat sat", "cat sat on"
    assert _rouge_core.hits(ref, pred, (1,), True, True, 35) is None  # 36 cells
    with pytest.raises(ValueError, match="at most"):
        _rouge_core.hits(ref, pred, (1,), True, True, 1 << 23)
    with pytest.raises(ValueError, match="ASCII"):
        _rouge_core.hits("naïve", "naive", (1,), True, True, 1 << 22)

    class Growing(str):  # its __hash__ would run while the core reads the list it belongs to
        def __hash__(self) -> int:
            sentence.append("more")
            return str.__hash__(self)

    sentence: list[str] = [Growing("a")]
    with pytest.raises(TypeError, match="tokens must be str"):
        _rouge_core.hits([sentence], [["a"]], (1,), True, True, 1 << 22)


def test_pairs_over_the_c_core_table_size_are_scored_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_rouge, "_CORE_CELLS", 100)
    target = "one two three four five\nsix seven eight nine ten eleven"
    prediction = "two one three five four six\nseven nine eight ten eleven twelve"
    assert _got(target, prediction, False) == _want(target, prediction, False)
    assert _got(target, prediction, True) == _want(target, prediction, True)


@pytest.mark.parametrize("bad", ["rouge0", "rougeX", "rouge10", "rougel"])
def test_unknown_rouge_types_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid rouge type"):
        fast_rouge.score("a", "a", [bad])
    with pytest.raises(ValueError):
        rouge_scorer.RougeScorer([bad]).score("a", "a")


@pytest.mark.parametrize("stem", [False, True])
def test_rouge_check_scores_the_best_reference_as_rouge_score_did(stem: bool) -> None:
    refs = ("The storm cut power to 3,000 homes.\nRepairs take days.", "Power cuts hit homes", "")
    output = "A storm cut the power to 3,000 homes on Monday. Repairs are taking days.\nOfficials said so."
    types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    check = build_check({"type": "rouge", "rouge_types": types, "use_stemmer": stem})
    case = Case(id="x", input="q", context=(), references=refs, checks=(), spec={})
    # What Rouge.score did before fast_rouge: rouge-score on the output with ". " made into line breaks.
    split = "\n".join(s.strip() for s in output.replace(". ", ".\n").splitlines())
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=stem)
    assert check.score(output, case) == {t: max(scorer.score(r, split)[t].fmeasure for r in refs) for t in types}
