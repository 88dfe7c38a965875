"""Arena ratings: Bradley-Terry scores, bootstrap intervals and head-to-head win rates from battles.

A battle is one judged comparison of two models' answers to the same case. Pairwise judgements
rank many variants on one scale even when not every pair met, which per-run aggregates cannot do.
Pure statistics: no I/O; the caller loads battles and stores what comes out.

Every model is fitted in natural log-odds units ``theta`` with the anchor pinned at 0, then shown on
the Elo-like scale ``rating = init_rating + theta * scale / ln(base)``, so that
P(a beats b) = 1 / (1 + base ** ((r_b - r_a) / scale)), as on the LMSYS Chatbot Arena.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize  # ~0.9 s to import; this module is only loaded where ratings are computed
from scipy.special import expit

from evalsvc.stats.aggregate import wilson_interval

Floats = NDArray[np.float64]

# Gaussian prior on the spread of theta about its mean (precision, in units of one battle's log-likelihood),
# used only where the maximum-likelihood estimate does not exist. The BT MLE is finite iff the directed
# graph "i scored against j" is strongly connected (Zermelo 1929; Ford 1957, Amer. Math. Monthly 64:28);
# an undefeated or winless model breaks that and its MLE runs off to +/- infinity, so any finite answer
# is the optimiser giving up somewhere arbitrary. Prior SD = 1/sqrt(1e-3) ~ 32 log-odds (~5,500 points
# on the default scale): far too weak to move a rating the data pin down (one battle carries up to 0.25
# of information), just strong enough to make the optimum exist. An undefeated model with 20 wins then
# lands ~1,300 points above the field: finite, reproducible, and plainly "off the chart". Centring on the
# mean rather than on the anchor keeps the choice of anchor a pure shift of the scale.
RIDGE = 1e-3
_GTOL = 1e-9  # on the per-battle mean gradient: ratings then sit well under 0.01 points from the optimum


@dataclass(frozen=True)
class Battle:
    """One judged comparison: ``outcome`` is 1.0 if ``a`` won, 0.0 if ``b`` won, 0.5 for a tie."""

    a: str
    b: str
    outcome: float
    len_a: int | None = None
    len_b: int | None = None
    case_id: str | None = None
    count: int = 1  # this outcome this many times: battles tallied by (a, b, outcome), e.g. by a SQL GROUP BY

    def __post_init__(self) -> None:
        where = f"battle {self.case_id or f'{self.a} vs {self.b}'}"
        if self.a == self.b:
            raise ValueError(f"{where}: a model cannot battle itself")
        if not 0.0 <= self.outcome <= 1.0:
            raise ValueError(f"{where}: outcome must lie in [0, 1], got {self.outcome}")
        if self.count < 1:
            raise ValueError(f"{where}: count must be at least 1, got {self.count}")


@dataclass(frozen=True)
class Row:
    """One leaderboard line; the win-rate fields are None for the anchor and for models that never met it."""

    model: str
    rating: float
    ci_low: float
    ci_high: float
    n_battles: int
    win_rate_vs_anchor: float | None
    win_ci_low: float | None
    win_ci_high: float | None


def _encode(battles: Sequence[Battle], anchor: str) -> tuple[list[str], NDArray[np.intp], NDArray[np.intp], Floats, Floats]:
    """Model names (anchor first, so theta[0] is the pinned one) and battles as index/outcome/count arrays."""
    names = {name for battle in battles for name in (battle.a, battle.b)}
    if anchor not in names:
        raise ValueError(f"anchor {anchor!r} has no battles; models seen: {sorted(names)}")
    models = [anchor, *sorted(names - {anchor})]
    index = {name: i for i, name in enumerate(models)}
    ia = np.array([index[battle.a] for battle in battles], dtype=np.intp)
    ib = np.array([index[battle.b] for battle in battles], dtype=np.intp)
    return (models, ia, ib, np.array([battle.outcome for battle in battles], dtype=np.float64),
            np.array([battle.count for battle in battles], dtype=np.float64))


def _reach(adj: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Transitive closure of a stack of graphs (..., M, M) by repeated squaring: ceil(log2 M) matmuls."""
    m = adj.shape[-1]
    reach = (adj | np.eye(m, dtype=bool)).astype(np.float32)
    for _ in range(max(1, math.ceil(math.log2(m)))):
        reach = ((reach @ reach) > 0).astype(np.float32)
    return reach > 0


