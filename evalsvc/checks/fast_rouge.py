"""ROUGE with bit-for-bit the scores of Google's ``rouge-score`` 0.1.2, in a fraction of its time.

ROUGE-N, ROUGE-L and summary-level (union-LCS) ROUGE-Lsum are Lin (2004), "ROUGE: A Package for Automatic
Evaluation of Summaries" (ACL workshop Text Summarization Branches Out). rouge-score spends its time filling
an LCS table cell by cell in Python and Porter-stemming every token of every call. Here the tokens, counts
and divisions are the same (hence the same floats), but:

- ASCII text is tokenized by one ``bytes.translate``; NLTK's Porter stems are cached per word;
- the LCS is the bit-parallel algorithm of Allison and Dix (1986), "A bit-string longest-common-subsequence
  algorithm", Inf. Process. Lett. 23(6):305-310, as written by Hyyrö (2004), "Bit-parallel LCS-length
  computation revisited" (AWOCA): one table row is four operations on a Python int;
- rougeLsum depends on *which* LCS rouge-score's backtrack picks, so the rows are kept and its backtrack is
  replayed on them; the candidate's sentences share one bit-vector, split by guard bits, so one pass per
  reference sentence gives its rows against all of them;
- a prediction is tokenized once for all references; ``score_many`` can spread a batch over processes;
- when the C extension ``_rouge_core`` is built (``pip install`` builds it where a C compiler is found), it does
  the counting on tokens turned into small ints: rouge-score's own tables and backtrack, with no Python per
  cell. Pairs too long for full tables (over 2**22 cells), or an install without the extension, count in Python.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from itertools import repeat
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from nltk.stem.porter import PorterStemmer

try:
    from evalsvc.checks import _rouge_core
except ImportError:  # no C compiler at install: the same scores, counted in Python
    _rouge_core = None

_CORE_CELLS = 1 << 22  # _rouge_core's LCS tables hold len(ref) x len(pred) 16-bit cells at most

TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_WORD = re.compile(r"[a-z0-9]+")
_TYPE = re.compile(r"rouge([1-9]|L|Lsum)")
_ALNUM = b"abcdefghijklmnopqrstuvwxyz0123456789"
_ASCII = bytes(c if c in _ALNUM else c + 32 if 65 <= c <= 90 else 32 for c in range(256))
_ASCII_LINES = _ASCII[:10] + b"\n" + _ASCII[11:]  # the same, keeping newlines


class Score(NamedTuple):
    """Same fields (and tuple equality) as ``rouge_score.scoring.Score``."""

    precision: float
    recall: float
    fmeasure: float


_ZERO = Score(0.0, 0.0, 0.0)


@lru_cache(maxsize=1)
def _porter() -> PorterStemmer:
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


_STEMS: dict[str, str] = {}  # word -> its token ("" to drop it); read through map(), cheaper than lru_cache


def _stem(word: str) -> str:
    """Porter only for words longer than 3 characters; rouge-score drops a stem that is not ``[a-z0-9]+``."""
    stem = _porter().stem(word) if len(word) > 3 else word
    if len(_STEMS) >= 1 << 17:
        _STEMS.clear()
    _STEMS[word] = stem = stem if _WORD.fullmatch(stem) else ""
    return stem


def tokenize(text: str, stem: bool = False) -> list[str]:
    """The tokens of ``rouge_score.tokenize.tokenize(text, PorterStemmer() if stem else None)``."""
    if text.isascii():  # lower-case and blank out everything but [a-z0-9] in one C-level pass
        tokens = text.encode("ascii").translate(_ASCII).decode("ascii").split()
    else:
        tokens = _WORD.findall(text.lower())
    return _stemmed(tokens) if stem else tokens


def _stemmed(tokens: list[str]) -> list[str]:
    stems = list(map(_STEMS.get, tokens))
    if None in stems:
        stems = [_stem(t) if s is None else s for s, t in zip(stems, tokens, strict=True)]
    return [t for t in stems if t] if "" in stems else stems


def sentences(text: str, stem: bool = False) -> list[list[str]]:
    """The token lists of rouge-score's rougeLsum sentences (lines), without the ones with no tokens."""
    if text.isascii():
        lines = [s.split() for s in text.encode("ascii").translate(_ASCII_LINES).decode("ascii").split("\n")]
    else:
        lines = [_WORD.findall(s.lower()) for s in text.split("\n")]
    if stem:
        lines = [_stemmed(s) for s in lines]
    return [s for s in lines if s]


def _check_types(types: Sequence[str]) -> None:
    if bad := [t for t in types if not _TYPE.fullmatch(t)]:
        raise ValueError(f"invalid rouge type {bad[0]!r}: expected rouge1..rouge9, rougeL or rougeLsum")


