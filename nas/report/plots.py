"""Plots of a run and of a latency predictor, drawn from tables (plotly, loaded when drawn).

The accuracy/latency plot shows every completed trial, the front as a step line, infeasible
trials, each compressed candidate joined to its fp32 parent (slower ones ringed), and front
members whose predicted latency was re-measured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hwnas_base.io import write_atomic
from nas.record import ACCURACY, LATENCY
from nas.report.tables import front_frame
from nas.run import Run

if TYPE_CHECKING:
    import plotly.graph_objects as go


# Hover text of a trial's point: number, candidate, compression, accuracy, latency, size.
TRIAL_HOVER = (
    "trial %{customdata[0]}<br>%{customdata[1]}<br>%{customdata[5]}<br>accuracy %{y:.4f}<br>"
    "latency p50 %{x:.3f} ms (p90 %{customdata[2]:.3f})<br>params %{customdata[3]:,}"
    "<br>FLOPs %{customdata[4]:,}<extra></extra>"
)


def pareto_figure(trials: pd.DataFrame, title: str) -> go.Figure:
    """Accuracy against latency for every completed trial, the front drawn as a step line."""
    import plotly.graph_objects as go

    done = trials[trials["state"] == "COMPLETE"]
    front = front_frame(trials)
    fig = go.Figure()
    fig.add_trace(
        _trial_trace(
            done[done["feasible"] & ~done["number"].isin(front["number"])],
            "feasible",
            mode="markers",
            marker={"color": "#9aa5b1", "size": 8},
        )
    )
    fig.add_trace(
        _trial_trace(
            done[~done["feasible"]],
            "infeasible (breaks a constraint)",
            mode="markers",
            marker={"color": "#e4572e", "symbol": "x", "size": 8},
        )
    )
    fig.add_trace(
        _trial_trace(
            front,
            "Pareto front",
            mode="lines+markers",
            line={"shape": "hv", "color": "#1f77b4"},
            marker={"size": 11, "color": "#1f77b4"},
        )
    )
    _compression_traces(fig, done)
    _remeasured_traces(fig, front)
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


def _trial_trace(df: pd.DataFrame, name: str, **style: Any) -> go.Scatter:
    """The trials of `df` as points (or a line), each hovering with its details."""
    import plotly.graph_objects as go

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
    return go.Scatter(
        x=df[LATENCY],
        y=df[ACCURACY],
        name=name,
        customdata=custom,
        hovertemplate=TRIAL_HOVER,
        **style,
    )


def _remeasured_traces(fig: go.Figure, front: pd.DataFrame) -> None:
    """Front members whose predicted latency was measured afterwards, joined to the
    prediction."""
    import plotly.graph_objects as go

    checked = front[front["latency_source"] == "predicted"].dropna(subset=["latency_measured_ms"])
    if not len(checked):
        return
    xs, ys = _segments(checked, (LATENCY, ACCURACY), ("latency_measured_ms", ACCURACY))
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
            y=checked[ACCURACY],
            name="front, measured (re-check of the prediction)",
            mode="markers",
            marker={"color": "#2ca02c", "symbol": "diamond", "size": 10},
            customdata=np.stack([checked["number"], checked[LATENCY]], axis=1),
            hovertemplate="trial %{customdata[0]}<br>measured %{x:.3f} ms, predicted "
            "%{customdata[1]:.3f} ms<extra></extra>",
        )
    )


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
    xs, ys = _segments(compressed, ("latency_parent_ms", "accuracy_trained"), (LATENCY, ACCURACY))
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
                x=slower[LATENCY],
                y=slower[ACCURACY],
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


def write_plot(run: Run, trials: pd.DataFrame, subtitle: str = "") -> None:
    fig = pareto_figure(trials, f"{run.name}: accuracy vs latency {subtitle}".strip())
    write_atomic(run.pareto_html, fig.to_html(include_plotlyjs=True, full_html=True))


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
