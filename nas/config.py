"""Run configuration: typed models loaded from ``configs/*.yaml``.

Every model forbids unknown keys, so a typo fails at load time with the field path and the keys
that are allowed there. Nothing is read from environment variables. Parsing checks each section
on its own terms; whether the seed candidates lie in the space is checked once, when a search
is prepared (`nas.search.session.check_seeds`), not on every parse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from latency_predictors.deployment import Deployment
from latency_predictors.protocol import ProtocolSettings
from nas.errors import ConfigError
from search_spaces.efficientnet.config import EfficientNetSpaceConfig
from search_spaces.nb201.config import NB201SpaceConfig

RUN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(StrictModel):
    """Proxy dataset. Validation images are held out of the training pool and never trained on."""

    dataset: Literal["fashion_mnist", "digits", "npz", "image_folder"] = "fashion_mnist"
    path: Path | None = Field(
        None,
        description="fashion_mnist: folder of IDX .gz files (default: Debian's "
        "/usr/share/datasets/fashion-mnist); npz: the .npz file; image_folder: the root folder",
    )
    image_size: int | None = Field(
        None, ge=4, le=512, description="image_folder only: images are resized to this side"
    )
    channels: Literal[1, 3] | None = Field(
        None, description="image_folder only: 1 (grayscale) or 3 (RGB, default)"
    )
    train_size: int = Field(5000, ge=1, description="training images drawn from the pool")
    val_size: int = Field(2000, ge=1, description="held-out validation images")


class TrainingConfig(StrictModel):
    """Proxy training recipe, the same for every candidate of a run."""

    epochs: int = Field(2, ge=1, le=1000)
    batch_size: int = Field(128, ge=1, le=65536)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-5, ge=0, le=1)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup_fraction: float = Field(
        0.25, ge=0, lt=1, description="share of steps spent warming up (onecycle, cosine)"
    )
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    bn_recalibration_batches: int = Field(
        8, ge=0, description="batches used to re-estimate BatchNorm statistics after training"
    )
    threads: int | None = Field(None, ge=1, description="torch threads; default: all cores")


class DeploymentConfig(StrictModel):
    """The shape the model is deployed at; latency is measured here. The input side is the
    candidate's resolution."""

    batch_size: int = Field(1, ge=1, le=4096)
    channels: int = Field(3, ge=1, le=64)
    num_classes: int = Field(1000, ge=1)

    def target(self) -> Deployment:
        """The same shape as the plain value that `latency_predictors` takes."""
        return Deployment(self.batch_size, self.channels, self.num_classes)


class LatencyConfig(StrictModel):
    """Target device and where its latency numbers come from."""

    device: str = Field(
        "cpu-ort-fp32",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="a built-in device (see `nas devices`) or the device of a latency table",
    )
    mode: Literal["measured", "predicted", "hybrid"] = Field(
        "measured",
        description="measured: time every candidate; predicted: use a predictor only; hybrid: "
        "predict, measure when the predictor is unsure, re-measure the final front",
    )
    predictor: Literal["lut", "gbm", "fewshot"] = Field(
        "lut",
        description="lut: latency table sum + correction; gbm: learned (fit it first with "
        "`nas latency evaluate`); fewshot: a new device from a few measured candidates (fit it "
        "first with `nas latency adapt`)",
    )
    table: Path | None = Field(
        None,
        description="latency table (.csv with .json side file); default: the device's table "
        "in latency_predictors/tables/",
    )
    hybrid_max_uncertainty: float = Field(
        0.05, gt=0, le=10, description="hybrid: measure when predicted std / latency exceeds this"
    )
    threads: int = Field(1, ge=1, le=256)
    warmup: int = Field(10, ge=0)
    repeats: int = Field(50, ge=3, description="timed calls per model, spread over the rounds")
    rounds: int = Field(
        5, ge=1, le=100, description="chunks a model's calls are split into, interleaved"
    )
    estimator: Literal["auto", "median", "p10", "min", "mean", "cpu"] = Field(
        "auto",
        description="the per-round statistic; cpu: the calling thread's CPU time; auto: cpu "
        "where the runtime computes on the calling thread, else median",
    )
    drift_correction: bool = Field(
        True,
        description="time a reference network before every round and scale each round to "
        "the host's quiet speed",
    )
    drift_threshold: float = Field(
        0.15, gt=0, le=10, description="a round whose host speed is off by more is timed again"
    )

    def protocol(self) -> ProtocolSettings:
        """The measurement protocol's settings, as the plain value backends take."""
        return ProtocolSettings(
            warmup=self.warmup,
            repeats=self.repeats,
            rounds=self.rounds,
            estimator=self.estimator,
            reference=self.drift_correction,
            drift_threshold=self.drift_threshold,
        )


class Constraints(StrictModel):
    """Hard limits; a candidate that breaks one is recorded as infeasible."""

    max_latency_ms: float | None = Field(None, gt=0)
    max_params: int | None = Field(None, gt=0)

    def active(self) -> bool:
        return self.max_latency_ms is not None or self.max_params is not None


class EarlyStoppingConfig(StrictModel):
    """Successive halving on Pareto rank of (accuracy so far, latency) between epochs."""

    enabled: bool = False
    min_epochs: int = Field(1, ge=1, description="first rung, in epochs")
    reduction_factor: int = Field(2, ge=2, le=100, description="keep the best 1/this at a rung")
    min_trials: int = Field(4, ge=2, description="trials at a rung before it stops any")


PRECISIONS = ("fp32", "fp16", "bf16", "int8")
Precision = Literal["fp32", "fp16", "bf16", "int8"]


class PruningConfig(StrictModel):
    """Structured channel pruning (Torch-Pruning), then fine-tuning; off when `ratios` is empty.

    The search dimension is the prune ratio, drawn from 0 (unpruned) and `ratios`.
    """

    ratios: tuple[float, ...] = Field(
        (), description="share of channels removed, each in (0, 1); 0 (unpruned) is always a choice"
    )
    per_stage: bool = Field(
        False, description="one ratio dimension per stage instead of one for the network"
    )
    global_ranking: bool = Field(
        False,
        description="rank channels across layers (Torch-Pruning global pruning) instead "
        "of removing the same share from each layer",
    )
    importance: Literal["l1", "l2"] = Field("l2", description="channel magnitude norm")
    finetune_epochs: int = Field(1, ge=0, le=1000, description="proxy epochs after pruning")
    iterative_steps: int = Field(
        1,
        ge=1,
        le=100,
        description="1: prune at once; k: prune in k steps, fine-tuning "
        "finetune_epochs / k epochs after each (gradual pruning)",
    )
    round_to: int = Field(8, ge=1, le=256, description="keep channel counts multiples of this")
    finetune_lr_scale: float = Field(
        1.0,
        gt=0,
        le=1,
        description="fine-tuning learning rate as a share of training.lr (proxy training is "
        "short, so pruned networks recover best with the full schedule again)",
    )

    @field_validator("ratios")
    @classmethod
    def _ratios_in_range(cls, ratios: tuple[float, ...]) -> tuple[float, ...]:
        bad = [r for r in ratios if not 0.0 < r < 1.0]
        if bad:
            raise ValueError(
                f"{bad} outside (0, 1): a prune ratio is the share of channels removed, e.g. "
                "0.25; leave ratios empty to turn pruning off"
            )
        if len(set(ratios)) != len(ratios):
            raise ValueError("a ratio repeats")
        return ratios

    @model_validator(mode="after")
    def _steps_fit(self) -> PruningConfig:
        if self.finetune_epochs and self.iterative_steps > self.finetune_epochs:
            raise ValueError(
                f"iterative_steps {self.iterative_steps} needs at least as many "
                f"finetune_epochs (got {self.finetune_epochs})"
            )
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.ratios)


