from __future__ import annotations

import math

import numpy as np
import pytest

from evalsvc.stats.ratings import Battle, bootstrap_intervals, bradley_terry, leaderboard, length_controlled_win_rate, win_rate

TRUE = {"f16": 1000.0, "q8": 990.0, "q4": 900.0, "q2": 700.0}


def simulate(n: int, seed: int, tie_rate: float = 0.0, true: dict[str, float] = TRUE) -> list[Battle]:
    """Battles drawn from the Bradley-Terry model on the default scale (a tie replaces the draw at ``tie_rate``)."""
    rng = np.random.default_rng(seed)
    names = list(true)
    pairs = np.array([rng.choice(len(names), size=2, replace=False) for _ in range(n)])
    battles = []
    for k, (i, j) in enumerate(pairs):
        a, b = names[i], names[j]
        p_a = 1 / (1 + 10 ** ((true[b] - true[a]) / 400))
        outcome = 0.5 if rng.random() < tie_rate else float(rng.random() < p_a)
        battles.append(Battle(a, b, outcome, case_id=f"case-{k}"))
    return battles


def test_matches_statsmodels_binomial_glm() -> None:
    sm = pytest.importorskip("statsmodels.api", reason="statsmodels is not installed: pip install statsmodels for this cross-check")
    battles = simulate(600, seed=123, tie_rate=0.1)
    assert any(battle.outcome == 0.5 for battle in battles)
    others = ["q8", "q4", "q2"]
    rows, ys, weights = [], [], []
    for battle in battles:
        x = np.zeros(len(others))
        if battle.a in others:
            x[others.index(battle.a)] = 1.0
        if battle.b in others:
            x[others.index(battle.b)] = -1.0
        for y, weight in ((1.0, battle.outcome), (0.0, 1.0 - battle.outcome)):  # a tie: two rows of weight 0.5
            if weight > 0:
                rows.append(x)
                ys.append(y)
                weights.append(weight)
    fit = sm.GLM(np.array(ys), np.array(rows), family=sm.families.Binomial(), var_weights=np.array(weights)).fit()
    expected = {name: 1000.0 + coef * 400.0 / math.log(10.0) for name, coef in zip(others, fit.params, strict=True)}

    ratings = bradley_terry(battles, anchor="f16")

    for name in others:
        assert ratings[name] == pytest.approx(expected[name], abs=0.5)


def test_recovers_true_ratings_and_order_from_many_battles() -> None:
    ratings = bradley_terry(simulate(5000, seed=7), anchor="f16")

    for name, truth in TRUE.items():
        assert ratings[name] == pytest.approx(truth, abs=25)
    assert sorted(ratings, key=ratings.__getitem__) == ["q2", "q4", "q8", "f16"]


def test_anchor_gets_exactly_init_rating() -> None:
    ratings = bradley_terry(simulate(300, seed=1), anchor="q4", init_rating=1234.5)

    assert ratings["q4"] == 1234.5


def test_swapping_sides_changes_nothing() -> None:
    battles = simulate(300, seed=2, tie_rate=0.1)
    swapped = [Battle(battle.b, battle.a, 1.0 - battle.outcome) for battle in battles]

    assert bradley_terry(swapped, anchor="f16") == pytest.approx(bradley_terry(battles, anchor="f16"), abs=1e-6)


def test_scale_and_base_follow_the_elo_formula() -> None:
    battles = [Battle("a", "b", 1.0)] * 3 + [Battle("a", "b", 0.0)]  # P(a beats b) = 3/4 exactly at the MLE

    ratings = bradley_terry(battles, anchor="b", scale=173.0, base=math.e, init_rating=0.0)

    assert ratings["a"] == pytest.approx(173.0 * math.log(3.0), abs=1e-4)


def _with_champ_and_dud() -> list[Battle]:
    battles = simulate(300, seed=3)
    battles += [Battle("champ", name, 1.0) for name in TRUE for _ in range(5)]
    return battles + [Battle(name, "dud", 1.0) for name in TRUE for _ in range(5)]


def test_undefeated_and_winless_models_get_finite_ratings_at_the_extremes() -> None:
    ratings = bradley_terry(_with_champ_and_dud(), anchor="f16")

    assert all(math.isfinite(value) for value in ratings.values())
    assert max(ratings, key=ratings.__getitem__) == "champ"
    assert min(ratings, key=ratings.__getitem__) == "dud"


def test_choice_of_anchor_only_shifts_the_scale_even_with_an_undefeated_model() -> None:
    battles = _with_champ_and_dud()
    by_f16 = bradley_terry(battles, anchor="f16")
    by_champ = bradley_terry(battles, anchor="champ")

    shift = by_f16["champ"] - by_champ["champ"]
    assert {name: value - shift for name, value in by_f16.items()} == pytest.approx(by_champ, abs=0.5)


