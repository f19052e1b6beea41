"""A/B statistics: always-valid sequential tests for rates, bootstrap intervals for latency.

Rates (accuracy on labelled feedback, server-error rate) are compared with the mixture
sequential probability ratio test (mSPRT) of Johari, Pekelis and Walsh, "Always valid
inference" (Operations Research, 2022), in its normal-approximation form for a difference of
two proportions: with the observed difference d, its variance V and a normal mixture N(0, tau^2)
over the true difference, the likelihood ratio is

    L = sqrt(V / (V + tau^2)) * exp(tau^2 (d - d0)^2 / (2 V (V + tau^2)))

and the always-valid p-value is the running minimum of 1/L over every observation. Reading it
after each request keeps the false-positive rate at alpha however often it is read, which a
fixed-horizon test does not. No maintained Python library offers this test for two proportions
(savvi's tests need cvxpy and are at 0.3; spotify-confidence's group-sequential tests need the
looks planned in advance), so the dozen lines are here, checked against simulation in the tests.

Latency percentiles are compared by the ratio candidate/control with a percentile bootstrap
interval (`scipy.stats.bootstrap`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

# Prior scale of the true difference; 0.05 suits differences of a few points of accuracy or
# error rate (the mSPRT is valid for any tau, tau only moves where its power lies).
DEFAULT_TAU = 0.05
MIN_PER_ARM = 20


@dataclass(frozen=True)
class RateComparison:
    """A candidate's rate against the control's, with an always-valid p-value."""

    control_n: int
    control_rate: float
    candidate_n: int
    candidate_rate: float
    difference: float  # candidate minus control
    p_value: float  # always valid, for H0: difference == null
    null: float

    def significant(self, alpha: float) -> bool:
        return self.p_value < alpha


def msprt_p_values(
    arm: np.ndarray, outcome: np.ndarray, *, null: float = 0.0, tau: float = DEFAULT_TAU
) -> np.ndarray:
    """Always-valid p-values after each observation of a two-arm Bernoulli stream.

    Args:
        arm: 0 (control) or 1 (candidate) per observation, in the order they arrived.
        outcome: 0 or 1 per observation.
        null: the difference (candidate minus control) under the null hypothesis.
        tau: prior scale of the mixture over the true difference.

    Returns:
        The running-minimum p-value after each observation (1 until each arm has
        `MIN_PER_ARM` observations, where the normal approximation starts to hold).
    """
    arm = np.asarray(arm, dtype=bool)
    outcome = np.asarray(outcome, dtype=float)
    n1 = np.cumsum(arm)
    n0 = np.cumsum(~arm)
    s1 = np.cumsum(outcome * arm)
    s0 = np.cumsum(outcome * ~arm)
    ready = (n0 >= MIN_PER_ARM) & (n1 >= MIN_PER_ARM)
    safe0, safe1 = np.maximum(n0, 1), np.maximum(n1, 1)
    # Smoothed rates keep the variance positive when a rate is 0 or 1 so far.
    p0 = (s0 + 0.5) / (safe0 + 1)
    p1 = (s1 + 0.5) / (safe1 + 1)
    v = p0 * (1 - p0) / safe0 + p1 * (1 - p1) / safe1
    d = s1 / safe1 - s0 / safe0 - null
    t2 = tau * tau
    log_l = 0.5 * np.log(v / (v + t2)) + t2 * d * d / (2 * v * (v + t2))
    p = np.where(ready, np.minimum(1.0, np.exp(-log_l)), 1.0)
    return np.minimum.accumulate(p) if len(p) else p


def compare_rates(
    arm: np.ndarray, outcome: np.ndarray, *, null: float = 0.0, tau: float = DEFAULT_TAU
) -> RateComparison:
    """The candidate's rate against the control's over a stream (see `msprt_p_values`)."""
    arm = np.asarray(arm, dtype=bool)
    outcome = np.asarray(outcome, dtype=float)
    n1, n0 = int(arm.sum()), int((~arm).sum())
    r1 = float(outcome[arm].mean()) if n1 else float("nan")
    r0 = float(outcome[~arm].mean()) if n0 else float("nan")
    p = msprt_p_values(arm, outcome, null=null, tau=tau)
    return RateComparison(
        control_n=n0,
        control_rate=r0,
        candidate_n=n1,
        candidate_rate=r1,
        difference=r1 - r0,
        p_value=float(p[-1]) if len(p) else 1.0,
        null=null,
    )


@dataclass(frozen=True)
class RatioInterval:
    ratio: float
    low: float
    high: float


def quantile_ratio(
    control: np.ndarray,
    candidate: np.ndarray,
    q: float,
    *,
    confidence: float = 0.95,
    resamples: int = 999,
    max_samples: int = 5000,
    seed: int = 0,
) -> RatioInterval:
    """Candidate's q-quantile over the control's, with a percentile bootstrap interval.

    At most the last `max_samples` values of each side are used, which keeps a check that runs
    every second cheap. Returns NaNs when either side has fewer than 10 values.
    """
    a = np.asarray(control, dtype=float)[-max_samples:]
    b = np.asarray(candidate, dtype=float)[-max_samples:]
    if len(a) < 10 or len(b) < 10:
        nan = float("nan")
        return RatioInterval(nan, nan, nan)

    def ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(np.quantile(y, q, axis=axis) / np.quantile(x, q, axis=axis))

    point = float(ratio(a, b))
    res = stats.bootstrap(
        (a, b),
        ratio,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return RatioInterval(
        point, float(res.confidence_interval.low), float(res.confidence_interval.high)
    )