class QuantizationConfig(StrictModel):
    """Precisions of the exported artifact; int8 is post-training static quantization."""

    precisions: tuple[Precision, ...] = Field(
        ("fp32",),
        description="fp32, fp16, bf16, int8; the device's runtime "
        "must run each (see `nas devices`)",
    )
    calibration_batches: int = Field(8, ge=1, le=1000)
    calibration_batch_size: int = Field(32, ge=1, le=4096)
    calibration_method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="ONNX Runtime calibrator (OpenVINO int8 uses NNCF's own)"
    )
    per_channel: bool = Field(True, description="per-channel int8 weights")
    openvino_int8: Literal["qdq", "nncf"] = Field(
        "qdq",
        description="int8 artifact on OpenVINO devices: the ONNX Runtime QDQ model, or OpenVINO's "
        "own path (NNCF post-training quantization of the OpenVINO model, saved as IR)",
    )
    calibration_path: Path | None = Field(
        None,
        description=".npz with an array x of uint8 images (N, C, H, W) shaped like the "
        "proxy data; default: the proxy training images",
    )

    @field_validator("precisions")
    @classmethod
    def _unique(cls, precisions: tuple[str, ...]) -> tuple[str, ...]:
        if not precisions:
            raise ValueError(f"name at least one of {', '.join(PRECISIONS)}")
        if len(set(precisions)) != len(precisions):
            raise ValueError("a precision repeats")
        return precisions

    @property
    def enabled(self) -> bool:
        return self.precisions != ("fp32",)


class DistillationConfig(StrictModel):
    """Knowledge distillation in proxy training and fine-tuning; off when `teacher` is unset."""

    teacher: str | None = Field(
        None,
        description="a candidate string of the space, or timm:<model name>; trained once "
        "on the proxy data and cached in the run",
    )
    teacher_epochs: int = Field(4, ge=1, le=1000)
    temperature: float = Field(4.0, gt=0, le=100)
    weight: float = Field(0.5, gt=0, le=1, description="share of the distillation loss")

    @property
    def enabled(self) -> bool:
        return self.teacher is not None


class CompressionConfig(StrictModel):
    """Order follows practice: train, prune, fine-tune, quantize."""

    pruning: PruningConfig = Field(default_factory=PruningConfig)
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig)
    distillation: DistillationConfig = Field(default_factory=DistillationConfig)

    @property
    def enabled(self) -> bool:
        return self.pruning.enabled or self.quantization.enabled


class EHVIConfig(StrictModel):
    """The ehvi sampler: expected hypervolume improvement over a pool of candidates whose
    latency is known before training (see `nas.search.ehvi`)."""

    n_startup_trials: int = Field(10, ge=1, description="random trials before modelling")
    pool_size: int = Field(
        4096,
        ge=16,
        description="candidates scored per trial when the space is too large to score all of it",
    )
    refit_every: int = Field(5, ge=1, description="trials between surrogate kernel refits")
    budget_sweep: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of suggestions that chase the best accuracy under one latency "
        "budget (cycling over the front's latency range) instead of the whole front's "
        "hypervolume",
    )
    latency: Literal["auto", "known", "modelled"] = Field(
        "auto",
        description="known: pool latency from the device's table or predictor (or the "
        "benchmark table) before training; modelled: learned from the trials like accuracy, "
        "for when latency is not free; auto: known where a table, predictor or benchmark "
        "gives it, else modelled",
    )


def supernet_space_problem(space: EfficientNetSpaceConfig) -> str | None:
    """Why a supernet cannot serve `space` (a phrase), or None. Its weights are shared by every
    width, depth, kernel and expansion, but not by several activations: activations of
    different ranges (relu6 clips, silu and hard-swish pass negatives) would share them, and
    only the few random sub-networks of a step would train the mixes."""
    for field, acts in (
        ("space.choices.act", space.choices.act),
        ("space.stem_head_act", space.stem_head_act),
    ):
        if len(acts) > 1:
            return (
                f"needs one activation per supernet, {field} lists {len(acts)} "
                f"({', '.join(acts)}); list one (train one supernet per activation)"
            )
    return None