def _layout(sents: Sequence[Sequence[str]]) -> tuple[dict[str, int], list[int], int]:
    """Match masks (bit p set where the word is at p) of the sentences side by side, their offsets, the non-guard bits.

    Each sentence is followed by a guard bit kept at 0, which stops the carry of V + U: sentences never mix.
    """
    pm: dict[str, int] = {}
    offsets = []
    off = guards = 0
    for s in sents:
        offsets.append(off)
        for p, tok in enumerate(s, off):
            pm[tok] = pm.get(tok, 0) | (1 << p)
        off += len(s) + 1
        guards |= 1 << (off - 1)
    return pm, offsets, ((1 << off) - 1) ^ guards


def _lcs_len(tokens: Sequence[str], pm: dict[str, int], keep: int) -> int:
    """LCS of the tokens with the whole layout: a guard is a column that never matches, so its bit stays 1."""
    full = (1 << keep.bit_length()) - 1
    v = full
    for tok in tokens:
        m = pm.get(tok)
        if m:
            u = v & m
            v = (v + u) | (v - u)
    return full.bit_count() - (v & full).bit_count()


def _rows(tokens: Sequence[str], pm: dict[str, int], keep: int) -> list[int]:
    """Hyyrö's recurrence V' = (V + (V & M)) | (V & ~M), one row per token; 0 bits of V are +1 steps of the row."""
    v = keep
    rows = [v]
    for tok in tokens:
        m = pm.get(tok)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & keep
        rows.append(v)
    return rows


def _backtrack(ref: Sequence[str], can: Sequence[str], rows: list[int], off: int, todo: int) -> list[int]:
    """Indices into ``ref`` of the LCS that rouge-score's ``_backtrack_norec`` reads out of its table.

    ``rows[i] >> off`` is row i of the table against ``can``: t[i][j] = j - popcount(its low j bits). On the
    walk t[i][j] = ``todo``, the matches left; on a mismatch rouge-score goes left iff t[i][j-1] > t[i-1][j],
    i.e. iff column j is no step in row i (t[i][j-1] = todo) and t[i-1][j] < todo.
    """
    out: list[int] = []
    i, j = len(ref), len(can)
    base = 1 << off
    bit = base << (j - 1)  # column j's bit
    while todo:  # once every match is found the rest of the walk adds nothing
        if ref[i - 1] == can[j - 1]:
            out.append(i - 1)
            todo -= 1
            i -= 1
            j -= 1
            bit >>= 1
        elif rows[i] & bit and (rows[i - 1] & ((bit << 1) - base)).bit_count() > j - todo:
            j -= 1
            bit >>= 1
        else:
            i -= 1
    return out


class _Text:
    """One text's tokens, sentences (split on newlines, as rouge-score does) and derived tables, made once."""

    __slots__ = ("_grams", "_layout", "sents", "tokens")

    def __init__(self, text: str, stem: bool, lsum: bool) -> None:
        if lsum:
            # Runs of [a-z0-9] never span a newline, so the sentences' tokens concatenate to the text's.
            self.sents = sentences(text, stem)
            self.tokens = [t for s in self.sents for t in s]
        else:
            self.tokens = tokenize(text, stem)
            self.sents = [self.tokens] if self.tokens else []
        self._grams: dict[int, Counter] = {}
        self._layout: tuple[dict[str, int], list[int], int] | None = None

    def grams(self, n: int) -> Counter:
        if n not in self._grams:
            t = self.tokens
            self._grams[n] = Counter(t) if n == 1 else Counter(zip(*(t[k:] for k in range(n)), strict=False))
        return self._grams[n]

    def layout(self) -> tuple[dict[str, int], list[int], int]:
        if self._layout is None:
            self._layout = _layout(self.sents)
        return self._layout


def _prf(hits: int, n_pred: int, n_ref: int) -> Score:
    p = hits / n_pred
    r = hits / n_ref
    return Score(p, r, 2 * p * r / (p + r) if p + r > 0 else 0.0)


def _rouge_n(ref: _Text, pred: _Text, n: int) -> Score:
    a, b = ref.grams(n), pred.grams(n)
    if len(a) > len(b):
        a, b = b, a
    hits = 0
    for g, c in a.items():
        d = b.get(g)
        if d:
            hits += c if c < d else d
    return _prf(hits, max(len(pred.tokens) - n + 1, 1), max(len(ref.tokens) - n + 1, 1))


def _rouge_l(ref: _Text, pred: _Text) -> Score:
    if not ref.tokens or not pred.tokens:
        return _ZERO
    pm, _, keep = pred.layout()
    return _prf(_lcs_len(ref.tokens, pm, keep), len(pred.tokens), len(ref.tokens))


def _rouge_lsum(ref: _Text, pred: _Text) -> Score:
    if not ref.sents or not pred.sents:
        return _ZERO
    pm, offsets, keep = pred.layout()
    union: Counter = Counter()
    for r in ref.sents:
        rows = _rows(r, pm, keep)
        v = rows[-1]
        if v == keep:  # no token of r occurs in the prediction
            continue
        idx: set[int] = set()
        for c, off in zip(pred.sents, offsets, strict=True):
            todo = len(c) - ((v >> off) & ((1 << len(c)) - 1)).bit_count()
            if todo:
                idx.update(_backtrack(r, c, rows, off, todo))
        union.update(r[i] for i in idx)
    # rouge-score also clips by the reference's counts, but a union of distinct positions never exceeds them.
    pred_counts = pred.grams(1)
    hits = sum(min(u, pred_counts[t]) for t, u in union.items())
    return _prf(hits, len(pred.tokens), len(ref.tokens))


