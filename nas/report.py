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

# What a compressed trial records beside its objectives (trials.csv, model cards).
COMPRESSION_COLUMNS = (
    "accuracy_trained",
    "accuracy_pruned",
    "accuracy_finetuned",
    "latency_parent_ms",
    "speedup_vs_parent",
    "slower_than_parent",
)
TRIAL_COLUMNS = [
    "number",
    "state",
    "feasible",
    "on_front",
    "candidate",
    "prune_ratio",
    "precision",
    "accuracy",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_std_ms",
    "latency_source",
    "latency_predicted_ms",
    "latency_measured_ms",
    "params",
    "flops",
    *COMPRESSION_COLUMNS,
    "params_parent",
    "duration_s",
    "device",
    "duplicate_of",
    "stop_reason",
    "failure_reason",
]
OBJECTIVES = ("accuracy", "latency_p50_ms")
MAXIMIZE = (True, False)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state.name == "COMPLETE" and all(v <= 0 for v in trial.constraints.values())


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, in trial order, with the Pareto front marked."""
    rows = []
    remeasured = study.user_attrs.get("front_measured", {})
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        if a.get("surplus"):
            continue  # asked by a worker after others had taken the target's last places
        duration = t.duration.total_seconds() if t.duration is not None else math.nan
        device = a.get("device")
        source = a.get("latency_source", "measured") if "accuracy" in a else ""
        measured = a.get("latency_p50_ms", math.nan) if source == "measured" else math.nan
        if str(t.number) in remeasured:
            measured = remeasured[str(t.number)]["p50_ms"]
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "feasible": _feasible(t),
                "candidate": a.get("candidate", ""),
                "prune_ratio": _number(a.get("prune_ratio")),
                "precision": a.get("precision", ""),
                "accuracy": a.get("accuracy", math.nan),
                "latency_p50_ms": a.get("latency_p50_ms", math.nan),
                "latency_p90_ms": a.get("latency_p90_ms", math.nan),
                "latency_std_ms": a.get("latency_std_ms", math.nan),
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
                "duplicate_of": a.get("duplicate_of"),
                "stop_reason": a.get("stop_reason", ""),
                "failure_reason": a.get("failure_reason", ""),
            }
        )
    df = pd.DataFrame(rows, columns=[c for c in TRIAL_COLUMNS if c != "on_front"])
    df["params"] = df["params"].astype("Int64")
    df["flops"] = df["flops"].astype("Int64")
    df["duplicate_of"] = df["duplicate_of"].astype("Int64")
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


def pareto_figure(trials: pd.DataFrame, title: str) -> go.Figure:
    """Accuracy against latency for every completed trial, the front drawn as a step line."""
    import plotly.graph_objects as go

    done = trials[trials["state"] == "COMPLETE"]
    front = front_frame(trials)
    fig = go.Figure()
    hover = (
        "trial %{customdata[0]}<br>%{customdata[1]}<br>%{customdata[5]}<br>accuracy %{y:.4f}<br>"
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
                    [_compression_label(r) for r in df.itertuples()],
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
    _compression_traces(fig, done)
    checked = front[front["latency_source"] == "predicted"].dropna(subset=["latency_measured_ms"])
    if len(checked):
        xs, ys = _segments(
            checked, ("latency_p50_ms", "accuracy"), ("latency_measured_ms", "accuracy")
        )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                line={"color": "#2ca02c", "dash": "dot"},
                hoverinfo="skip",
                showlegend=False,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=checked["latency_measured_ms"],
                y=checked["accuracy"],
                name="front, measured (re-check of the prediction)",
                mode="markers",
                marker={"color": "#2ca02c", "symbol": "diamond", "size": 10},
                customdata=np.stack([checked["number"], checked["latency_p50_ms"]], axis=1),
                hovertemplate="trial %{customdata[0]}<br>measured %{x:.3f} ms, predicted "
                "%{customdata[1]:.3f} ms<extra></extra>",
            )
        )
    note = trials.attrs.get("latency_note", "")
    if note:
        title = f"{title}<br><sup>latency {note}</sup>"
    fig.update_layout(
        title=title,
        xaxis_title="latency p50 (ms, lower is better)",
        yaxis_title="proxy validation accuracy (higher is better)",
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def _segments(
    df: pd.DataFrame, start: tuple[str, str], end: tuple[str, str]
) -> tuple[list[float | None], list[float | None]]:
    """x and y of one line segment per row, from columns `start` to `end`, None-separated."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for r in df.to_dict("records"):
        xs += [float(r[start[0]]), float(r[end[0]]), None]
        ys += [float(r[start[1]]), float(r[end[1]]), None]
    return xs, ys