class SupernetConfig(StrictModel):
    """The weight-sharing supernet of an EfficientNet space (`nas supernet train`), trained
    with the sandwich rule and in-place distillation (see `nas.train.supernet`). The optimiser,
    schedule, weight decay and label smoothing are the `training` section's; batch size and
    learning rate may differ, since one supernet run must train a whole space: every step sums
    the gradients of several sub-networks, and more, smaller steps at a higher rate train its
    middle sub-networks far better than a candidate's proxy recipe does."""

    epochs: int = Field(5, ge=1, le=1000, description="passes over the proxy training images")
    batch_size: int | None = Field(
        None, ge=2, le=65536, description="images per step; unset: training.batch_size"
    )
    lr: float | None = Field(
        None, gt=0, le=10, description="peak learning rate; unset: training.lr"
    )
    random_subnets: int = Field(
        2, ge=0, le=16, description="random sub-networks per step besides the largest and smallest"
    )
    distillation: bool = Field(
        True, description="sub-networks learn the largest one's predictions (in-place KD)"
    )
    temperature: float = Field(1.0, gt=0, le=100, description="softening of those predictions")
    bn_recalibration_batches: int | None = Field(
        None,
        ge=0,
        description="training batches a sub-network's BatchNorm statistics are re-estimated on "
        "before it is scored; unset: training.bn_recalibration_batches",
    )
    path: Path | None = Field(
        None,
        description="evaluation: supernet: a supernet trained elsewhere (`nas supernet train`) "
        "for this space and data; unset: trained once into RUN/supernet/",
    )

    def training(self, base: TrainingConfig) -> TrainingConfig:
        """The recipe the supernet's optimiser runs: `base` with this section's batch size and
        learning rate where they are set."""
        update: dict[str, Any] = {}
        if self.batch_size is not None:
            update["batch_size"] = self.batch_size
        if self.lr is not None:
            update["lr"] = self.lr
        return base.model_copy(update=update)

    def scoring(self, base: TrainingConfig) -> TrainingConfig:
        """The recipe a sub-network is scored with (its BatchNorm re-estimation): `base` with
        this section's number of batches where it is set."""
        if self.bn_recalibration_batches is None:
            return base
        return base.model_copy(update={"bn_recalibration_batches": self.bn_recalibration_batches})


# The names of `nas.search.samplers`' registry, which builds each (a test holds the two equal).
SamplerName = Literal["nsga2", "tpe", "random", "gp", "ehvi"]


class SearchConfig(StrictModel):
    sampler: SamplerName = Field(
        "nsga2",
        description="nsga2, tpe (multivariate), random, gp (Optuna's GPSampler), ehvi (ours: "
        "latency-aware expected hypervolume improvement)",
    )
    n_trials: int = Field(12, ge=1)
    timeout: float | None = Field(None, gt=0, description="seconds; no new trial after this")
    population_size: int = Field(8, ge=2, description="nsga2: generation size")
    n_startup_trials: int = Field(6, ge=0, description="tpe: random trials before modelling")
    constraints: Constraints = Field(default_factory=Constraints)
    seed_candidates: tuple[str, ...] = Field(
        (),
        description="candidate strings evaluated first, e.g. a known baseline; with "
        "compression, ARCH|p0.25_int8 fixes the compression too",
    )
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    ehvi: EHVIConfig = Field(default_factory=EHVIConfig)


class BenchmarkConfig(StrictModel):
    """Tabular mode: candidates are scored by looking them up in a table of (candidate string,
    accuracy, latency) rows instead of training and measuring; NAS-Bench-201's table is
    ``../shared/bench/nb201/nb201.csv.gz``."""

    table: Path = Field(description="CSV (optionally .gz) with one row per candidate")
    candidate: str = Field("arch_str", min_length=1, description="column of candidate strings")
    accuracy: str = Field(
        "CIFAR10_test_acc", min_length=1, description="column of accuracies to maximise"
    )
    latency: str = Field(min_length=1, description="column of latencies in ms (the device)")
    accuracy_unit: Literal["percent", "fraction"] = Field(
        "percent", description="percent: 0-100 in the table, stored as a fraction"
    )


STORAGE_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+psycopg://")


