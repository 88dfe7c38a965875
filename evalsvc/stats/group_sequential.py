"""Group-sequential boundaries: Lan-DeMets alpha spending, computed by recursive numerical integration.

A statistic looked at K times, Z_1 .. Z_K, is asymptotically a Brownian motion in its information:
Z_k ~ N(theta sqrt(I_k), 1) with corr(Z_j, Z_k) = sqrt(I_j / I_k) for j <= k, the canonical joint
distribution of [jennison-turnbull2000, sec. 3.1]. A one-sided test that rejects at the first look with
Z_k >= b_k keeps its level alpha when the chance of crossing at look k under theta = 0, without having
crossed before, equals the alpha spent between the previous look and this one: f(t_k) - f(t_{k-1}), f
a spending function of the information fraction t [lan-demets1983]. The boundary at look k depends only on
the fractions seen so far, so looks need not be planned or equally spaced.

The crossing probabilities are computed as Armitage, McPherson and Rowe did [armitage1969], with the grid
and Simpson weights of [jennison-turnbull2000, ch. 19] (r = 18, 6r - 1 grid points per look before the
midpoints), as gsDesign's gsbound does [gsdesign]: the density of Z_k on the continuation region is carried
from look to look, and each boundary is found by bisection on the probability it leaves to cross.

[armitage1969] Armitage P, McPherson CK, Rowe BC. Repeated significance tests on accumulating data.
J R Stat Soc A 1969;132:235-244.
[lan-demets1983] Lan KKG, DeMets DL. Discrete sequential boundaries for clinical trials. Biometrika
1983;70:659-663.
[jennison-turnbull2000] Jennison C, Turnbull BW. Group Sequential Methods with Applications to Clinical
Trials. Chapman & Hall/CRC, 2000.
[gsdesign] Anderson KM et al. gsDesign: Group Sequential Design, R package (sfLDOF, sfLDPocock, gsDesign).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import pairwise

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr, ndtri  # scipy.stats costs seconds to import

Spending = Callable[[float, float], float]
_GRID_R = 18  # grid density of [jennison-turnbull2000, sec. 19.2.1], gsDesign's default
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def obrien_fleming_spending(t: float, alpha: float) -> float:
    """O'Brien-Fleming-type spending, f(t) = 2 - 2 Phi(Phi^-1(1 - alpha/2) / sqrt(t)) [lan-demets1983].

    Spends almost nothing early (at t = 0.2 and alpha = 0.025, 1.1e-6), so the last boundary stays close to
    the fixed test's. This is gsDesign's sfLDOF for a one-sided alpha.
    """
    if t <= 0.0:
        return 0.0
    if t >= 1.0:
        return alpha
    return float(2.0 - 2.0 * ndtr(ndtri(1.0 - alpha / 2.0) / math.sqrt(t)))


def pocock_spending(t: float, alpha: float) -> float:
    """Pocock-type spending, f(t) = alpha ln(1 + (e - 1) t) [lan-demets1983]; gsDesign's sfLDPocock.

    Spends evenly enough that the boundaries are nearly flat: easier early stops, a higher last boundary.
    """
    if t <= 0.0:
        return 0.0
    if t >= 1.0:
        return alpha
    return alpha * math.log(1.0 + (math.e - 1.0) * t)


SPENDING: dict[str, Spending] = {"obrien-fleming": obrien_fleming_spending, "pocock": pocock_spending}


def spending_function(name: str) -> Spending:
    try:
        return SPENDING[name]
    except KeyError:
        raise ValueError(f"unknown spending function {name!r}; known: {', '.join(sorted(SPENDING))}") from None


def _grid(mean: float, upper: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Grid points and Simpson weights on (-inf, upper] for a density centred at ``mean`` [jennison-turnbull2000, 19.2.1].

    Points are dense within 3 SD of the mean and spread logarithmically out to about 14.6 SD; those at or beyond
    ``upper`` are replaced by ``upper`` itself, and the midpoint of every pair of neighbours is added, so that
    Simpson's rule integrates each interval.
    """
    r = _GRID_R
    i = np.arange(1, 6 * r, dtype=np.float64)
    x = np.where(i < r, -3.0 - 4.0 * np.log(r / i),
                 np.where(i <= 5 * r, -3.0 + 3.0 * (i - r) / (2 * r), 3.0 + 4.0 * np.log(r / (6 * r - i))))
    x = mean + x
    if math.isfinite(upper):
        x = np.append(x[x < upper], upper)
    if len(x) < 2:  # the whole mass lies beyond the boundary: nothing continues
        return np.empty(0), np.empty(0)
    z = np.empty(2 * len(x) - 1)
    z[0::2], z[1::2] = x, 0.5 * (x[:-1] + x[1:])
    d = np.diff(x) / 6.0
    w = np.zeros_like(z)
    w[1::2] = 4.0 * d
    w[0:-1:2] += d
    w[2::2] += d
    return z, w


