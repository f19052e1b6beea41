"""The serving decisions as plain functions: assignment, the sequential tests, the ramp."""

from __future__ import annotations

import numpy as np
import pytest

from nas.serving.assignment import assign, bucket_order, pick, unit_point
from nas.serving.config import GuardrailConfig, RampConfig
from nas.serving.ramp import Observations, advance, check_guardrails, split, start
from nas.serving.stats import compare_rates, msprt_p_values, quantile_ratio

RNG = np.random.default_rng


def test_a_unit_id_always_gets_the_same_variant_and_the_split_follows_the_weights():
    weights = {"control": 80.0, "candidate": 20.0}
    order = bucket_order(["control", "candidate"], "candidate")
    first = {u: assign(weights, order, unit_id=f"u{u}", salt="d", rng=RNG(0)) for u in range(4000)}
    again = {u: assign(weights, order, unit_id=f"u{u}", salt="d", rng=RNG(1)) for u in range(4000)}
    assert first == again
    share = sum(v == "candidate" for v in first.values()) / len(first)
    assert 0.17 < share < 0.23
    # Another deployment (salt) buckets the same units independently.
    other = {u: assign(weights, order, unit_id=f"u{u}", salt="e", rng=RNG(0)) for u in range(4000)}
    assert other != first


def test_units_on_the_candidate_stay_there_as_its_share_grows():
    order = bucket_order(["control", "candidate"], "candidate")
    at_5 = {
        u
        for u in range(5000)
        if pick(
            unit_point(f"u{u}", "d"), split({"control": 100.0}, "control", "candidate", 5.0), order
        )
        == "candidate"
    }
    at_25 = {
        u
        for u in range(5000)
        if pick(
            unit_point(f"u{u}", "d"), split({"control": 100.0}, "control", "candidate", 25.0), order
        )
        == "candidate"
    }
    assert at_5 and at_5 <= at_25
    assert 0.2 < len(at_25) / 5000 < 0.3


def test_without_a_unit_id_assignment_is_random_and_zero_weights_are_refused():
    order = ("a", "b")
    rng = RNG(0)
    picks = [
        assign({"a": 50, "b": 50}, order, unit_id=None, salt="d", rng=rng) for _ in range(2000)
    ]
    assert 0.45 < picks.count("a") / 2000 < 0.55
    assert all(
        assign({"a": 0, "b": 1}, order, unit_id=None, salt="d", rng=rng) == "b" for _ in range(100)
    )
    with pytest.raises(ValueError, match="no variant has traffic"):
        pick(0.5, {"a": 0, "b": 0}, order)


def _stream(rng: np.random.Generator, n: int, p0: float, p1: float, share: float = 0.5):
    arm = rng.random(n) < share
    outcome = np.where(arm, rng.random(n) < p1, rng.random(n) < p0)
    return arm, outcome


def test_the_sequential_test_keeps_its_false_positive_rate_when_read_after_every_request():
    """A/A: 300 streams of 3,000 Bernoulli observations, the p-value read after each one; the
    share of streams that ever drop below alpha stays under alpha (a fixed-horizon test read
    this often would exceed it several times over)."""
    rng = RNG(7)
    alpha = 0.05
    ever = sum(msprt_p_values(*_stream(rng, 3000, 0.7, 0.7)).min() < alpha for _ in range(300))
    assert ever / 300 <= alpha


def test_the_sequential_test_finds_a_real_difference_and_its_direction():
    rng = RNG(3)
    arm, outcome = _stream(rng, 4000, 0.80, 0.70)
    cmp = compare_rates(arm, outcome)
    assert cmp.p_value < 0.01 and cmp.difference < -0.05
    # Against a null of -0.10 the same data show no drop beyond 10 points.
    assert compare_rates(arm, outcome, null=-0.10).p_value > 0.05
    # p-values only fall: an always-valid p-value is a running minimum.
    p = msprt_p_values(arm, outcome)
    assert np.all(np.diff(p) <= 0)


def test_latency_ratio_interval_covers_the_true_ratio():
    rng = RNG(0)
    control = rng.lognormal(0.0, 0.3, 3000)
    candidate = 1.5 * rng.lognormal(0.0, 0.3, 3000)
    r = quantile_ratio(control, candidate, 0.99)
    assert r.low < 1.5 < r.high and r.low > 1.2
    assert np.isnan(quantile_ratio(control[:5], candidate, 0.99).ratio)


PLAN = RampConfig(candidate="cand", steps=(5.0, 50.0), min_requests=100)
GUARDS = GuardrailConfig(max_accuracy_drop=0.02, max_error_rate_increase=0.01)


def _obs(
    rng, n, acc_control, acc_candidate, share, step_requests, err_candidate=0.0, slow=1.0
) -> Observations:
    arm = rng.random(n) < share
    correct = np.where(arm, rng.random(n) < acc_candidate, rng.random(n) < acc_control)
    error = arm & (rng.random(n) < err_candidate)
    lat = rng.lognormal(0, 0.2, n) * np.where(arm, slow, 1.0)
    return Observations(
        latency_arm=arm[~error],
        latency_ms=lat[~error],
        error_arm=arm,
        error=error,
        feedback_arm=arm[~error],
        correct=correct[~error],
        step_requests=step_requests,
        step_feedback=step_requests,
    )


