"""Where the time goes: a per-layer latency breakdown of an exported model, from its runtime.

ONNX formats run in ONNX Runtime with its profiler on (one event per graph node per run, after
the runtime's own fusions); OpenVINO IR runs with performance counters (one entry per executed
primitive, with the kernel it chose); TorchScript and torch.export programs run under
``torch.profiler``. Each layer's time is its median over the runs; the table lists layers by
time with their share of the summed layer time, and the op-type summary adds them up.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hwnas_base.io import write_atomic
from nas.errors import ExportError
from nas.export.formats import get_format


def read_card(model_dir: Path) -> dict[str, Any]:
    """The model card of an export folder; `ExportError` if it has none."""
    card_path = Path(model_dir) / "model_card.json"
    if not card_path.is_file():
        raise ExportError(f"{model_dir}: no model_card.json; profile a folder made by `nas export`")
    card: dict[str, Any] = json.loads(card_path.read_text("utf-8"))
    return card


def _input(shape: list[int | None]) -> np.ndarray:
    dims = [1 if d is None else int(d) for d in shape]
    return np.random.default_rng(0).standard_normal(dims).astype(np.float32)


def _onnxruntime(path: Path, x: np.ndarray, runs: int, threads: int) -> pd.DataFrame:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="nas-prof-") as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(runs + 3):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    rows = [
        {
            "layer": e["name"].removesuffix("_kernel_time"),
            "op_type": e.get("args", {}).get("op_name", "?"),
            "us": float(e["dur"]),
        }
        for e in events
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
    ]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame[frame.groupby("layer").cumcount() >= 3]  # drop the warm-up runs


def _openvino(path: Path, x: np.ndarray, runs: int, threads: int, precision: str) -> pd.DataFrame:
    import openvino as ov

    config: dict[str, Any] = {
        "PERF_COUNT": True,
        "INFERENCE_NUM_THREADS": threads,
        # As the latency backend runs it: fp32 unless bf16 is asked for (OpenVINO would pick
        # bf16 by itself on CPUs that have it).
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
    }
    request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
    rows = []
    for i in range(runs + 3):
        request.infer({0: x})
        if i < 3:
            continue
        for p in request.get_profiling_info():
            if p.status.name == "EXECUTED":
                rows.append(
                    {
                        "layer": p.node_name,
                        "op_type": f"{p.node_type} ({p.exec_type})",
                        "us": p.real_time.total_seconds() * 1e6,
                    }
                )
    return pd.DataFrame(rows)


def _torch(path: Path, fmt: str, x: np.ndarray, runs: int, threads: int) -> pd.DataFrame:
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(threads)
    module: Any = (
        torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
    )
    inp = torch.from_numpy(x)
    with torch.no_grad():
        for _ in range(3):
            module(inp)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                module(inp)
    rows = [
        {"layer": e.key, "op_type": e.key, "us": e.self_cpu_time_total / runs}
        for e in prof.key_averages()
        if e.key.startswith("aten::")
    ]
    return pd.DataFrame(rows)


def profile_model(model_dir: Path, *, runs: int = 20, threads: int = 1) -> dict[str, Any]:
    """Per-layer breakdown of `model_dir`'s deployment-shape model; writes profile.csv and
    profile.html into it and returns the tables.

    Raises:
        ExportError: not an export folder, or a format whose runtime cannot profile here.
    """
    if runs < 1 or threads < 1:
        raise ExportError(f"--runs and --threads must be >= 1, got {runs} and {threads}")
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    spec = get_format(card["format"]["name"])
    precision = card["format"]["precision"]
    spec.check(precision)
    path = model_dir / f"model{spec.suffix}"
    if not path.is_file():
        raise ExportError(f"{path} missing; export the trial again")
    x = _input(card["files"][path.name]["input_shape"])
    if spec.runtime == "onnxruntime":
        raw = _onnxruntime(path, x, runs, threads)
    elif spec.runtime == "openvino":
        raw = _openvino(path, x, runs, threads, precision)
    elif spec.runtime == "torch":
        raw = _torch(path, spec.name, x, runs, threads)
    else:
        raise ExportError(
            f"format {spec.name}: per-layer profiling covers ONNX, OpenVINO and torch"
        )
    if raw.empty:
        raise ExportError(f"{spec.runtime} reported no layer timings for {path}")
    grouped = raw.groupby(["layer", "op_type"], sort=False)["us"]
    # torch's key_averages are already per run; the other runtimes give one row per run.
    layers = pd.DataFrame(grouped.sum() if spec.runtime == "torch" else grouped.median())
    layers = layers.reset_index()
    total = float(layers["us"].sum())
    layers = layers.sort_values("us", ascending=False).reset_index(drop=True)
    layers["share"] = layers["us"] / total
    by_type = (
        layers.groupby("op_type", as_index=False)
        .agg(us=("us", "sum"), layers=("layer", "count"))
        .sort_values("us", ascending=False)
        .reset_index(drop=True)
    )
    by_type["share"] = by_type["us"] / total
    write_atomic(model_dir / "profile.csv", layers.to_csv(index=False))
    title = (
        f"{path.name} ({spec.name}, {precision}) in {spec.runtime}, {threads} thread(s): "
        f"{total / 1000:.3f} ms summed over {len(layers)} layers, median of {runs} runs"
    )
    write_atomic(model_dir / "profile.html", _figure(layers, by_type, title))
    return {"layers": layers, "by_type": by_type, "total_us": total, "title": title}


def _figure(layers: pd.DataFrame, by_type: pd.DataFrame, title: str) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    top = layers.head(30).iloc[::-1]
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.6, 0.4],
        subplot_titles=("slowest layers", "time by operator type"),
    )
    fig.add_trace(
        go.Bar(
            x=top["us"],
            y=top["layer"],
            orientation="h",
            text=top["op_type"],
            hovertemplate="%{y}<br>%{text}<br>%{x:.1f} us<extra></extra>",
            name="layer",
        ),
        row=1,
        col=1,
    )
    types = by_type.iloc[::-1]
    fig.add_trace(
        go.Bar(
            x=types["us"],
            y=types["op_type"],
            orientation="h",
            customdata=types["share"],
            hovertemplate="%{y}<br>%{x:.1f} us (%{customdata:.1%})<extra></extra>",
            name="type",
        ),
        row=1,
        col=2,
    )
    fig.update_layout(
        title=title, template="plotly_white", showlegend=False, height=max(500, 22 * len(top))
    )
    fig.update_xaxes(title_text="microseconds per inference")
    return str(fig.to_html(include_plotlyjs=True, full_html=True))
