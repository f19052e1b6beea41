"""A/B comparison of exported variants on the same data and the same machine.

Every variant is a folder made by `nas export`. Latency: each variant's deployment file runs in
its own runtime, in interleaved rounds (so all see the same machine state); the ratio of
medians against the first variant gets a bootstrap 95 % confidence interval (SciPy). Accuracy:
each variant's proxy-shape file predicts the same validation images; the difference against the
first variant is tested with the exact McNemar test on the paired predictions (a binomial test
on the images where exactly one of the two is right). Size is the files on disk; peak memory is
the peak resident set of a fresh process that loads the file and runs it. By default timm's
``efficientnet_b0`` (untrained, exported to fp32 ONNX at the first variant's deployment shape)
is kept in the comparison as a fixed latency baseline. Peak memory is reported for the whole
process and for the part above the runtime's own import.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hwnas_base.io import write_atomic
from hwnas_base.progress import PhaseProgress, quiet
from latency_predictors.backends.base import time_calls
from latency_predictors.onnx_export import export_onnx
from nas.compress.quantization import shaped
from nas.config import parse_config
from nas.errors import ExportError
from nas.export.formats import FORMATS, Format, load, run_batches
from nas.export.layer_profile import read_card
from nas.train.data import splits_for

BASELINE = "timm efficientnet_b0 (fp32 ONNX)"


@dataclass
class Variant:
    name: str
    fmt: Format
    precision: str
    model: Path
    shape: tuple[int, ...]
    proxy: Path | None = None
    proxy_shape: tuple[int, ...] | None = None
    card: dict[str, Any] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    predictions: np.ndarray | None = None
    size_bytes: int = 0

    def __post_init__(self) -> None:
        self.size_bytes = sum(
            f.stat().st_size for f in self.model.parent.glob(f"{self.model.stem}.*")
        )


def _shape(raw: list[int | None], batch: int = 1) -> tuple[int, ...]:
    return tuple(batch if d is None else int(d) for d in raw)


def variant(folder: Path) -> Variant:
    card = read_card(folder)
    fmt = FORMATS[card["format"]["name"]]
    precision = card["format"]["precision"]
    fmt.check(precision)
    model, proxy = folder / f"model{fmt.suffix}", folder / f"model_proxy{fmt.suffix}"
    for f in (model, proxy):
        if not f.is_file():
            raise ExportError(f"{f} missing; export it again")
    return Variant(
        name=Path(folder).name or str(folder),
        fmt=fmt,
        precision=precision,
        model=model,
        shape=_shape(card["files"][model.name]["input_shape"]),
        proxy=proxy,
        proxy_shape=_shape(card["files"][proxy.name]["input_shape"]),
        card=card,
    )


def baseline(shape: tuple[int, ...], folder: Path) -> Variant:
    """timm's efficientnet_b0 at `shape`, fp32 ONNX, untrained (latency and size only)."""
    import timm

    model = timm.create_model("efficientnet_b0", pretrained=False, in_chans=shape[1]).eval()
    path = export_onnx(model, shape, folder / "model.onnx")
    return Variant(BASELINE, FORMATS["onnx"], "fp32", path, shape)


def _validation(card: dict[str, Any]) -> tuple[torch.Tensor, np.ndarray, Any]:
    config = parse_config(card["config"], source="model card")
    splits = splits_for(config, card["training"].get("train_images"))
    return splits.val_x, splits.val_y.numpy(), splits


def _call(run: Any, x: np.ndarray) -> Any:
    return lambda: run(x)


_LOADERS = {
    "onnxruntime": (
        "import onnxruntime as ort\n",
        "o = ort.SessionOptions(); o.intra_op_num_threads = 1\n"
        "s = ort.InferenceSession(PATH, o, providers=['CPUExecutionProvider'])\n"
        "run = lambda x: s.run(None, {s.get_inputs()[0].name: x})\n",
    ),
    "openvino": (
        "import openvino as ov\n",
        "r = ov.Core().compile_model(PATH, 'CPU', {'INFERENCE_NUM_THREADS': 1, "
        "'INFERENCE_PRECISION_HINT': HINT}).create_infer_request()\n"
        "run = lambda x: r.infer({0: x})\n",
    ),
    "torch": (
        "import torch\n",
        "m = torch.jit.load(PATH) if PATH.endswith('.pt') else torch.export.load(PATH).module()\n"
        "run = lambda x: m(torch.from_numpy(x))\n",
    ),
}