class ClusterConfig(StrictModel):
    """Where the study lives when several processes share it, and what each trial may use.

    `storage` is the Optuna RDB URL every worker opens: unset, the run's own ``study.db``
    (SQLite, one machine); ``postgresql://USER@HOST:PORT/DB`` for workers on many machines.
    The rest sizes trials on a Ray cluster (`nas search --backend ray`) and sets the heartbeat
    by which workers notice a peer that died mid-trial.
    """

    storage: str | None = Field(
        None, description="Optuna storage URL shared by workers; unset: RUN/study.db"
    )
    trial_cpus: float = Field(1.0, gt=0, description="Ray: CPUs one trial reserves")
    trial_gpus: float = Field(0.0, ge=0, description="Ray: GPUs one trial reserves")
    trial_memory_gb: float | None = Field(None, gt=0, description="Ray: memory one trial reserves")
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="Ray: trials at once; unset: as many as resources allow"
    )
    max_retries: int = Field(
        3, ge=0, description="Ray: restarts of a trial whose worker or node died"
    )
    heartbeat_seconds: int = Field(5, ge=1, description="workers: heartbeat period of a trial")
    grace_seconds: int = Field(
        20, ge=2, description="workers: a trial silent this long is failed and retried"
    )

    @field_validator("storage")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(STORAGE_SCHEMES):
            raise ValueError(
                f"storage {url.split('://')[0]!r}:// is not supported; use sqlite:///PATH (one "
                "machine) or postgresql://USER@HOST:PORT/DB (many machines)"
            )
        return url

    @model_validator(mode="after")
    def _grace_after_heartbeats(self) -> ClusterConfig:
        if self.grace_seconds <= self.heartbeat_seconds:
            raise ValueError(
                f"grace_seconds ({self.grace_seconds}) must exceed heartbeat_seconds "
                f"({self.heartbeat_seconds})"
            )
        return self


SpaceConfig = Annotated[EfficientNetSpaceConfig | NB201SpaceConfig, Field(discriminator="name")]