def _compression_label(r: Any) -> str:
    if not r.precision:
        return "uncompressed"
    prune = f"pruned {r.prune_ratio:.0%}" if r.prune_ratio > 0 else "unpruned"
    return f"{prune}, {r.precision}, {r.speedup_vs_parent:.2f}x vs fp32 parent"


def _compression_traces(fig: go.Figure, done: pd.DataFrame) -> None:
    """Each compressed candidate joined to its fp32 parent; slower-than-parent ones ringed."""
    import plotly.graph_objects as go

    compressed = done[(done["precision"] != "fp32") | (done["prune_ratio"] > 0)]
    compressed = compressed.dropna(subset=["latency_parent_ms", "accuracy_trained"])
    if compressed.empty:
        return
    xs, ys = _segments(
        compressed, ("latency_parent_ms", "accuracy_trained"), ("latency_p50_ms", "accuracy")
    )
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines",
            line={"color": "#9467bd", "dash": "dot", "width": 1},
            name="compressed <- its fp32 parent (torch accuracy, fp32 latency)",
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=compressed["latency_parent_ms"],
            y=compressed["accuracy_trained"],
            mode="markers",
            name="fp32 parent",
            marker={"color": "#9467bd", "symbol": "circle-open", "size": 7},
            customdata=np.stack([compressed["number"], compressed["precision"]], axis=1),
            hovertemplate="parent of trial %{customdata[0]}<br>fp32 %{x:.3f} ms, accuracy "
            "%{y:.4f}<extra></extra>",
        )
    )
    slower = compressed[compressed["slower_than_parent"].fillna(False).astype(bool)]
    if len(slower):
        fig.add_trace(
            go.Scatter(
                x=slower["latency_p50_ms"],
                y=slower["accuracy"],
                mode="markers",
                name="slower than its fp32 parent",
                marker={
                    "color": "#e4572e",
                    "symbol": "circle-open",
                    "size": 16,
                    "line": {"width": 2},
                },
                customdata=np.stack(
                    [slower["number"], slower["precision"], slower["prune_ratio"]], axis=1
                ),
                hovertemplate="trial %{customdata[0]}: %{customdata[1]}, pruned "
                "%{customdata[2]:.0%}, slower than fp32<extra></extra>",
            )
        )


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


def predictor_figure(report: dict[str, Any]) -> go.Figure:
    """Predicted against measured latency of held-out candidates, predictor and FLOPs baseline."""
    import plotly.graph_objects as go

    test = pd.DataFrame(report["test"])
    kind = report["predictor"]
    fig = go.Figure()
    top = float(max(test["measured_ms"].max(), test["predicted_ms"].max()))
    fig.add_trace(
        go.Scatter(
            x=[0, top],
            y=[0, top],
            mode="lines",
            name="exact",
            line={"color": "#444", "dash": "dash"},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[0, top, top, 0],
            y=[0, top * 1.1, top * 0.9, 0],
            fill="toself",
            mode="none",
            name="+-10 %",
            fillcolor="rgba(44,160,44,0.12)",
        )
    )
    for column, name, color in (
        ("flops_ms", "FLOPs baseline", "#9aa5b1"),
        ("predicted_ms", kind, "#1f77b4"),
    ):
        m = report["metrics"]["flops" if column == "flops_ms" else kind]
        fig.add_trace(
            go.Scatter(
                x=test["measured_ms"],
                y=test[column],
                mode="markers",
                name=f"{name}: {m['within_10']:.0%} within 10 %, Spearman {m['spearman']:.3f}",
                marker={"color": color, "size": 6},
                text=test["candidate"],
                hovertemplate="%{text}<br>measured %{x:.3f} ms<br>predicted %{y:.3f} ms"
                "<extra></extra>",
            )
        )
    dev = report["device"]
    fig.update_layout(
        title=f"{kind} predictor on {dev['name']} ({dev['runtime']} {dev['runtime_version']}): "
        f"{report['n_test']} held-out candidates",
        xaxis_title="measured latency p50 (ms)",
        yaxis_title="predicted latency (ms)",
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig
