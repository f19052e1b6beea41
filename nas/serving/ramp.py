"""The canary ramp as a state machine, and the guardrails it checks: pure functions of what the
exposure log holds, so the decisions are tested without a server.

A ramp starts with the candidate at its first step's share; each check either rolls it back (a
guardrail breached: the candidate goes to 0 %), holds the step (not enough requests or labelled
feedback yet), moves to the next step, or after the last step promotes it (all traffic to the
candidate). Every change of traffic is a `TrafficChange` with its reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from nas.serving.config import GuardrailConfig, RampConfig
from nas.serving.stats import compare_rates, quantile_ratio

Status = Literal["ramping", "promoted", "rolled_back", "manual"]


@dataclass(frozen=True)
class RampState:
    status: Status
    step: int  # index into the ramp's steps
    started: float  # when the ramp began (unix time); guardrails look at data since then
    step_started: float  # when the current step began
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RampState:
        return cls(**raw)


@dataclass(frozen=True)
class TrafficChange:
    """A new split of traffic and why it was made (an event in the log)."""

    traffic: dict[str, float]
    kind: str  # start, step, promote, rollback, manual
    reason: str


@dataclass(frozen=True)
class Observations:
    """What the exposure log says since the ramp started, in arrival order.

    `arm` arrays hold 1 for the candidate and 0 for the control; other variants are left out.
    """

    latency_arm: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    latency_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    error_arm: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    error: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    feedback_arm: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    step_requests: int = 0  # candidate requests since the current step began
    step_feedback: int = 0  # labelled candidate requests since the current step began


def split(base: dict[str, float], control: str, candidate: str, share: float) -> dict[str, float]:
    """Traffic with `share` percent on the candidate, taken from (or given back to) the control;
    other variants keep their weights."""
    out = dict(base)
    pool = out.get(control, 0.0) + out.get(candidate, 0.0)
    out[candidate] = min(share, pool)
    out[control] = pool - out[candidate]
    return out


def observations(log: pd.DataFrame, ramp: RampState, control: str, candidate: str) -> Observations:
    """The exposure log since the ramp started (`Store.exposures`), as the guardrails read it."""
    df = log[log["variant"].isin([control, candidate])]
    arm = (df["variant"] == candidate).to_numpy()
    ok = (df["status"] == 200).to_numpy()
    server = (df["status"] >= 500).to_numpy() | ok
    labelled = df["label"].notna().to_numpy() & ok
    in_step = (df["ts"] >= ramp.step_started).to_numpy() & arm
    return Observations(
        latency_arm=arm[ok],
        latency_ms=df["latency_ms"].to_numpy(dtype=float)[ok],
        error_arm=arm[server],
        error=~ok[server],
        feedback_arm=arm[labelled],
        correct=(df["predicted"] == df["label"]).to_numpy()[labelled],
        step_requests=int((in_step & ok).sum()),
        step_feedback=int((in_step & labelled).sum()),
    )


def start(
    plan: RampConfig, base: dict[str, float], control: str, now: float
) -> tuple[RampState, TrafficChange]:
    share = plan.steps[0]
    state = RampState("ramping", 0, now, now, f"step 1 of {len(plan.steps)}: {share:g} %")
    traffic = split(base, control, plan.candidate, share)
    return state, TrafficChange(traffic, "start", f"ramp started: {plan.candidate} at {share:g} %")


def check_guardrails(g: GuardrailConfig, obs: Observations) -> list[str]:
    """Reasons for every breached guardrail (empty when all hold). Each of the three tests runs
    at alpha / 3, so together they raise a false alarm with probability at most alpha."""
    alpha = g.alpha / 3
    breaches = []
    errors = compare_rates(obs.error_arm, obs.error, null=g.max_error_rate_increase)
    if errors.difference > g.max_error_rate_increase and errors.significant(alpha):
        breaches.append(
            f"error rate {errors.candidate_rate:.2%} vs control {errors.control_rate:.2%} "
            f"(more than +{g.max_error_rate_increase:.2%}, always-valid p={errors.p_value:.3g})"
        )
    acc = compare_rates(obs.feedback_arm, obs.correct, null=-g.max_accuracy_drop)
    if acc.difference < -g.max_accuracy_drop and acc.significant(alpha):
        breaches.append(
            f"accuracy {acc.candidate_rate:.2%} vs control {acc.control_rate:.2%} on "
            f"{acc.candidate_n}+{acc.control_n} labelled requests (drop over "
            f"{g.max_accuracy_drop:.2%}, always-valid p={acc.p_value:.3g})"
        )
    lat = obs.latency_ms
    arm = np.asarray(obs.latency_arm, dtype=bool)
    n1, n0 = int(arm.sum()), int((~arm).sum())
    if min(n0, n1) >= g.min_latency_samples:
        r = quantile_ratio(lat[~arm], lat[arm], 0.99, confidence=1 - 2 * alpha)
        if r.low > g.max_p99_ratio:
            breaches.append(
                f"p99 latency {r.ratio:.2f}x the control's (interval {r.low:.2f}-{r.high:.2f}, "
                f"limit {g.max_p99_ratio:g}x)"
            )
    return breaches


def advance(
    state: RampState,
    plan: RampConfig,
    guardrails: GuardrailConfig,
    obs: Observations,
    traffic: dict[str, float],
    control: str,
    now: float,
) -> tuple[RampState, TrafficChange | None]:
    """One check of a ramp: the new state, and the traffic change it makes (if any)."""
    if state.status != "ramping":
        return state, None
    breaches = check_guardrails(guardrails, obs)
    if breaches:
        detail = f"at {plan.steps[state.step]:g} %: " + "; ".join(breaches)
        new = replace(state, status="rolled_back", reason=detail)
        change = TrafficChange(
            split(traffic, control, plan.candidate, 0.0), "rollback", f"rolled back {detail}"
        )
        return new, change
    if obs.step_requests < plan.min_requests or obs.step_feedback < plan.min_feedback:
        return state, None
    held = (
        f"{obs.step_requests} requests, {obs.step_feedback} labelled, guardrails held "
        f"at {plan.steps[state.step]:g} %"
    )
    if state.step + 1 < len(plan.steps):
        share = plan.steps[state.step + 1]
        new = replace(
            state,
            step=state.step + 1,
            step_started=now,
            reason=f"step {state.step + 2} of {len(plan.steps)}: {share:g} %",
        )
        change = TrafficChange(
            split(traffic, control, plan.candidate, share), "step", f"{held}; now {share:g} %"
        )
        return new, change
    if not plan.promote:
        return state, None
    detail = f"{held} (last step)"
    change = TrafficChange(
        split(traffic, control, plan.candidate, 100.0), "promote", f"promoted: {detail}"
    )
    return replace(state, status="promoted", reason=detail), change
