"""Tables and plots read from a run's study storage: trials.csv, pareto.csv, pareto.html."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nas.pareto import front_indices
from nas.run import Run, write_atomic

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

TRIAL_COLUMNS = [
    "number",
    "state",
    "feasible",
    "on_front",
    "candidate",
    "accuracy",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_std_ms",
    "params",
    "flops",
    "duration_s",
    "device",
    "duplicate_of",
    "failure_reason",
]
OBJECTIVES = ("accuracy", "latency_p50_ms")
MAXIMIZE = (True, False)


def _feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state.name == "COMPLETE" and all(v <= 0 for v in trial.constraints.values())


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, in trial order, with the Pareto front marked."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        duration = t.duration.total_seconds() if t.duration is not None else math.nan
        device = a.get("device")
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "feasible": _feasible(t),
                "candidate": a.get("candidate", ""),
                "accuracy": a.get("accuracy", math.nan),
                "latency_p50_ms": a.get("latency_p50_ms", math.nan),
                "latency_p90_ms": a.get("latency_p90_ms", math.nan),
                "latency_std_ms": a.get("latency_std_ms", math.nan),
                "params": a.get("params"),
                "flops": a.get("flops"),
                "duration_s": round(duration, 2),
                "device": device["name"] if isinstance(device, dict) else "",
                "duplicate_of": a.get("duplicate_of"),
                "failure_reason": a.get("failure_reason", ""),
            }
        )
    df = pd.DataFrame(rows, columns=[c for c in TRIAL_COLUMNS if c != "on_front"])
    df["params"] = df["params"].astype("Int64")
    df["flops"] = df["flops"].astype("Int64")
    df["duplicate_of"] = df["duplicate_of"].astype("Int64")
    df.insert(3, "on_front", False)
    front = front_frame(df)
    df.loc[df["number"].isin(front["number"]), "on_front"] = True
    return df


def front_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Feasible completed trials that no other such trial dominates, fastest first."""
    ok = trials[(trials["state"] == "COMPLETE") & trials["feasible"].astype(bool)]
    if ok.empty:
        return ok.copy()
    points = ok[list(OBJECTIVES)].to_numpy(dtype=np.float64)
    idx = front_indices(points, MAXIMIZE, sort_by=1)
    return ok.iloc[idx].reset_index(drop=True)


def pareto_figure(trials: pd.DataFrame, title: str) -> go.Figure:
    """Accuracy against latency for every completed trial, the front drawn as a step line."""
    import plotly.graph_objects as go

    done = trials[trials["state"] == "COMPLETE"]
    front = front_frame(trials)
    fig = go.Figure()
    hover = (
        "trial %{customdata[0]}<br>%{customdata[1]}<br>accuracy %{y:.4f}<br>"
        "latency p50 %{x:.3f} ms (p90 %{customdata[2]:.3f})<br>params %{customdata[3]:,}"
        "<br>FLOPs %{customdata[4]:,}<extra></extra>"
    )

    def trace(df: pd.DataFrame, name: str, **style: Any) -> None:
        custom = (
            np.stack(
                [
                    df["number"],
                    df["candidate"],
                    df["latency_p90_ms"],
                    df["params"].astype("float64"),
                    df["flops"].astype("float64"),
                ],
                axis=1,
            )
            if len(df)
            else None
        )
        fig.add_trace(
            go.Scatter(
                x=df["latency_p50_ms"],
                y=df["accuracy"],
                name=name,
                customdata=custom,
                hovertemplate=hover,
                **style,
            )
        )

    trace(
        done[done["feasible"] & ~done["number"].isin(front["number"])],
        "feasible",
        mode="markers",
        marker={"color": "#9aa5b1", "size": 8},
    )
    trace(
        done[~done["feasible"]],
        "infeasible (breaks a constraint)",
        mode="markers",
        marker={"color": "#e4572e", "symbol": "x", "size": 8},
    )
    trace(
        front,
        "Pareto front",
        mode="lines+markers",
        line={"shape": "hv", "color": "#1f77b4"},
        marker={"size": 11, "color": "#1f77b4"},
    )
    fig.update_layout(
        title=title,
        xaxis_title="latency p50 (ms, lower is better)",
        yaxis_title="proxy validation accuracy (higher is better)",
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def write_tables(run: Run, trials: pd.DataFrame) -> pd.DataFrame:
    """Write trials.csv and pareto.csv atomically; return the front."""
    front = front_frame(trials)
    write_atomic(run.trials_csv, trials.to_csv(index=False))
    write_atomic(run.pareto_csv, front[TRIAL_COLUMNS].to_csv(index=False))
    return front


def write_plot(run: Run, trials: pd.DataFrame, subtitle: str = "") -> None:
    fig = pareto_figure(trials, f"{run.name}: accuracy vs latency {subtitle}".strip())
    write_atomic(run.pareto_html, fig.to_html(include_plotlyjs=True, full_html=True))


def front_records(front: pd.DataFrame) -> list[dict[str, Any]]:
    """The front as JSON-safe records."""
    return json.loads(front[TRIAL_COLUMNS].to_json(orient="records"))