def _fit(points: Floats, x0: Floats) -> Floats:
    """Maximum-likelihood theta for a stack of points matrices (B, M, M), anchor (index 0) pinned at 0.

    ``points[k, i, j]`` is what i scored against j in resample k (a tie adds 0.5 to both cells, the usual
    "half a win each" duplication). Models not connected to the anchor come back as NaN. The B fits are
    independent, so their summed objective is minimised in one L-BFGS-B call: vectorised, and the
    analytic gradient keeps it exact (Chiang et al. 2024, arXiv 2403.04132, fit the same likelihood).
    """
    b, m, _ = points.shape
    played = points + points.transpose(0, 2, 1) > 0
    connected = _reach(played)[:, 0, :]
    both = connected[:, :, None] & connected[:, None, :]
    points = np.where(both, points, 0.0)
    wins = _reach(points > 0)
    strong = (wins[:, 0, :] & wins[:, :, 0]) | ~connected
    ridge = np.where(strong.all(axis=1), 0.0, RIDGE)[:, None]
    per_battle = points.sum(axis=(1, 2)).max()

    def objective(x: Floats) -> tuple[float, Floats]:
        theta = np.concatenate([np.zeros((b, 1)), x.reshape(b, m - 1)], axis=1)
        diff = theta[:, :, None] - theta[:, None, :]
        loglik = -(points * np.logaddexp(0.0, -diff)).sum()
        resid = points * expit(-diff)  # d/d(diff) of points * log(sigmoid(diff))
        centred = theta - theta.mean(axis=1, keepdims=True)
        grad = resid.sum(axis=2) - resid.sum(axis=1) - ridge * centred
        value = -loglik + 0.5 * float((ridge * centred**2).sum())
        return value / per_battle, -grad[:, 1:].ravel() / per_battle

    result = minimize(objective, x0.ravel(), jac=True, method="L-BFGS-B",
                      options={"maxiter": 5000, "maxcor": 20, "ftol": 0.0, "gtol": _GTOL})
    if np.max(np.abs(objective(result.x)[1])) > 1e3 * _GTOL:
        raise RuntimeError(f"Bradley-Terry fit did not converge: {result.message}")
    theta = np.concatenate([np.zeros((b, 1)), result.x.reshape(b, m - 1)], axis=1)
    return np.where(connected, theta, np.nan)


def _points_matrix(m: int, ia: NDArray[np.intp], ib: NDArray[np.intp], y: Floats, w: Floats) -> Floats:
    points = np.zeros((m, m))
    np.add.at(points, (ia, ib), y * w)
    np.add.at(points, (ib, ia), (1.0 - y) * w)
    return points


def _check_scale(scale: float, base: float) -> float:
    if scale <= 0 or base <= 1:
        raise ValueError(f"need scale > 0 and base > 1, got scale={scale}, base={base}")
    return scale / math.log(base)


def _fit_point(models: list[str], ia: NDArray[np.intp], ib: NDArray[np.intp], y: Floats, w: Floats) -> Floats:
    """Theta of the full data set; refuses models with no chain of battles to the anchor (models[0])."""
    theta: Floats = _fit(_points_matrix(len(models), ia, ib, y, w)[None], np.zeros(len(models) - 1))[0]
    lost = [name for name, value in zip(models, theta, strict=True) if np.isnan(value)]
    if lost:
        raise ValueError(f"no chain of battles links {lost} to anchor {models[0]!r}; their ratings would be arbitrary")
    return theta


def bradley_terry(battles: Sequence[Battle], anchor: str, scale: float = 400.0, base: float = 10.0,
                  init_rating: float = 1000.0) -> dict[str, float]:
    """Maximum-likelihood Bradley-Terry ratings (Bradley & Terry 1952), anchored at ``init_rating``.

    Unlike online Elo this does not depend on battle order, and it is the estimator behind the
    Chatbot Arena leaderboard (Chiang et al. 2024, arXiv 2403.04132). Plain MLE whenever it exists;
    see ``RIDGE`` for the one case (an undefeated or winless model) that needs a prior.
    """
    per_unit = _check_scale(scale, base)
    models, ia, ib, y, w = _encode(battles, anchor)
    theta = _fit_point(models, ia, ib, y, w)
    return {name: init_rating + float(value) * per_unit for name, value in zip(models, theta, strict=True)}