def test_disconnected_models_are_named() -> None:
    battles = [*simulate(100, seed=4), Battle("x", "y", 1.0), Battle("y", "x", 0.5)]

    with pytest.raises(ValueError, match=r"\['x', 'y'\]"):
        bradley_terry(battles, anchor="f16")


def test_unknown_anchor_raises() -> None:
    with pytest.raises(ValueError, match="'nope' has no battles"):
        bradley_terry(simulate(50, seed=5), anchor="nope")


def test_battle_rejects_self_play_and_outcomes_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="itself"):
        Battle("a", "a", 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Battle("a", "b", 2.0)


def test_bootstrap_intervals_contain_the_point_estimate() -> None:
    battles = simulate(500, seed=6, tie_rate=0.1)
    ratings = bradley_terry(battles, anchor="f16")

    intervals = bootstrap_intervals(battles, anchor="f16", n_boot=300)

    assert intervals["f16"] == (1000.0, 1000.0)
    for name in ["q8", "q4", "q2"]:
        low, high = intervals[name]
        assert low < ratings[name] < high


def test_bootstrap_is_reproducible_from_its_seed() -> None:
    battles = simulate(200, seed=8)

    assert bootstrap_intervals(battles, "f16", n_boot=50, seed=3) == bootstrap_intervals(battles, "f16", n_boot=50, seed=3)


def test_bootstrap_intervals_narrow_with_more_battles() -> None:
    def width(n: int) -> float:
        low, high = bootstrap_intervals(simulate(n, seed=9), anchor="f16", n_boot=300)["q4"]
        return high - low

    assert width(3000) < 0.5 * width(300)


@pytest.mark.slow
def test_bootstrap_95_percent_interval_covers_the_truth_in_most_simulations() -> None:
    covered = 0
    for seed in range(100):
        low, high = bootstrap_intervals(simulate(300, seed=1000 + seed), anchor="f16", n_boot=200, seed=seed)["q4"]
        covered += low <= TRUE["q4"] <= high

    assert covered >= 88


def _record(wins: int, losses: int, ties: int) -> list[Battle]:
    """``m``'s record against ``o``, alternating sides, plus noise against a third model that must be ignored."""
    results = [1.0] * wins + [0.0] * losses + [0.5] * ties
    battles = [Battle("m", "o", r) if k % 2 else Battle("o", "m", 1.0 - r) for k, r in enumerate(results)]
    return [*battles, Battle("m", "z", 0.0), Battle("z", "o", 1.0)]


def test_win_rate_counts_a_tie_as_half_a_point() -> None:
    rate, _, _ = win_rate(_record(wins=7, losses=2, ties=2), "m", "o")

    assert rate == pytest.approx(8 / 11)


@pytest.mark.parametrize(("wins", "losses", "ties"), [(7, 2, 2), (7, 2, 1), (0, 5, 0), (30, 0, 0)])
def test_win_rate_interval_is_the_wilson_interval_on_points(wins: int, losses: int, ties: int) -> None:
    proportion = pytest.importorskip("statsmodels.stats.proportion", reason="statsmodels is not installed")
    n = wins + losses + ties
    expected = proportion.proportion_confint(wins + ties / 2, n, alpha=0.1, method="wilson")

    _, low, high = win_rate(_record(wins, losses, ties), "m", "o", alpha=0.1)

    assert (low, high) == pytest.approx(expected, abs=1e-12)


def test_win_rate_raises_if_the_models_never_met() -> None:
    with pytest.raises(ValueError, match="never met"):
        win_rate(_record(3, 3, 0), "m", "nobody")


def _length_battles(n: int, seed: int, judge: str) -> list[Battle]:
    """``verbose`` vs ``terse``, sides at random; lengths are 50 * U{2..10} tokens, doubled for ``verbose`` under ``longer``."""
    rng = np.random.default_rng(seed)
    battles = []
    for _ in range(n):
        len_terse, len_verbose = 50 * int(rng.integers(2, 11)), 50 * int(rng.integers(2, 11))
        if judge == "longer":  # verbose writes twice as long; the longer answer wins whoever wrote it, equal lengths tie
            len_verbose *= 2
            outcome = float(np.sign(len_verbose - len_terse) + 1) / 2
        else:  # same lengths on both sides; verbose is better by log(0.7 / 0.3) in log-odds
            outcome = float(rng.random() < 0.7)
        if rng.random() < 0.5:
            battles.append(Battle("verbose", "terse", outcome, len_verbose, len_terse))
        else:
            battles.append(Battle("terse", "verbose", 1.0 - outcome, len_terse, len_verbose))
    return battles


def test_length_controlled_win_rate_removes_a_pure_length_preference() -> None:
    battles = _length_battles(400, seed=10, judge="longer")

    raw, _, _ = win_rate(battles, "verbose", "terse")
    controlled = length_controlled_win_rate(battles, "verbose", "terse")

    assert raw > 0.75
    assert controlled == pytest.approx(0.5, abs=0.1)


def test_length_controlled_win_rate_keeps_an_advantage_that_is_not_length() -> None:
    battles = _length_battles(1000, seed=11, judge="quality")

    assert length_controlled_win_rate(battles, "verbose", "terse") == pytest.approx(0.7, abs=0.05)


def test_length_controlled_win_rate_needs_lengths() -> None:
    with pytest.raises(ValueError, match="len_a and len_b"):
        length_controlled_win_rate(_record(3, 3, 0), "m", "o")


def test_leaderboard_is_sorted_best_first_with_no_win_rate_for_the_anchor() -> None:
    battles = simulate(400, seed=12)

    rows = leaderboard(battles, anchor="q4", n_boot=100)

    assert [row.rating for row in rows] == sorted((row.rating for row in rows), reverse=True)
    anchor = next(row for row in rows if row.model == "q4")
    assert (anchor.rating, anchor.win_rate_vs_anchor, anchor.win_ci_low, anchor.win_ci_high) == (1000.0, None, None, None)
    for row in rows:
        assert row.n_battles == sum(row.model in (battle.a, battle.b) for battle in battles)
        assert row.ci_low <= row.rating <= row.ci_high
        if row.model != "q4":
            assert row.win_rate_vs_anchor == win_rate(battles, row.model, "q4")[0]


def test_tallied_battles_give_the_same_leaderboard_as_the_individual_ones() -> None:
    """The dashboard tallies battles in SQL (GROUP BY a, b, outcome); nothing may change but the speed."""
    from collections import Counter

    rng = np.random.default_rng(3)
    names = ["f16", "q8", "q4", "q2"]
    strength = {"f16": 0.0, "q8": -0.1, "q4": -0.4, "q2": -1.0}
    single = []
    for _ in range(600):
        a, b = rng.choice(names, 2, replace=False)
        p = 1 / (1 + math.exp(strength[b] - strength[a]))
        u = rng.random()
        single.append(Battle(str(a), str(b), 0.5 if u < 0.1 else float(u < 0.1 + 0.9 * p)))
    tally = Counter((x.a, x.b, x.outcome) for x in single)
    tallied = [Battle(a, b, outcome, count=n) for (a, b, outcome), n in tally.items()]
    assert len(tallied) < 40
    full, short = leaderboard(single, "f16", n_boot=200), leaderboard(tallied, "f16", n_boot=200)
    for x, y in zip(full, short, strict=True):
        assert (x.model, x.n_battles) == (y.model, y.n_battles)
        assert x.rating == pytest.approx(y.rating, abs=1e-6)
        assert (x.win_rate_vs_anchor is None) == (y.win_rate_vs_anchor is None)
        if x.win_rate_vs_anchor is not None:
            assert (x.win_rate_vs_anchor, x.win_ci_low) == pytest.approx((y.win_rate_vs_anchor, y.win_ci_low))
    # the bootstrap draws over distinct (a, b, outcome) kinds either way: the same intervals
    assert [(r.ci_low, r.ci_high) for r in full] == pytest.approx([(r.ci_low, r.ci_high) for r in short], abs=1e-6)
    with pytest.raises(ValueError, match="count must be at least 1"):
        Battle("a", "b", 1.0, count=0)


def _shared_difficulty(rng: np.random.Generator, cases: int = 50) -> list[Battle]:
    """4 variants meet on every case, decided by their passes; a case's difficulty (SD 2) is shared by every battle."""
    theta = np.array([0.0, -0.3, -0.8, -1.5])
    names = ["f16", "q8", "q4", "q2"]
    passed = rng.random((4, cases)) < 1 / (1 + np.exp(-(theta[:, None] + rng.normal(0, 2, cases)[None, :])))
    return [Battle(names[i], names[j], float(0.5 if passed[i, c] == passed[j, c] else passed[i, c]), case_id=f"c{c}")
            for i in range(4) for j in range(i + 1, 4) for c in range(cases)]


def test_bootstrap_resamples_cases_so_battles_that_share_a_case_do_not_narrow_the_interval() -> None:
    """Battles on one case are not independent. Resampling battles one by one gave a bootstrap SD of about 19 rating
    points where the ratings' sampling SD is about 26 ("95%" covered 86%); resampling cases matches it."""
    rng = np.random.default_rng(21)
    fits, widths, flat = [], [], []
    for seed in range(40):
        data = _shared_difficulty(rng)
        fits.append(bradley_terry(data, anchor="f16")["q4"])
        low, high = bootstrap_intervals(data, anchor="f16", n_boot=200, seed=seed)["q4"]
        widths.append((high - low) / 3.92)
        low, high = bootstrap_intervals([Battle(b.a, b.b, b.outcome) for b in data], anchor="f16", n_boot=200, seed=seed)["q4"]
        flat.append((high - low) / 3.92)
    sampling = float(np.std(fits, ddof=1))
    assert 0.85 < np.mean(widths) / sampling < 1.25
    assert np.mean(flat) / sampling < 0.85  # without case ids each battle is its own cluster: the old, too narrow, interval