def _normal_pdf(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.exp(-0.5 * x * x) / _SQRT_2PI


class _Recursion:
    """The sub-density of Z_k on the continuation region, carried look by look [armitage1969]."""

    def __init__(self, drift: float) -> None:
        self.drift = drift
        self.info = 0.0
        self.z: npt.NDArray[np.float64] | None = None  # grid of the last look
        self.mass: npt.NDArray[np.float64] | None = None  # density x weight at those points

    def cross(self, info: float, bound: float) -> float:
        """P(Z_k >= bound and no crossing before) at information ``info``."""
        mean = self.drift * math.sqrt(info)
        if self.z is None:
            return float(ndtr(mean - bound))
        assert self.mass is not None
        step = info - self.info
        arg = (bound * math.sqrt(info) - self.z * math.sqrt(self.info) - self.drift * step) / math.sqrt(step)
        return float(np.dot(self.mass, ndtr(-arg)))

    def advance(self, info: float, bound: float) -> None:
        """Move to the next look, keeping only the paths that did not cross ``bound``."""
        if not info > self.info:
            raise ValueError(f"information must increase from look to look, got {info} after {self.info}")
        mean = self.drift * math.sqrt(info)
        z, w = _grid(mean, bound)
        if self.z is None:
            density = _normal_pdf(z - mean)
        else:
            assert self.mass is not None
            step = info - self.info
            scale = math.sqrt(info / step)
            arg = (z[:, None] * math.sqrt(info) - self.z[None, :] * math.sqrt(self.info) - self.drift * step) / math.sqrt(step)
            density = scale * (_normal_pdf(arg) @ self.mass)
        self.z, self.mass, self.info = z, w * density, info


def _check_information(information: Sequence[float]) -> list[float]:
    info = [float(x) for x in information]
    if not info or any(not (x > 0 and math.isfinite(x)) for x in info):
        raise ValueError(f"information at each look must be finite and > 0, got {info}")
    if any(b <= a for a, b in pairwise(info)):
        raise ValueError(f"information must increase from look to look, got {info}")
    return info


def boundaries(fractions: Sequence[float], alpha: float, spending: str = "obrien-fleming",
               information: Sequence[float] | None = None) -> list[float]:
    """Upper z boundaries of a one-sided level-``alpha`` group-sequential test at the looks so far.

    ``fractions`` are the information fractions t_k at which alpha is spent (the final look's is 1, which spends
    what is left); ``information`` (default: the fractions) gives the correlations between looks, so a final look
    that falls short of its planned information still spends all of alpha at its actual correlation
    [lan-demets1983]. A look that spends nothing gets an infinite boundary.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    t = [float(x) for x in fractions]
    if any(not 0 < x <= 1 for x in t) or any(b < a for a, b in pairwise(t)):
        raise ValueError(f"information fractions must be non-decreasing in (0, 1], got {t}")
    info = _check_information(t if information is None else information)
    if len(info) != len(t):
        raise ValueError(f"{len(t)} fractions but {len(info)} information values")
    return list(_boundaries(tuple(t), alpha, spending, tuple(info)))


@lru_cache(maxsize=256)
def _boundaries(t: tuple[float, ...], alpha: float, spending: str, info: tuple[float, ...]) -> tuple[float, ...]:
    f = spending_function(spending)
    recursion, spent, bounds = _Recursion(0.0), 0.0, []
    for tk, ik in zip(t, info, strict=True):
        target = f(tk, alpha) - spent
        if target <= 0.0:
            bound = math.inf
        elif recursion.z is None:
            bound = float(ndtri(1.0 - target))
        else:
            low, high = -10.0, 40.0  # cross() decreases in the bound; bisect to the last bit
            while True:
                mid = 0.5 * (low + high)
                if mid in (low, high):
                    break
                if recursion.cross(ik, mid) > target:
                    low = mid
                else:
                    high = mid
            bound = high
        spent += recursion.cross(ik, bound) if math.isfinite(bound) else 0.0
        bounds.append(bound)
        recursion.advance(ik, bound)
    return tuple(bounds)


def crossing_probabilities(bounds: Sequence[float], information: Sequence[float], drift: float = 0.0) -> list[float]:
    """P(the first crossing of ``bounds`` is at look k), for Z_k ~ N(drift sqrt(I_k), 1) [armitage1969].

    At drift 0 these sum to the alpha the boundaries spend; at the drift of a true effect they give the power
    and, with the look sizes, the expected number of cases.
    """
    info = _check_information(information)
    if len(info) != len(bounds):
        raise ValueError(f"{len(bounds)} boundaries but {len(info)} information values")
    recursion, out = _Recursion(float(drift)), []
    for ik, bk in zip(info, bounds, strict=True):
        out.append(recursion.cross(ik, bk) if math.isfinite(bk) else 0.0)
        recursion.advance(ik, bk)
        if recursion.z is not None and len(recursion.z) == 0:
            out.extend([0.0] * (len(info) - len(out)))
            break
    return out