_BY_TYPE = {"rougeL": _rouge_l, "rougeLsum": _rouge_lsum}


def _score_py(ref: _Text, pred: _Text, types: Sequence[str]) -> dict[str, Score]:
    done: dict[str, Score] = {}

    def get(t: str) -> Score:
        if t not in done:
            done[t] = _BY_TYPE[t](ref, pred) if t in _BY_TYPE else _rouge_n(ref, pred, int(t[5:]))
        return done[t]

    # One sentence a side: the union LCS is the LCS, whose tokens all occur in both, so hits = its length.
    one = len(ref.sents) == 1 and len(pred.sents) == 1
    return {t: get("rougeL" if one and t == "rougeLsum" else t) for t in types}


def _score_core(ref: str | list[list[str]], pred: str | list[list[str]], types: Sequence[str]) -> dict[str, Score] | None:
    """The same scores from the hits that ``_rouge_core`` counts; None for a pair too long for its tables."""
    ns = tuple(int(t[5:]) for t in types if t not in _BY_TYPE)
    got = _rouge_core.hits(ref, pred, ns, "rougeL" in types, "rougeLsum" in types, _CORE_CELLS)
    if got is None:
        return None
    nr, npred, *grams, lcs, lsum = got
    out = {f"rouge{n}": _prf(h, max(npred - n + 1, 1), max(nr - n + 1, 1)) for n, h in zip(ns, grams, strict=True)}
    if nr and npred:
        out["rougeL"], out["rougeLsum"] = _prf(lcs, npred, nr), _prf(lsum, npred, nr)
    else:
        out["rougeL"] = out["rougeLsum"] = _ZERO
    return {t: out[t] for t in types}


class _Pair:
    """Scores references against one prediction, tokenizing the prediction at most once."""

    __slots__ = ("lsum", "pred", "stem", "text", "types")

    def __init__(self, prediction: str, types: Sequence[str], stem: bool) -> None:
        self.text, self.types, self.stem, self.lsum = prediction, types, stem, "rougeLsum" in types
        self.pred: _Text | None = None

    def score(self, reference: str) -> dict[str, Score]:
        ref: _Text | None = None
        if _rouge_core is not None:
            if not self.stem and reference.isascii() and self.text.isascii():  # tokenized in C
                got = _score_core(reference, self.text, self.types)
            else:
                ref = _Text(reference, self.stem, True)
                got = _score_core(ref.sents, self._pred().sents, self.types)
            if got is not None:
                return got
        return _score_py(ref or _Text(reference, self.stem, self.lsum), self._pred(), self.types)

    def _pred(self) -> _Text:
        if self.pred is None:  # split into lines whatever the types: its tokens are the same
            self.pred = _Text(self.text, self.stem, True)
        return self.pred


def score_multi(
    prediction: str, references: Iterable[str], types: Sequence[str] = TYPES, stem: bool = False
) -> list[dict[str, Score]]:
    """``RougeScorer(types, use_stemmer=stem).score(ref, prediction)`` for each reference, in order."""
    _check_types(types)
    pair = _Pair(prediction, tuple(types), stem)
    return [pair.score(ref) for ref in references]


def score(prediction: str, reference: str, types: Sequence[str] = TYPES, stem: bool = False) -> dict[str, Score]:
    """``RougeScorer(types, use_stemmer=stem).score(reference, prediction)`` (note its target-first order)."""
    return score_multi(prediction, (reference,), types, stem)[0]


def _score_chunk(pairs: Sequence[tuple[str, str]], types: tuple[str, ...], stem: bool) -> list[dict[str, Score]]:
    return [_Pair(pred, types, stem).score(ref) for pred, ref in pairs]


def score_many(
    pairs: Iterable[tuple[str, str]], types: Sequence[str] = TYPES, stem: bool = False, processes: int | None = None
) -> list[dict[str, Score]]:
    """Score (prediction, reference) pairs, in order.

    ``processes`` None or 1: in this process; N > 1: a pool of N processes, 4 chunks each so that no core
    idles on a slow chunk. With the C core, one process scores tens of thousands of pairs a second and moving
    pairs and scores between processes costs about as much: a pool pays only with the stemmer, or without the core.
    """
    pairs = list(pairs)
    types = tuple(types)
    _check_types(types)
    if processes is None or processes <= 1 or len(pairs) < 2 * processes:
        return _score_chunk(pairs, types, stem)
    size = -(-len(pairs) // (processes * 4))
    chunks = [pairs[k : k + size] for k in range(0, len(pairs), size)]
    with ProcessPoolExecutor(processes) as pool:
        return [s for part in pool.map(_score_chunk, chunks, repeat(types), repeat(stem)) for s in part]