class RunConfig(StrictModel):
    name: str = Field("run", pattern=RUN_NAME_PATTERN)
    seed: int = Field(0, ge=0)
    space: SpaceConfig = Field(default_factory=EfficientNetSpaceConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    compression: CompressionConfig = Field(default_factory=CompressionConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    supernet: SupernetConfig = Field(default_factory=SupernetConfig)
    evaluation: Literal["train", "supernet"] = Field(
        "train",
        description="train: every candidate is proxy-trained from scratch; supernet: scored in "
        "seconds with weights inherited from the run's supernet (EfficientNet space)",
    )
    benchmark: BenchmarkConfig | None = Field(
        None, description="tabular mode: score candidates from a table (no training, no timing)"
    )

    @model_validator(mode="before")
    @classmethod
    def _space_defaults_to_efficientnet(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("space"), dict):
            space = raw["space"]
            if "name" not in space:
                raw = {**raw, "space": {"name": "efficientnet", **space}}
        return raw

    @model_validator(mode="after")
    def _tabular_has_nothing_to_train(self) -> RunConfig:
        if self.benchmark is None:
            return self
        if self.compression.enabled:
            raise ValueError(
                "benchmark: a table scores uncompressed candidates; remove the compression "
                "section or the benchmark section"
            )
        if self.search.early_stopping.enabled:
            raise ValueError(
                "benchmark: a table has final accuracies only, nothing to stop early; set "
                "search.early_stopping.enabled: false"
            )
        return self

    @model_validator(mode="after")
    def _supernet_evaluation_fits(self) -> RunConfig:
        if self.evaluation != "supernet":
            return self
        if self.space.name != "efficientnet":
            raise ValueError(
                f"evaluation: supernet needs space.name: efficientnet (the {self.space.name} "
                "space has no supernet); use evaluation: train"
            )
        if self.benchmark is not None:
            raise ValueError(
                "evaluation: supernet and a benchmark table are two ways to score; remove one"
            )
        if self.search.early_stopping.enabled:
            raise ValueError(
                "evaluation: supernet trains no candidate, nothing to stop early; set "
                "search.early_stopping.enabled: false"
            )
        assert isinstance(self.space, EfficientNetSpaceConfig)
        problem = supernet_space_problem(self.space)
        if problem:
            raise ValueError(f"evaluation: supernet {problem}")
        return self

    @model_validator(mode="after")
    def _compression_is_measured(self) -> RunConfig:
        if self.compression.enabled and self.latency.mode != "measured":
            raise ValueError(
                "compression: pruned or quantized candidates are scored on their measured "
                "artifact; set latency.mode: measured (latency tables describe unpruned "
                "networks of one precision)"
            )
        return self

    def with_overrides(
        self,
        *,
        name: str | None = None,
        n_trials: int | None = None,
        timeout: float | None = None,
        storage: str | None = None,
    ) -> RunConfig:
        """A copy with command-line overrides applied and validated like file values."""
        raw = self.model_dump(mode="json")
        if storage is not None:
            raw["cluster"]["storage"] = storage
        if name is not None:
            raw["name"] = name
        if n_trials is not None:
            raw["search"]["n_trials"] = n_trials
        if timeout is not None:
            raw["search"]["timeout"] = timeout
        return parse_config(raw, source="command line")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _walk(loc: tuple[Any, ...], root: type[BaseModel]) -> tuple[list[str], Any]:
    """Readable path of a pydantic error location, and the model found at its end.

    Discriminated unions put the tag into the location (``scaling.compound.phi``,
    ``space.efficientnet.choices``); the tag is dropped so the path reads like the YAML the
    user wrote.
    """
    path: list[str] = []
    node: Any = root
    for part in loc:
        if isinstance(node, tuple):  # a union of models: this part is the tag
            node = next((m for m in node if _tag(m) == part), None)
            continue
        path.append(str(part))
        fields = getattr(node, "model_fields", None)
        if not isinstance(part, str) or fields is None or part not in fields:
            node = None
            continue
        annotation = fields[part].annotation
        members = tuple(a for a in get_args(annotation) if _is_model(a))
        node = members if len(members) > 1 else annotation if _is_model(annotation) else None
    return path, node


def _tag(model: type[BaseModel]) -> Any:
    """A union member's tag: the default of its discriminator field (`mode` or `name`)."""
    for key in ("mode", "name"):
        if key in model.model_fields:
            return model.model_fields[key].default
    return None


def _is_model(x: Any) -> bool:
    return isinstance(x, type) and issubclass(x, BaseModel)


def _describe(error: Any, root: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    msg = error["msg"].removeprefix("Value error, ")
    if not loc:
        return msg
    path, _ = _walk(loc, root)
    where = ".".join(path)
    if error["type"] == "extra_forbidden":
        _, parent = _walk(loc[:-1], root)
        allowed = list(parent.model_fields) if _is_model(parent) else []
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"{where}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{where}: required"
    return f"{where} = {error['input']!r}: {msg}"


def parse_config(raw: Any, *, source: str) -> RunConfig:
    """Validate a mapping into a `RunConfig`, or raise `ConfigError` naming every bad field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config is a mapping of sections, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(
            f"{source}: invalid config: {validation_problems(e, RunConfig)}"
        ) from None


def validation_problems(error: ValidationError, root: type[BaseModel]) -> str:
    """Every problem of a failed validation of `root`, as ``field.path = value: what is allowed``,
    joined by "; " (one line, the form every config error of the project takes)."""
    return "; ".join(_describe(err, root) for err in error.errors())


def read_yaml(path: str | Path, *, what: str, hint: str = "") -> Any:
    """The parsed YAML (or JSON) file at `path`; `ConfigError` naming the file and the line if it
    is missing, unreadable or not YAML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} not found{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    return _safe_load(text, source=str(path))


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config."""
    raw = read_yaml(path, what="config", hint="; the examples are in configs/")
    return parse_config(raw, source=str(path))


def config_from_text(text: str, *, source: str) -> RunConfig:
    """Validate a run config given as YAML (or JSON, which YAML reads too)."""
    return parse_config(_safe_load(text, source=source), source=source)


def _safe_load(text: str, *, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}:{where} not valid YAML: {getattr(e, 'problem', e)}") from None