def _peak_memory_mb(v: Variant) -> tuple[float, float]:
    """(peak RSS of a fresh process that imports the runtime, loads the file and runs it 5
    times; the part of it above the runtime alone), in MiB."""
    if v.fmt.runtime not in _LOADERS:
        return float("nan"), float("nan")
    imports, body = _LOADERS[v.fmt.runtime]
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent.
    code = (
        "import numpy as np\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1])\n"
        + imports
        + "base = hwm()\n"
        + f"PATH, HINT = {str(v.model)!r}, {'bf16' if v.precision == 'bf16' else 'f32'!r}\n"
        + body
        + f"x = np.zeros({v.shape!r}, np.float32)\n"
        + "for _ in range(5):\n    run(x)\n"
        + "peak = hwm()\n"
        + "print(peak, peak - base)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=600
    )
    if proc.returncode != 0:
        return float("nan"), float("nan")
    peak, model = proc.stdout.strip().splitlines()[-1].split()
    return int(peak) / 1024, int(model) / 1024


@dataclass(frozen=True)
class CompareOptions:
    """What `nas compare` asks for.

    Attributes:
        variants: Folders made by `nas export`; the first is the reference.
        with_baseline: Keep timm's efficientnet_b0 (fp32 ONNX) as a fixed latency baseline.
        rounds: Interleaved latency rounds.
        repeats: Timed runs per variant and round.
        threads: Runtime threads.
        report: The HTML report to write, or None.
    """

    variants: tuple[Path, ...]
    with_baseline: bool = True
    rounds: int = 5
    repeats: int = 20
    threads: int = 1
    report: Path | None = None


def compare(options: CompareOptions, progress: PhaseProgress = quiet) -> pd.DataFrame:
    """Compare exported variants; returns the verdict table (first variant = reference).

    Raises:
        ExportError: fewer than two variants, a folder that is not an export, or variants
            scored on different data.
    """
    if len(options.variants) + options.with_baseline < 2:
        raise ExportError("compare needs at least two variants (or one and the baseline)")
    if options.rounds < 1 or options.repeats < 3 or options.threads < 1:
        raise ExportError(
            f"--rounds >= 1, --repeats >= 3 and --threads >= 1; got {options.rounds}, "
            f"{options.repeats}, {options.threads}"
        )
    variants = [variant(Path(f)) for f in options.variants]
    data_keys = {json.dumps(v.card["config"]["data"], sort_keys=True) for v in variants}
    if len(data_keys) > 1:
        raise ExportError(
            "the variants were trained on different data configs; compare like with like"
        )
    with tempfile.TemporaryDirectory(prefix="nas-compare-") as tmp:
        if options.with_baseline:
            variants.append(baseline(variants[0].shape, Path(tmp)))
        val_x, val_y, splits = _validation(variants[0].card)
        _predict(variants, val_x, options.threads, progress)
        _time(variants, options, progress)
        memory = []
        for i, v in enumerate(variants):
            progress("peak memory, one process each", i, len(variants))
            memory.append(_peak_memory_mb(v))
        progress("peak memory, one process each", len(variants), len(variants))
    ref = variants[0]
    rows = [_row(v, ref, val_y, mem) for v, mem in zip(variants, memory, strict=True)]
    table = pd.DataFrame(rows)
    if options.report is not None:
        write_atomic(options.report, _html(table, variants, len(splits.val_y)))
    return table


def _predict(variants: list[Variant], val_x: torch.Tensor, threads: int, progress: Any) -> None:
    """Each variant's proxy-shape file's predictions on the validation images."""
    for i, v in enumerate(variants):
        progress("accuracy on the validation split", i, len(variants))
        if v.proxy is None or v.proxy_shape is None:
            continue
        x = shaped(val_x, v.proxy_shape[1], v.proxy_shape[-1]).numpy()
        run = load(v.fmt, v.proxy, v.proxy_shape, precision=v.precision, threads=threads)
        v.predictions = run_batches(run, x, v.proxy_shape[0]).argmax(1)