def bootstrap_intervals(battles: Sequence[Battle], anchor: str, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0,
                        scale: float = 400.0, base: float = 10.0, init_rating: float = 1000.0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of each rating (Efron & Tibshirani 1993, ch. 13), resampling cases.

    Battles on one case share that case's difficulty (every pair of variants meets on it), so they are not
    independent: resampling battles one by one makes the intervals too narrow (4 variants x 50 cases, case
    difficulty SD 2: a bootstrap SD of 19 rating points against a sampling SD of 26, and "95%" intervals that
    cover 86%). This resamples cases with replacement, each drawn case with all its battles: the cluster bootstrap
    (Davison & Hinkley 1997, *Bootstrap Methods and their Application*, section 3.8; Field & Welsh 2007, JRSS B
    69:369-390). Coverage is simulated in docs/statistics.md (`bench/arena_coverage.py`). Battles without a case id
    are each their own cluster (a tally of ``count`` of them, ``count`` clusters). A model left unconnected to the
    anchor in a resample is dropped from that resample (its rating there is undefined); the anchor's interval is the
    point (init_rating, init_rating), since every rating is measured from it.
    """
    if not 0 < alpha < 1 or n_boot < 1:
        raise ValueError(f"need 0 < alpha < 1 and n_boot >= 1, got alpha={alpha}, n_boot={n_boot}")
    per_unit = _check_scale(scale, base)
    models, ia, ib, y, w = _encode(battles, anchor)
    m = len(models)
    point = _fit_point(models, ia, ib, y, w)
    # rows: one per case (all its battles), and one per kind (a, b, outcome) of the battles without a case id: those
    # are clusters of one battle each, so a kind is drawn with its multiplicity and gives one battle per draw (a
    # multinomial over kinds is the same distribution as drawing the battles themselves, and costs less)
    rows: dict[object, int] = {}
    member = np.empty(len(battles), dtype=np.intp)
    for k, battle in enumerate(battles):
        key = battle.case_id if battle.case_id is not None else (None, int(ia[k]), int(ib[k]), float(y[k]))
        member[k] = rows.setdefault(key, len(rows))
    single = np.array([battle.case_id is None for battle in battles], dtype=bool)
    per_row = np.zeros((len(rows), m * m))  # each row's points matrix, flattened
    grouped = ~single  # a case's row: all its battles, each with its count
    np.add.at(per_row, (member[grouped], (ia * m + ib)[grouped]), (y * w)[grouped])
    np.add.at(per_row, (member[grouped], (ib * m + ia)[grouped]), ((1.0 - y) * w)[grouped])
    kinds = np.flatnonzero(single)[np.unique(member[single], return_index=True)[1]]  # one battle of each kind
    per_row[member[kinds], (ia * m + ib)[kinds]] += y[kinds]  # a kind's row: one battle of it
    per_row[member[kinds], (ib * m + ia)[kinds]] += 1.0 - y[kinds]
    multiplicity = np.ones(len(rows))
    multiplicity[member[kinds]] = 0.0
    np.add.at(multiplicity, member[single], w[single])
    clusters = int(multiplicity.sum())
    draws = np.random.default_rng(seed).multinomial(clusters, multiplicity / clusters, size=n_boot)
    points = (draws @ per_row).reshape(n_boot, m, m)
    ratings = init_rating + _fit(points, np.tile(point[1:], n_boot)) * per_unit
    out: dict[str, tuple[float, float]] = {}
    for i, name in enumerate(models):
        column = ratings[:, i][~np.isnan(ratings[:, i])]
        if column.size == 0:  # cut off from the anchor in every resample: only possible with tiny n_boot
            out[name] = (math.nan, math.nan)
            continue
        low, high = np.percentile(column, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        out[name] = (float(low), float(high))
    return out


def _head_to_head(battles: Sequence[Battle], model: str, against: str) -> tuple[list[Battle], Floats, Floats]:
    """The battles between the two (either order), ``model``'s points in each, and their counts."""
    met = [battle for battle in battles if {battle.a, battle.b} == {model, against}]
    if not met:
        raise ValueError(f"{model!r} and {against!r} never met")
    return (met, np.array([battle.outcome if battle.a == model else 1.0 - battle.outcome for battle in met]),
            np.array([battle.count for battle in met], dtype=np.float64))


def win_rate(battles: Sequence[Battle], model: str, against: str, alpha: float = 0.05) -> tuple[float, float, float]:
    """Share of the points ``model`` took off ``against`` head to head, with a Wilson interval.

    Ties: a tie is half a win and half a loss, so it adds 0.5 to the points and 1 to n, and the Wilson
    interval is computed on (points, n) as if the points were successes in n Bernoulli trials. A tie
    really has variance 0 rather than 0.25, so with many ties the interval is a little conservative.
    Returns (rate, low, high).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"need 0 < alpha < 1, got {alpha}")
    _, points, counts = _head_to_head(battles, model, against)
    total, n = float((points * counts).sum()), int(counts.sum())
    return (total / n, *wilson_interval(total, n, alpha))


def _length_gap(battle: Battle, model: str) -> int:
    """How much longer ``model``'s answer was than its opponent's in this battle."""
    if battle.len_a is None or battle.len_b is None:
        raise ValueError(f"battle {battle.case_id or ''} ({battle.a} vs {battle.b}): length control needs len_a and len_b")
    gap = battle.len_a - battle.len_b
    return gap if battle.a == model else -gap


def length_controlled_win_rate(battles: Sequence[Battle], model: str, against: str) -> float:
    """Win rate of ``model`` over ``against`` had their answers been of equal length.

    A simplification of length-controlled AlpacaEval (Dubois et al. 2024, arXiv 2404.04475): a logistic
    regression of ``model``'s points on an intercept and tanh(delta_len / std(delta_len)), read at
    delta_len = 0, i.e. sigmoid(intercept). LC AlpacaEval also fits per-instruction difficulty terms and
    per-model coefficients over many models; we have one pair, so only the length mediator is controlled.
    Ties enter as target 0.5 (the same likelihood as a win and a loss at weight 0.5 each). The same tiny
    ``RIDGE`` (towards 0) on both coefficients keeps the fit finite when length separates the outcomes.
    Then, though, only equal-length battles pin the intercept: with none the answer is set by the ridge.
    """
    met, y, _ = _head_to_head(battles, model, against)
    if any(battle.count > 1 for battle in met):
        raise ValueError("length control needs the individual battles (their answer lengths), not tallies")
    delta = np.array([_length_gap(battle, model) for battle in met], dtype=np.float64)
    spread = float(delta.std(ddof=1)) if len(delta) > 1 else 0.0
    if spread == 0 and delta.any():
        raise ValueError(f"every battle has the same length difference ({delta[0]:+g}); length and model cannot be told apart")
    x = np.tanh(delta / spread) if spread > 0 else np.zeros_like(delta)

    def objective(beta: Floats) -> tuple[float, Floats]:
        eta = beta[0] + beta[1] * x
        value = float((y * np.logaddexp(0.0, -eta) + (1 - y) * np.logaddexp(0.0, eta)).sum()) + 0.5 * RIDGE * float(beta @ beta)
        resid = y - expit(eta)
        return value, -np.array([resid.sum(), (resid * x).sum()]) + RIDGE * beta

    result = minimize(objective, np.zeros(2), jac=True, method="L-BFGS-B", options={"ftol": 0.0, "gtol": 1e-8})
    return float(expit(result.x[0]))


def leaderboard(battles: Sequence[Battle], anchor: str, n_boot: int = 1000, seed: int = 0) -> list[Row]:
    """Ratings with bootstrap intervals and the head-to-head record against the anchor, best first."""
    ratings = bradley_terry(battles, anchor)
    intervals = bootstrap_intervals(battles, anchor, n_boot=n_boot, seed=seed)
    rows = []
    for name, rating in ratings.items():
        n_battles = sum(battle.count for battle in battles if name in (battle.a, battle.b))
        rate: tuple[float | None, float | None, float | None] = (None, None, None)
        if name != anchor and any({battle.a, battle.b} == {name, anchor} for battle in battles):
            rate = win_rate(battles, name, anchor)
        rows.append(Row(name, rating, *intervals[name], n_battles, *rate))
    return sorted(rows, key=lambda row: (-row.rating, row.model))
