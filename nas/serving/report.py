"""`nas deploy report`: what each variant did with live traffic, against the control.

Per variant: requests by outcome, server-error rate, latency percentiles with bootstrap
intervals of their ratio to the control, throughput, accuracy on labelled feedback, and the
always-valid sequential tests (`nas.serving.stats`) for accuracy and error rate, so the verdict
stays valid however often the report is read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from nas.serving.config import DeployConfig
from nas.serving.stats import compare_rates, quantile_ratio


def variant_rows(
    df: pd.DataFrame, config: DeployConfig, traffic: dict[str, float]
) -> list[dict[str, Any]]:
    """One row per variant (control first) from the exposure log `df`."""
    control = config.control_name
    names = [control, *(v.name for v in config.variants if v.name != control)]
    ok_all = df["status"] == 200
    base = df[ok_all & (df["variant"] == control)]["latency_ms"].to_numpy(float)
    rows = []
    for name in names:
        mine = df[df["variant"] == name]
        ok = mine[mine["status"] == 200]
        server = mine[mine["status"] >= 500]
        lat = ok["latency_ms"].to_numpy(float)
        labelled = ok[ok["label"].notna()]
        row: dict[str, Any] = {
            "variant": name,
            "role": "control" if name == control else "candidate",
            "traffic_pct": round(float(traffic.get(name, 0.0)), 2),
            "requests": len(mine),
            "answered": len(ok),
            "refused_4xx": int(((mine["status"] >= 400) & (mine["status"] < 500)).sum()),
            "rejected_503": int((mine["status"] == 503).sum()),
            "errors_5xx": int(len(server) - (mine["status"] == 503).sum()),
            "error_rate": _rate(len(server), len(ok) + len(server)),
            "throughput_rps": _throughput(ok["ts"].to_numpy(float)),
            "mean_batch": float(ok["batch_size"].mean()) if len(ok) else float("nan"),
            "labelled": len(labelled),
            "accuracy": float((labelled["predicted"] == labelled["label"]).mean())
            if len(labelled)
            else float("nan"),
        }
        for q in (50, 95, 99):
            row[f"p{q}_ms"] = float(np.percentile(lat, q)) if len(lat) else float("nan")
        if name != control:
            row.update(_against_control(df, control, name, base, lat, config))
        rows.append(row)
    return rows


def _rate(k: int, n: int) -> float:
    return k / n if n else float("nan")


def _throughput(ts: np.ndarray) -> float:
    if len(ts) < 2 or ts.max() <= ts.min():
        return float("nan")
    return float((len(ts) - 1) / (ts.max() - ts.min()))


def _against_control(
    df: pd.DataFrame,
    control: str,
    name: str,
    base: np.ndarray,
    lat: np.ndarray,
    config: DeployConfig,
) -> dict[str, Any]:
    alpha = config.guardrails.alpha
    pair = df[df["variant"].isin([control, name])]
    ok = pair["status"] == 200
    out: dict[str, Any] = {}
    for q in (50, 95, 99):
        r = quantile_ratio(base, lat, q / 100)
        out[f"p{q}_ratio"], out[f"p{q}_ratio_ci"] = r.ratio, [r.low, r.high]
    labelled = pair[ok & pair["label"].notna()]
    acc = compare_rates(
        (labelled["variant"] == name).to_numpy(),
        (labelled["predicted"] == labelled["label"]).to_numpy(),
    )
    out["accuracy_diff"], out["accuracy_p"] = acc.difference, acc.p_value
    out["accuracy_verdict"] = _verdict(acc.difference, acc.p_value, alpha, "more", "less")
    counted = pair[ok | (pair["status"] >= 500)]
    err = compare_rates(
        (counted["variant"] == name).to_numpy(), (counted["status"] >= 500).to_numpy()
    )
    out["error_rate_diff"], out["error_rate_p"] = err.difference, err.p_value
    out["error_verdict"] = _verdict(err.difference, err.p_value, alpha, "more", "fewer")
    return out


def _verdict(diff: float, p: float, alpha: float, up: str, down: str) -> str:
    if not p < alpha:
        return f"no difference shown (p={p:.3g})"
    return f"{up if diff > 0 else down} than control (p={p:.3g} < {alpha:g})"


def report_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a table for printing: figures rounded, intervals as text."""
    table = pd.DataFrame(rows).set_index("variant")
    for col in ("p50_ratio_ci", "p95_ratio_ci", "p99_ratio_ci"):
        if col in table:
            table[col] = [
                f"{v[0]:.2f}-{v[1]:.2f}" if isinstance(v, list) else "" for v in table[col]
            ]
    return table.round(4)
