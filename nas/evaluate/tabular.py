"""Tabular mode: a candidate's accuracy and latency looked up in a benchmark table.

A benchmark table has one row per candidate of a registered space: its string, an accuracy and a
latency per device (NAS-Bench-201's ``nb201.csv.gz``: 15,625 cells, three datasets' accuracies,
21 devices' latencies). A search in tabular mode asks, tells and records exactly as a real one
does, in seconds instead of hours, so search strategies can be compared on the true front.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hwnas_base.progress import PhaseProgress, quiet
from latency_predictors.backends import LatencyResult
from latency_predictors.device import Device
from nas.compress.space import Compression
from nas.config import BenchmarkConfig
from nas.errors import ConfigError, RunError
from nas.evaluate.evaluator import Outcome, StopCheck
from search_spaces.base import SearchSpace
from search_spaces.flops import count_flops, count_params


@dataclass(frozen=True)
class BenchmarkTable:
    """Accuracy (a fraction) and latency (ms) by canonical candidate string."""

    path: Path
    column: str
    accuracy: Mapping[str, float]
    latency: Mapping[str, float]

    def __len__(self) -> int:
        return len(self.accuracy)

    def lookup(self, key: str) -> tuple[float, float]:
        """(accuracy, latency ms) of the candidate whose canonical string is `key`.

        Raises:
            RunError: the table has no row for it.
        """
        if key not in self.accuracy:
            raise RunError(f"candidate {key} is not in the benchmark table {self.path}")
        return self.accuracy[key], self.latency[key]


def read_table(config: BenchmarkConfig, space: SearchSpace) -> BenchmarkTable:
    """The benchmark table `config` names, every row checked against `space`.

    Raises:
        ConfigError: the file is missing or unreadable, a column is missing, a candidate
            string does not decode in the space or repeats, or a number is missing, negative
            or (for percentages) above 100.
    """
    path = Path(config.table).expanduser()
    if not path.is_file():
        raise ConfigError(f"benchmark.table: {path} does not exist")
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"benchmark.table: {path} is not a readable CSV: {e}") from None
    for field in ("candidate", "accuracy", "latency"):
        column = getattr(config, field)
        if column not in header:
            raise ConfigError(
                f"benchmark.{field}: no column {column!r} in {path}; its columns: "
                f"{', '.join(map(str, header))}"
            )
    frame = pd.read_csv(path, usecols=[config.candidate, config.accuracy, config.latency])
    top = 100.0 if config.accuracy_unit == "percent" else 1.0
    accuracy: dict[str, float] = {}
    latency: dict[str, float] = {}
    for row, (text, acc, ms) in enumerate(
        frame[[config.candidate, config.accuracy, config.latency]].itertuples(index=False),
        start=2,  # the file's line: the header is line 1
    ):
        where = f"benchmark.table {path} line {row}"
        try:
            key = space.encode(space.decode(str(text)))
        except ValueError as e:
            raise ConfigError(f"{where}: not a {space.name} candidate: {e}") from None
        if key in accuracy:
            raise ConfigError(f"{where}: candidate {key} appears twice")
        acc_value, ms_value = _number(acc), _number(ms)
        if acc_value is None or not 0.0 <= acc_value <= top:
            raise ConfigError(
                f"{where}: {config.accuracy} = {acc!r}; accuracies are numbers in [0, {top:g}] "
                f"(benchmark.accuracy_unit: {config.accuracy_unit})"
            )
        if ms_value is None or ms_value <= 0:
            raise ConfigError(f"{where}: {config.latency} = {ms!r}; latencies are ms > 0")
        accuracy[key] = acc_value / top
        latency[key] = ms_value
    if not accuracy:
        raise ConfigError(f"benchmark.table: {path} has no rows")
    return BenchmarkTable(path, config.latency, accuracy, latency)


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


class TableLatency:
    """The table's latency column as a latency source (what `Evaluator` and the samplers ask)."""

    def __init__(self, space: SearchSpace, table: BenchmarkTable) -> None:
        self.space, self.table = space, table
        self.device = Device(
            name=table.column,
            hardware=table.column,
            runtime="benchmark table",
            runtime_version=table.path.name,
            precision="fp32",
            batch_size=1,
            threads=1,
        )
        self.description = f"looked up in {table.path} (column {table.column})"
        self.notes: list[str] = []

    def ms(self, candidate: Any) -> float:
        return self.table.lookup(self.space.encode(candidate))[1]

    def __call__(self, candidate: Any, model: Any = None) -> tuple[LatencyResult, bool]:
        ms = self.ms(candidate)
        result = LatencyResult(
            device=self.device,
            mean_ms=ms,
            std_ms=0.0,
            p50_ms=ms,
            p90_ms=ms,
            min_ms=ms,
            n_runs=0,
            warmup=0,
            source="table",
        )
        return result, False


class TabularEvaluator:
    """Scores a candidate from the table: no training, no timing, no weights.

    Args:
        space: The table's search space.
        table: The benchmark table.
        num_classes: Classes of the benchmark's task, for the parameter count.
    """

    def __init__(self, space: SearchSpace, table: BenchmarkTable, num_classes: int = 10) -> None:
        self.space = space
        self.table = table
        self.latency = TableLatency(space, table)
        self.num_classes = num_classes
        self._size: dict[str, tuple[int, int]] = {}

    def _size_of(self, candidate: Any, key: str) -> tuple[int, int]:
        """(parameters, FLOPs) of the candidate's network, counted once per candidate."""
        if key not in self._size:
            params = getattr(self.space, "params", None)  # spaces that count without building
            flops = getattr(self.space, "flops", None)
            if params is None or flops is None:
                model = self.space.build(candidate, self.num_classes, 3)
                count = count_params(model)
                shape = (1, 3, self.space.resolution(candidate), self.space.resolution(candidate))
                self._size[key] = (count, count_flops(model, shape))
            else:
                self._size[key] = (
                    params(candidate, self.num_classes),
                    flops(candidate, self.num_classes),
                )
        return self._size[key]

    def __call__(
        self,
        candidate: Any,
        *,
        compression: Compression | None = None,
        weights_path: Path | None = None,
        progress: PhaseProgress = quiet,
        stop: StopCheck | None = None,
    ) -> Outcome:
        key = self.space.encode(candidate)
        progress("looking up", 0, 1)
        accuracy, _ = self.table.lookup(key)
        latency, _ = self.latency(candidate)
        params, flops = self._size_of(candidate, key)
        return Outcome(
            candidate=key,
            accuracy=accuracy,
            latency=latency,
            params=params,
            flops=flops,
            proxy_input_size=self.space.resolution(candidate),
            accuracy_source="table",
        )