def test_the_ramp_steps_up_while_guardrails_hold_and_then_promotes():
    rng = RNG(0)
    state, change = start(PLAN, {"ctl": 100.0}, "ctl", now=0.0)
    assert change.traffic == {"ctl": 95.0, "cand": 5.0} and state.status == "ramping"
    held, none = advance(
        state, PLAN, GUARDS, _obs(rng, 500, 0.8, 0.8, 0.05, 50), change.traffic, "ctl", 1.0
    )
    assert none is None and held == state  # not enough requests yet
    state, change = advance(
        state, PLAN, GUARDS, _obs(rng, 2000, 0.8, 0.8, 0.05, 100), change.traffic, "ctl", 2.0
    )
    assert change is not None and change.kind == "step" and change.traffic["cand"] == 50.0
    state, change = advance(
        state, PLAN, GUARDS, _obs(rng, 2000, 0.8, 0.8, 0.5, 100), change.traffic, "ctl", 3.0
    )
    assert state.status == "promoted" and change.traffic == {"ctl": 0.0, "cand": 100.0}


@pytest.mark.parametrize(
    "kind, obs_args, words",
    [
        ("accuracy", dict(acc_candidate=0.60), "accuracy"),
        ("errors", dict(acc_candidate=0.8, err_candidate=0.10), "error rate"),
        ("latency", dict(acc_candidate=0.8, slow=3.0), "p99 latency"),
    ],
)
def test_a_breached_guardrail_rolls_the_candidate_back_and_says_why(kind, obs_args, words):
    rng = RNG(1)
    state, change = start(PLAN, {"ctl": 100.0}, "ctl", now=0.0)
    obs = _obs(rng, 4000, acc_control=0.8, share=0.3, step_requests=10, **obs_args)
    new, change = advance(state, PLAN, GUARDS, obs, change.traffic, "ctl", 1.0)
    assert new.status == "rolled_back" and change is not None and change.kind == "rollback"
    assert change.traffic == {"ctl": 100.0, "cand": 0.0}
    assert words in change.reason, change.reason


def test_guardrails_hold_in_repeated_a_a_ramps():
    """Same variant twice: no rollback in 100 simulated ramps of 3,000 requests each."""
    rng = RNG(11)
    false = sum(
        bool(check_guardrails(GUARDS, _obs(rng, 3000, 0.8, 0.8, 0.3, 0))) for _ in range(100)
    )
    assert false <= 5


def test_the_report_compares_each_variant_with_the_control():
    import pandas as pd

    from nas.serving.config import DeployConfig
    from nas.serving.report import report_table, variant_rows

    rng = RNG(5)
    n = 4000
    variant = np.where(rng.random(n) < 0.5, "ctl", "cand")
    slow = np.where(variant == "cand", 2.0, 1.0)
    predicted = rng.integers(0, 10, n)
    right = rng.random(n) < np.where(variant == "cand", 0.6, 0.9)
    df = pd.DataFrame(
        {
            "variant": variant,
            "ts": np.arange(n, dtype=float),
            "status": np.where(rng.random(n) < 0.01, 503, 200),
            "latency_ms": rng.lognormal(0, 0.2, n) * slow,
            "batch_size": 2,
            "predicted": predicted,
            "label": np.where(right, predicted, (predicted + 1) % 10),
        }
    )
    config = DeployConfig.model_validate(
        {"name": "d", "variants": [{"name": "ctl", "export": "x"}, {"name": "cand", "export": "y"}]}
    )
    rows = {r["variant"]: r for r in variant_rows(df, config, {"ctl": 50.0, "cand": 50.0})}
    cand = rows["cand"]
    assert rows["ctl"]["role"] == "control" and cand["requests"] + rows["ctl"]["requests"] == n
    for q in (50, 95, 99):
        low, high = cand[f"p{q}_ratio_ci"]
        assert low < cand[f"p{q}_ratio"] < high and 1.6 < cand[f"p{q}_ratio"] < 2.5
    assert cand["accuracy_verdict"].startswith("less than control")
    assert cand["error_verdict"].startswith("no difference shown")
    assert report_table(list(rows.values())).loc["cand", "p95_ratio_ci"].count("-") == 1


def test_the_guardrails_read_the_log_of_control_and_candidate_since_the_ramp():
    import pandas as pd

    from nas.serving.ramp import RampState, observations

    log = pd.DataFrame(
        {
            "variant": ["ctl", "cand", "cand", "other", "cand", "cand"],
            "ts": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "status": [200, 200, 503, 200, 422, 200],
            "latency_ms": [1.0, 2.0, None, 3.0, None, 4.0],
            "predicted": [1, 2, None, 3, None, 5],
            "label": [1, 0, None, 3, None, None],
        }
    )
    obs = observations(log, RampState("ramping", 1, 0.0, 2.5), "ctl", "cand")
    assert list(obs.latency_arm) == [False, True, True] and list(obs.latency_ms) == [1, 2, 4]
    # Refusals of bad input (4xx) are not server errors; the 503 is.
    assert list(obs.error_arm) == [False, True, True, True]
    assert list(obs.error) == [False, False, True, False]
    assert list(obs.feedback_arm) == [False, True] and list(obs.correct) == [True, False]
    assert (obs.step_requests, obs.step_feedback) == (1, 0)  # since the step began at 2.5
