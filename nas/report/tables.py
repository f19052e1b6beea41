"""Tables read from a run's study storage: every trial, the Pareto front, trials.csv and
pareto.csv."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hwnas_base.io import write_atomic
from nas.errors import UnknownTrialError
from nas.pareto import front_indices
from nas.record import (
    ACCURACY,
    CANDIDATE,
    DUPLICATE_OF,
    FAILURE_REASON,
    LATENCY,
    MAXIMIZE,
    OBJECTIVES,
    STOP_REASON,
    SURPLUS,
    TRIAL_COLUMNS,
)
from nas.run import Run

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state.name == "COMPLETE" and all(v <= 0 for v in trial.constraints.values())


def trials_frame(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> pd.DataFrame:
    """One row per trial, in trial order, with the Pareto front marked.

    Args:
        study: The run's study.
        trials: Its trials as the caller read them (so that what the caller derives from them
            agrees with the table); default: read now.
    """
    rows = []
    remeasured = study.user_attrs.get("front_measured", {})
    for t in study.get_trials(deepcopy=False) if trials is None else trials:
        a = t.user_attrs
        if a.get(SURPLUS):
            continue  # asked by a worker after others had taken the target's last places
        duration = t.duration.total_seconds() if t.duration is not None else math.nan
        device = a.get("device")
        source = a.get("latency_source", "measured") if ACCURACY in a else ""
        measured = a.get(LATENCY, math.nan) if source == "measured" else math.nan
        if str(t.number) in remeasured:
            measured = remeasured[str(t.number)]["p50_ms"]
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "feasible": _feasible(t),
                CANDIDATE: a.get(CANDIDATE, ""),
                "prune_ratio": _number(a.get("prune_ratio")),
                "precision": a.get("precision", ""),
                ACCURACY: a.get(ACCURACY, math.nan),
                "accuracy_source": a.get("accuracy_source", "trained"),
                LATENCY: a.get(LATENCY, math.nan),
                "latency_p90_ms": a.get("latency_p90_ms", math.nan),
                "latency_std_ms": a.get("latency_std_ms", math.nan),
                "latency_spread": _number(a.get("latency_spread")),
                "latency_drift": _number(a.get("latency_drift")),
                "latency_source": source,
                "latency_predicted_ms": a.get("latency_predicted_ms", math.nan),
                "latency_measured_ms": measured,
                "params": a.get("params"),
                "flops": a.get("flops"),
                "accuracy_trained": _number(a.get("accuracy_trained")),
                "accuracy_pruned": _number(a.get("accuracy_pruned")),
                "accuracy_finetuned": _number(a.get("accuracy_finetuned")),
                "latency_parent_ms": _number(a.get("latency_parent_ms")),
                "speedup_vs_parent": _number(a.get("speedup_vs_parent")),
                "slower_than_parent": a.get("slower_than_parent"),
                "params_parent": a.get("params_parent"),
                "duration_s": round(duration, 2),
                "device": device["name"] if isinstance(device, dict) else "",
                DUPLICATE_OF: a.get(DUPLICATE_OF),
                STOP_REASON: a.get(STOP_REASON, ""),
                FAILURE_REASON: a.get(FAILURE_REASON, ""),
            }
        )
    df = pd.DataFrame(rows, columns=[c for c in TRIAL_COLUMNS if c != "on_front"])
    df["params"] = df["params"].astype("Int64")
    df["flops"] = df["flops"].astype("Int64")
    df[DUPLICATE_OF] = df[DUPLICATE_OF].astype("Int64")
    df["params_parent"] = df["params_parent"].astype("Int64")
    df["slower_than_parent"] = df["slower_than_parent"].astype("boolean")
    df.insert(3, "on_front", False)
    front = front_frame(df)
    df.loc[df["number"].isin(front["number"]), "on_front"] = True
    df.attrs["latency_note"] = study.user_attrs.get("latency", "")
    return df


def front_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Feasible completed trials that no other such trial dominates, fastest first."""
    ok = trials[(trials["state"] == "COMPLETE") & trials["feasible"].astype(bool)]
    if ok.empty:
        return ok.copy()
    points = ok[list(OBJECTIVES)].to_numpy(dtype=np.float64)
    idx = front_indices(points, MAXIMIZE, sort_by=1)
    return ok.iloc[idx].reset_index(drop=True)


def write_tables(run: Run, trials: pd.DataFrame) -> pd.DataFrame:
    """Write trials.csv and pareto.csv atomically; return the front."""
    front = front_frame(trials)
    write_atomic(run.trials_csv, trials.to_csv(index=False))
    write_atomic(run.pareto_csv, front[TRIAL_COLUMNS].to_csv(index=False))
    return front


def front_records(front: pd.DataFrame) -> list[dict[str, Any]]:
    """The front as JSON-safe records."""
    return json.loads(front[TRIAL_COLUMNS].to_json(orient="records"))


def trial_record(
    study: optuna.Study, number: int, trials: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Everything a trial recorded: its row of the trials table, every attribute (per-epoch
    accuracy, compression columns, device identity, failure reason) and its parameters.

    Args:
        study: The run's study.
        number: The trial.
        trials: The study's trials table, when the caller has it.

    Raises:
        UnknownTrialError: the study has no trial `number`.
    """
    found = study.get_trials(deepcopy=False)
    match = [t for t in found if t.number == number and not t.user_attrs.get(SURPLUS)]
    if not match:
        last = f"0..{len(found) - 1}" if found else "none"
        raise UnknownTrialError(f"trial {number} not in run (trials: {last})")
    trial = match[0]
    table = trials_frame(study) if trials is None else trials
    row = table.set_index("number").loc[number]
    return {
        "row": json.loads(row.to_json()) | {"number": number},
        "attrs": dict(trial.user_attrs),
        "params": dict(trial.params),
        "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
        "completed": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
    }
