"""The deployment config: a small YAML naming the variants (export folders from `nas export`),
their traffic, batching, replicas, guardrails and the canary ramp.

```yaml
name: fashion
variants:
  - {name: control, export: runs/quickstart/exports/trial-10-onnx}
  - {name: candidate, export: runs/quickstart/exports/trial-10-onnx-int8}
traffic: {control: 100}
batching: {max_batch_size: 16, max_wait_ms: 5, max_queue: 256}
ramp: {candidate: candidate, steps: [1, 5, 25, 50], min_requests: 200}
```

Like the run config, every model forbids unknown keys and an invalid file is one `ConfigError`
naming the field path, the bad value and what is allowed.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from nas.config import RUN_NAME_PATTERN, StrictModel, read_yaml, validation_problems
from nas.errors import ConfigError

VARIANT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"


class BatchingConfig(StrictModel):
    """Dynamic batching per variant (Triton's dynamic batcher, Ray Serve's `@serve.batch`)."""

    max_batch_size: int = Field(
        16, ge=1, le=1024, description="most requests run as one batch; 1 turns batching off"
    )
    max_wait_ms: float = Field(
        5.0, ge=0, le=1000, description="longest a request waits for a batch to fill"
    )
    max_queue: int = Field(
        256,
        ge=1,
        le=100_000,
        description="requests waiting per replica beyond those running; one more gets HTTP 503",
    )


class AutoscalingConfig(StrictModel):
    """Ray Serve's autoscaling: replicas follow the requests each one holds."""

    min_replicas: int = Field(1, ge=0, le=64)
    max_replicas: int = Field(4, ge=1, le=64)
    target_ongoing_requests: float = Field(
        8.0, gt=0, description="requests in flight per replica the autoscaler aims for"
    )

    @model_validator(mode="after")
    def _range(self) -> AutoscalingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas {self.max_replicas} is below min_replicas {self.min_replicas}"
            )
        return self


class VariantConfig(StrictModel):
    """One exported model served behind the deployment's endpoint."""

    name: str = Field(pattern=VARIANT_NAME_PATTERN)
    export: Path = Field(description="an export folder written by `nas export`")
    file: Literal["model_proxy", "model"] = Field(
        "model_proxy",
        description="model_proxy: the trained network at the proxy shape (what the card's "
        "accuracy describes); model: the deployment-shape file",
    )
    replicas: int = Field(1, ge=1, le=64, description="fixed replicas (without autoscaling)")
    autoscaling: AutoscalingConfig | None = Field(
        None, description="let Ray Serve add and remove replicas instead of a fixed number"
    )
    threads: int | None = Field(
        None, ge=1, le=256, description="runtime threads (default: the model card's)"
    )
    batching: BatchingConfig | None = Field(
        None, description="this variant's batching (default: the deployment's)"
    )


class GuardrailConfig(StrictModel):
    """What a candidate must not do; checked continuously while it is ramped up."""

    max_error_rate_increase: float = Field(
        0.01, ge=0, le=1, description="server errors: candidate rate minus control rate"
    )
    max_p99_ratio: float = Field(
        1.5, gt=1, le=100, description="candidate p99 latency over the control's"
    )
    max_accuracy_drop: float = Field(
        0.02, ge=0, le=1, description="control accuracy minus candidate's, on labelled feedback"
    )
    alpha: float = Field(0.05, gt=0, lt=0.5, description="false-alarm rate of the sequential tests")
    min_latency_samples: int = Field(
        100, ge=10, description="requests per variant before the p99 guardrail is checked"
    )


class RampConfig(StrictModel):
    """A canary ramp: the candidate's traffic share steps up while its guardrails hold."""

    candidate: str = Field(pattern=VARIANT_NAME_PATTERN)
    steps: tuple[float, ...] = Field(
        (1.0, 5.0, 25.0, 50.0), min_length=1, description="candidate traffic per step, percent"
    )
    min_requests: int = Field(200, ge=1, description="candidate requests each step is held for")
    min_feedback: int = Field(
        0, ge=0, description="labelled candidate requests each step also waits for"
    )
    check_interval_s: float = Field(1.0, gt=0, le=3600)
    promote: bool = Field(
        True, description="after the last step, send all traffic to the candidate"
    )

    @field_validator("steps")
    @classmethod
    def _steps_rise(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < s < 100 for s in steps) or any(b <= a for a, b in pairwise(steps)):
            raise ValueError("steps must rise strictly within (0, 100) percent")
        return steps


class HttpConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)


class DeployConfig(StrictModel):
    """A deployment: several variants of one model behind one endpoint, ``/<name>/``."""

    name: str = Field(pattern=RUN_NAME_PATTERN)
    variants: tuple[VariantConfig, ...] = Field(min_length=1)
    control: str | None = Field(
        None, description="the variant others are compared with (default: the first)"
    )
    traffic: dict[str, float] = Field(
        default_factory=dict,
        description="starting weights by variant (default: all on the control); a ramp sets "
        "its candidate's share itself",
    )
    batching: BatchingConfig = BatchingConfig()
    guardrails: GuardrailConfig = GuardrailConfig()
    ramp: RampConfig | None = None
    store: str | None = Field(
        None,
        description="exposure log: a sqlite:/// or postgresql:// URL (default: a SQLite file "
        "in the deployment's folder)",
    )
    http: HttpConfig = HttpConfig()
    ingress_replicas: int = Field(1, ge=1, le=64)
    max_body_bytes: int = Field(
        4_000_000, ge=1024, description="largest request body accepted (HTTP 413 above)"
    )

    @model_validator(mode="after")
    def _names_agree(self) -> DeployConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        for where, name in (("control", self.control), ("ramp.candidate", self._candidate())):
            if name is not None and name not in names:
                raise ValueError(f"{where} {name!r} is not a variant; variants: {names}")
        unknown = sorted(set(self.traffic) - set(names))
        if unknown:
            raise ValueError(f"traffic names unknown variants {unknown}; variants: {names}")
        if any(w < 0 for w in self.traffic.values()):
            raise ValueError(f"traffic weights must be >= 0, got {self.traffic}")
        if self.traffic and sum(self.traffic.values()) <= 0:
            raise ValueError("traffic weights must not all be 0")
        if self.ramp is not None and self.ramp.candidate == self.control_name:
            raise ValueError(f"ramp.candidate {self.ramp.candidate!r} is the control")
        return self

    def _candidate(self) -> str | None:
        return self.ramp.candidate if self.ramp is not None else None

    @property
    def control_name(self) -> str:
        return self.control or self.variants[0].name

    def variant(self, name: str) -> VariantConfig:
        return next(v for v in self.variants if v.name == name)

    def batching_of(self, name: str) -> BatchingConfig:
        return self.variant(name).batching or self.batching

    def starting_traffic(self) -> dict[str, float]:
        """Weights by variant, summing to 100, before any ramp step or manual change."""
        raw = dict(self.traffic) or {self.control_name: 100.0}
        weights = {v.name: float(raw.get(v.name, 0.0)) for v in self.variants}
        total = sum(weights.values())
        return {k: 100.0 * w / total for k, w in weights.items()}


def parse_deploy_config(raw: Any, *, source: str) -> DeployConfig:
    """Validate a mapping into a `DeployConfig`, or raise `ConfigError` naming every bad field.
    Export folders are made absolute (against the working directory): replicas run elsewhere."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a deployment config is a mapping, got {type(raw).__name__}")
    try:
        config = DeployConfig.model_validate(raw)
    except ValidationError as e:
        problems = validation_problems(e, DeployConfig)
        raise ConfigError(f"{source}: invalid deployment config: {problems}") from None
    variants = tuple(v.model_copy(update={"export": v.export.absolute()}) for v in config.variants)
    return config.model_copy(update={"variants": variants})


def load_deploy_config(path: str | Path) -> DeployConfig:
    """Read and validate a deployment YAML."""
    return parse_deploy_config(read_yaml(path, what="deployment config"), source=str(path))