def _time(variants: list[Variant], options: CompareOptions, progress: Any) -> None:
    """Latency of every deployment file in interleaved rounds, each round in a new order."""
    runners = [
        load(v.fmt, v.model, v.shape, precision=v.precision, threads=options.threads)
        for v in variants
    ]
    inputs = [
        np.random.default_rng(0).standard_normal(v.shape).astype(np.float32) for v in variants
    ]
    for r in range(options.rounds):
        progress("latency, interleaved rounds", r, options.rounds)
        order = list(range(len(variants)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            times = time_calls(_call(runners[i], inputs[i]), warmup=3, repeats=options.repeats)
            variants[i].times.extend(times.tolist())
    progress("latency, interleaved rounds", options.rounds, options.rounds)


def _ratio_ci(v: Variant, ref: Variant) -> tuple[float, float]:
    """Bootstrap 95 % interval of median(v) / median(ref)."""
    from scipy.stats import bootstrap

    if v is ref:
        return 1.0, 1.0
    ci = bootstrap(
        (np.asarray(v.times), np.asarray(ref.times)),
        lambda a, b: np.median(a) / np.median(b),
        vectorized=False,
        n_resamples=2000,
        method="percentile",
        random_state=0,
    ).confidence_interval
    return float(ci.low), float(ci.high)


def _accuracy(v: Variant, ref: Variant, val_y: np.ndarray) -> tuple[float, float, float]:
    """(accuracy, difference to the reference, exact McNemar p) of `v`'s predictions."""
    from scipy.stats import binomtest

    acc = diff = p = float("nan")
    if v.predictions is not None:
        right = v.predictions == val_y
        acc = float(right.mean())
        if ref.predictions is not None and v is not ref:
            ref_right = ref.predictions == val_y
            b = int((ref_right & ~right).sum())
            c = int((~ref_right & right).sum())
            diff = acc - float(ref_right.mean())
            p = 1.0 if b + c == 0 else float(binomtest(min(b, c), b + c, 0.5).pvalue)
    return acc, diff, p


def _row(
    v: Variant, ref: Variant, val_y: np.ndarray, memory: tuple[float, float]
) -> dict[str, Any]:
    """One variant's line of the verdict table."""
    times = np.asarray(v.times)
    low, high = _ratio_ci(v, ref)
    acc, diff, p = _accuracy(v, ref, val_y)
    speed = (
        "reference"
        if v is ref
        else "faster"
        if high < 1
        else "slower"
        if low > 1
        else "no clear difference"
    )
    return {
        "variant": v.name,
        "format": f"{v.fmt.name} {v.precision}",
        "accuracy": acc,
        "accuracy_diff": diff,
        "mcnemar_p": p,
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "ratio": float(np.median(times) / np.median(np.asarray(ref.times))),
        "ratio_ci_low": low,
        "ratio_ci_high": high,
        "size_mb": v.size_bytes / 2**20,
        "peak_rss_mb": memory[0],
        "model_rss_mb": memory[1],
        "latency": speed,
        "accuracy_verdict": ""
        if np.isnan(p)
        else "differs (p < 0.05)"
        if p < 0.05
        else "no significant change",
    }


def _html(table: pd.DataFrame, variants: list[Variant], n_val: int) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("latency per run (ms)", f"accuracy ({n_val} images)")
    )
    for v in variants:
        fig.add_trace(
            go.Box(y=v.times, name=Path(v.name).name or v.name, boxmean=True), row=1, col=1
        )
    known = table.dropna(subset=["accuracy"])
    fig.add_trace(
        go.Bar(
            x=[Path(n).name for n in known["variant"]],
            y=known["accuracy"],
            text=[f"{a:.4f}" for a in known["accuracy"]],
            showlegend=False,
        ),
        row=1,
        col=2,
    )
    fig.update_layout(title="A/B comparison of exported variants", template="plotly_white")
    return str(fig.to_html(include_plotlyjs=True, full_html=True)) + table.to_html(
        index=False, float_format=lambda x: f"{x:.4g}"
    )
