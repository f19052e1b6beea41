"""Request and response bodies of the JSON API (the OpenAPI schema is built from these)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nas.api import Progress
from nas.config import RUN_NAME_PATTERN

JobState = Literal["queued", "running", "finished", "failed", "cancelled"]
ExportFormat = Literal[
    "onnx", "onnx-fp16", "onnx-int8", "openvino", "tensorrt", "torchscript", "pt2"
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Model):
    """Every error: one message naming what is wrong and what is allowed."""

    detail: str


class SearchRequest(_Model):
    config: str = Field(..., max_length=200_000, description="the run config as YAML or JSON text")
    name: str | None = Field(
        None, pattern=RUN_NAME_PATTERN, description="run name; default: the config's"
    )
    n_trials: int | None = Field(None, ge=1, le=100_000, description="overrides search.n_trials")
    timeout: float | None = Field(None, gt=0, description="seconds; overrides search.timeout")


class SearchView(_Model):
    name: str
    state: JobState | None = Field(None, description="None for a run made outside the service")
    created: float | None = None
    started: float | None = None
    ended: float | None = None
    message: str = ""
    progress: Progress | None = None


class SearchDetail(SearchView):
    config: dict[str, Any]


class TrialRow(BaseModel):
    """One row of trials.csv; missing figures are null."""

    model_config = ConfigDict(extra="allow")

    number: int
    state: str
    feasible: bool
    on_front: bool
    candidate: str
    accuracy: float | None = None
    latency_p50_ms: float | None = None


class TrialPage(_Model):
    total: int
    offset: int
    limit: int
    sort: str
    order: Literal["asc", "desc"]
    trials: list[TrialRow]


class TrialDetail(_Model):
    row: TrialRow
    attrs: dict[str, Any]
    params: dict[str, Any]
    started: str | None
    completed: str | None


class FrontView(_Model):
    trials: list[TrialRow]
    knee: int | None = Field(None, description="the knee's trial number (3+ members)")


class PickView(_Model):
    max_latency_ms: float
    trial: TrialRow | None
    message: str


class CompareView(_Model):
    a: TrialRow
    b: TrialRow
    difference: dict[str, float | None]


class ExportRequest(_Model):
    trial: int = Field(..., ge=0)
    format: ExportFormat | None = Field(None, description="default: the trial's precision's")
    precision: str | None = Field(None, pattern=r"^(fp32|fp16|bf16|int8)$")
    weights: Literal["auto", "trained", "search"] = "auto"
    min_agreement: float = Field(0.98, gt=0, le=1)


class ExportView(_Model):
    id: str
    run: str
    trial: int
    format: str | None
    precision: str | None
    state: JobState
    created: float
    ended: float | None
    message: str
    card: dict[str, Any] | None = None


class DeviceView(BaseModel):
    model_config = ConfigDict(extra="allow")

    device: str
    source: str
    detail: str
    measurable: bool
    note: str
    predictors: list[dict[str, Any]]


class TableAdded(_Model):
    device: str
    table: str


class Health(_Model):
    status: Literal["ok"]
