"""Sample size: the paired n that decides a non-inferiority question with a given power.

[nam1997] Nam J. Establishing equivalence of two treatments and sample size requirements in matched-pairs design.
Biometrics 1997;53:1422-1430. [connor1987] Connor RJ. Sample size for testing differences in proportions for the
paired-sample design. Biometrics 1987;43:207-211. [miller2024] Miller E. arXiv 2411.00640, 2024.
"""

from __future__ import annotations

import math

from scipy.special import ndtri  # scipy.stats costs seconds to import

from evalsvc.stats.comparison import POWER


def n_for_noninferiority(margin: float, alpha: float = 0.05, power: float = POWER, *, discordance: float | None = None,
                         sd: float | None = None, delta: float = 0.0) -> int | None:
    """Paired n giving ``power`` to decide against the margin if the true delta is ``delta``.

    For delta > -m the claim is non-inferiority (lo > -m), for delta < -m a regression (hi < -m); the two
    are symmetric around -m, so one formula serves: n = ((z_a s0 + z_b s1) / |delta + m|)^2.
    Binary (``discordance`` = share of discordant pairs, psi; needs |delta| <= psi): the score-test sample
    size of Nam [nam1997], of the same form as Connor's [connor1987]. s1^2 = psi - delta^2 is the variance of
    a pair's difference at the assumed delta, with P(up) = (psi + delta) / 2 and P(down) = (psi - delta) / 2;
    s0^2 = 2 q + d0 (1 - d0) at d0 = -m, q being the limit of Tango's restricted estimate of P(down) there.
    Continuous (``sd`` = SD of the per-case differences): s0 = s1 = sd, the z-based calculation of Miller
    [miller2024]. None when delta = -m (no n decides a delta that sits on the margin), so in particular at
    m = 0 and delta = 0.
    """
    if (discordance is None) == (sd is None):
        raise ValueError("give exactly one of discordance (binary) or sd (continuous)")
    if not 0 < alpha < 0.5 or not 0 < power < 1:
        raise ValueError(f"need 0 < alpha < 0.5 and 0 < power < 1, got alpha={alpha}, power={power}")
    m, effect = margin, abs(delta + margin)
    if margin < 0 or effect == 0:
        return None
    z_a, z_b = float(ndtri(1 - alpha)), float(ndtri(power))
    if sd is not None:
        return max(2, math.ceil(((z_a + z_b) * sd / effect) ** 2))
    assert discordance is not None
    if not 0 <= discordance <= 1 or abs(delta) > discordance + 1e-12:
        raise ValueError(f"discordance is a share of pairs at least |delta|, got {discordance} with delta {delta}")
    psi = discordance
    p_down = (psi - delta) / 2
    b = -psi - m * (2 - delta)
    q = (math.sqrt(max(b * b - 8 * p_down * m * (1 + m), 0.0)) - b) / 4
    s0 = math.sqrt(max(2 * q - m * (1 + m), 0.0))
    s1 = math.sqrt(max(psi - delta * delta, 0.0))
    return max(1, math.ceil(((z_a * s0 + z_b * s1) / effect) ** 2))
