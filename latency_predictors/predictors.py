"""Latency predictors with scikit-learn's ``fit``/``predict`` shape, on candidates.

- `LookupTablePredictor` (``lut``): the sum of table entries along the built network, corrected
  by a linear fit on a few whole-model measurements for what the sum misses (per-call overheads,
  cache effects between operators), as nn-Meter corrects its kernel sums.
- `GradientBoostingPredictor` (``gbm``): gradient-boosted trees on the space's candidate
  features, trained on whole-model measurements; quantile models give an uncertainty.
- `FlopsPredictor` (``flops``): latency proportional to FLOPs, the baseline every predictor is
  compared with.

Every ``predict(candidates, return_std=True)`` also returns a standard deviation in ms.

A fitted predictor is saved as data that cannot run code (`save_predictor`): a JSON file
(``format: hwnas-latency-predictor``, ``version``, ``kind``, the ``device`` identity it was
fitted for, and its fitted numbers: the lookup table's path and correction, or the FLOPs
factor), and for ``gbm`` the three scikit-learn models beside it in a skops file (``.skops``,
a zip of JSON and arrays that skops loads without pickle, trusting only the types it lists).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy.stats import kendalltau, spearmanr

from hwnas_base.errors import PredictorError, TableError
from hwnas_base.io import write_atomic
from latency_predictors.deployment import Deployment
from latency_predictors.device import Device
from latency_predictors.table import LatencyTable, describe, load_table
from search_spaces.flops import count_flops

PREDICTOR_KINDS = ("lut", "gbm", "flops")
# Kinds a predictor file may hold: the above, and few-shot ones made by `nas latency adapt`.
SAVED_KINDS = (*PREDICTOR_KINDS, "fewshot")
PREDICTOR_FORMAT = "hwnas-latency-predictor"
PREDICTOR_VERSION = 1
PREDICTOR_SUFFIX = ".json"
MODELS_SUFFIX = ".skops"
# The only type a gbm models file may hold beyond what skops trusts by itself.
TRUSTED_MODEL_TYPES = ("sklearn.tree._tree.Tree",)


class LatencyPredictor(Protocol):
    kind: str

    def fit(
        self, candidates: Sequence[Any], latency_ms: Sequence[float] | np.ndarray
    ) -> LatencyPredictor: ...

    def predict(
        self, candidates: Sequence[Any], return_std: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]: ...


def _check_fit_args(
    candidates: Sequence[Any], latency_ms: Sequence[float] | np.ndarray, least: int
) -> np.ndarray:
    y = np.asarray(latency_ms, dtype=np.float64)
    if len(candidates) != len(y):
        raise PredictorError(f"{len(candidates)} candidates but {len(y)} latencies")
    if len(y) < least:
        raise PredictorError(f"fitting needs at least {least} measured candidates, got {len(y)}")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise PredictorError("latencies must be positive finite milliseconds")
    return y


class LookupTablePredictor:
    """Per-operator table sum with a fitted linear correction.

    The correction is ``latency = a * sum_ms + b * n_operators + c``, fitted by least squares
    with non-negative ``a`` and ``b``. Before fitting it is the plain sum.
    """

    kind = "lut"

    def __init__(self, table: LatencyTable, space: Any, deployment: Deployment) -> None:
        self.table = table
        self.space = space
        self.deployment = deployment
        self.device_: Device | None = table.device
        self.coef_ = np.array([1.0, 0.0])
        self.intercept_ = 0.0
        self.residual_rel_std_ = 0.1
        self.n_fit_ = 0
        # Set by `latency_predictors.sources.table_predictor`: why the table's milliseconds may
        # not be this host's, or the calibration file that makes them so.
        self.host_note: str | None = None
        self.calibrated_here: Path | None = None

    def check_space(self, candidates: Sequence[Any]) -> None:
        """`TableError` if the table lacks an operator that any of `candidates` needs."""
        needed = set()
        for cand in candidates:
            needed.update(self._keys(cand))
        missing = self.table.missing(needed)
        if missing:
            raise TableError(
                f"latency table {self.table.path}: lacks {len(missing)} operator(s) this search "
                f"space needs, e.g. {describe(missing[0])}; profile it again for this space"
            )

    def _keys(self, candidate: Any) -> list[Any]:
        args = (candidate, self.deployment.num_classes, self.deployment.channels)
        if hasattr(self.space, "operator_keys"):  # without building the network
            return list(self.space.operator_keys(*args))
        ops = self.space.operators(*args)
        return [op.key for op in ops]

    def table_sums(self, candidates: Sequence[Any]) -> np.ndarray:
        """Columns: summed p50 (ms), operator count, root of summed variances (ms)."""
        rows = []
        for cand in candidates:
            p50, std = self.table.lookup(self._keys(cand))
            rows.append((p50.sum(), len(p50), float(np.sqrt(np.square(std).sum()))))
        return np.asarray(rows, dtype=np.float64)

    def fit(
        self, candidates: Sequence[Any], latency_ms: Sequence[float] | np.ndarray
    ) -> LookupTablePredictor:
        from scipy.optimize import nnls

        y = _check_fit_args(candidates, latency_ms, 3)
        sums = self.table_sums(candidates)
        design = np.column_stack([sums[:, 0], sums[:, 1], np.ones(len(y))])
        # Weighted by 1/y so that the fit minimises relative error; the intercept may be
        # negative, so it is split into a non-negative pair.
        w = 1.0 / y
        a = np.column_stack([design, -np.ones(len(y))]) * w[:, None]
        sol, _ = nnls(a, y * w)
        self.coef_ = sol[:2]
        self.intercept_ = float(sol[2] - sol[3])
        pred = design[:, :2] @ self.coef_ + self.intercept_
        rel = (pred - y) / y
        self.residual_rel_std_ = float(
            np.sqrt(np.mean(rel**2)) * np.sqrt(len(y) / max(1, len(y) - 3))
        )
        self.n_fit_ = len(y)
        return self

    def fit_calibration(self) -> LookupTablePredictor:
        """Fit the correction on the whole-model measurements stored with the table."""
        cal = self.table.calibration
        if len(cal) < 3:
            raise PredictorError(
                f"latency table {self.table.path} holds {len(cal)} whole-model measurements; "
                "the lookup-table correction needs at least 3 (profile with --calibration 20)"
            )
        cands = [self.space.decode(c.candidate) for c in cal]
        return self.fit(cands, [c.p50_ms for c in cal])

    def predict(
        self, candidates: Sequence[Any], return_std: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        sums = self.table_sums(candidates)
        pred = sums[:, :2] @ self.coef_ + self.intercept_
        pred = np.maximum(pred, 1e-6)
        if not return_std:
            return pred
        std = np.sqrt((self.coef_[0] * sums[:, 2]) ** 2 + (self.residual_rel_std_ * pred) ** 2)
        return pred, std


class GradientBoostingPredictor:
    """Gradient-boosted trees on log latency, from the space's candidate features.

    Three models are fitted: squared error for the prediction and the 16th/84th percentiles,
    whose half-distance is the reported standard deviation.
    """

    kind = "gbm"

    def __init__(self, space: Any, *, n_estimators: int = 400, seed: int = 0) -> None:
        self.space = space
        self.n_estimators = n_estimators
        self.seed = seed
        self.device_: Device | None = None
        self.models_: dict[str, Any] = {}

    def _features(self, candidates: Sequence[Any]) -> np.ndarray:
        return np.stack([self.space.features(c) for c in candidates])

    def fit(
        self, candidates: Sequence[Any], latency_ms: Sequence[float] | np.ndarray
    ) -> GradientBoostingPredictor:
        from sklearn.ensemble import GradientBoostingRegressor

        y = np.log(_check_fit_args(candidates, latency_ms, 10))
        x = self._features(candidates)
        common = {
            "n_estimators": self.n_estimators,
            "max_depth": 3,
            "learning_rate": 0.05,
            "subsample": 0.8,
            "random_state": self.seed,
        }
        self.models_ = {
            "mean": GradientBoostingRegressor(loss="squared_error", **common).fit(x, y),
            "low": GradientBoostingRegressor(loss="quantile", alpha=0.16, **common).fit(x, y),
            "high": GradientBoostingRegressor(loss="quantile", alpha=0.84, **common).fit(x, y),
        }
        return self

    def predict(
        self, candidates: Sequence[Any], return_std: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        if not self.models_:
            raise PredictorError("the gbm predictor is not fitted; call fit first")
        x = self._features(candidates)
        pred = np.exp(self.models_["mean"].predict(x))
        if not return_std:
            return pred
        low = np.exp(self.models_["low"].predict(x))
        high = np.exp(self.models_["high"].predict(x))
        return pred, np.abs(high - low) / 2


class FlopsPredictor:
    """Latency = k * FLOPs, with k fitted by least squares on relative error."""

    kind = "flops"

    def __init__(self, space: Any, deployment: Deployment) -> None:
        self.space = space
        self.deployment = deployment
        self.device_: Device | None = None
        self.k_ = float("nan")
        self.residual_rel_std_ = float("nan")

    def flops(self, candidates: Sequence[Any]) -> np.ndarray:
        d = self.deployment
        out = []
        for cand in candidates:
            model = self.space.build(cand, d.num_classes, d.channels)
            out.append(count_flops(model, d.shape(self.space.resolution(cand))))
        return np.asarray(out, dtype=np.float64)

    def fit(
        self, candidates: Sequence[Any], latency_ms: Sequence[float] | np.ndarray
    ) -> FlopsPredictor:
        y = _check_fit_args(candidates, latency_ms, 1)
        u = self.flops(candidates) / y
        # Minimises the sum of squared relative errors: sum((k * u - 1) ** 2).
        self.k_ = float(np.sum(u) / np.sum(u**2))
        self.residual_rel_std_ = float(np.sqrt(np.mean((self.k_ * u - 1) ** 2)))
        return self

    def predict(
        self, candidates: Sequence[Any], return_std: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        if not np.isfinite(self.k_):
            raise PredictorError("the flops predictor is not fitted; call fit first")
        pred = self.k_ * self.flops(candidates)
        return (pred, self.residual_rel_std_ * pred) if return_std else pred


def accuracy_report(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """RMSE, MAPE, share within +-5/10/15 %, Spearman and Kendall of predictions."""
    predicted = np.asarray(predicted, dtype=np.float64)
    measured = np.asarray(measured, dtype=np.float64)
    rel = np.abs(predicted - measured) / measured
    return {
        "n": len(measured),
        "rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))),
        "mape": float(np.mean(rel)),
        "within_5": float(np.mean(rel <= 0.05)),
        "within_10": float(np.mean(rel <= 0.10)),
        "within_15": float(np.mean(rel <= 0.15)),
        "spearman": float(spearmanr(predicted, measured).statistic),
        "kendall": float(kendalltau(predicted, measured).statistic),
    }


def _fitted(predictor: Any) -> dict[str, Any]:
    """The fitted numbers of a lut or flops predictor, as JSON values."""
    if isinstance(predictor, LookupTablePredictor):
        return {
            "table": str(Path(predictor.table.path).resolve()),
            "coef": [float(c) for c in predictor.coef_],
            "intercept": predictor.intercept_,
            "residual_rel_std": predictor.residual_rel_std_,
            "n_fit": predictor.n_fit_,
        }
    if isinstance(predictor, FlopsPredictor):
        return {"k": predictor.k_, "residual_rel_std": predictor.residual_rel_std_}
    if predictor.kind == "fewshot":
        fitted: dict[str, Any] = predictor.fitted()
        return fitted
    return {"n_estimators": predictor.n_estimators, "seed": predictor.seed}


def save_predictor(predictor: Any, path: Path) -> Path:
    """Write a fitted predictor to `path` (JSON) and, for gbm, its models beside it (skops)."""
    import skops.io

    device = getattr(predictor, "device_", None)
    record = {
        "format": PREDICTOR_FORMAT,
        "version": PREDICTOR_VERSION,
        "kind": predictor.kind,
        "device": device.to_dict() if device is not None else None,
        "space": getattr(predictor.space, "name", None),
        "fitted": _fitted(predictor),
    }
    if isinstance(predictor, GradientBoostingPredictor):
        if not predictor.models_:
            raise PredictorError("the gbm predictor is not fitted; call fit first")
        models = path.with_suffix(MODELS_SUFFIX)
        data = skops.io.dumps(predictor.models_, compression=zipfile.ZIP_DEFLATED)
        write_atomic(models, data)
        record["fitted"]["models_file"] = models.name
    write_atomic(path, json.dumps(record, indent=1) + "\n")
    return path


def read_record(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PredictorError(f"no fitted predictor at {path}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PredictorError(f"{path}: not a predictor file (JSON: {e})") from None
    if not isinstance(record, dict) or record.get("format") != PREDICTOR_FORMAT:
        raise PredictorError(f"{path}: not a predictor file (format is not {PREDICTOR_FORMAT!r})")
    if record.get("version") != PREDICTOR_VERSION or record.get("kind") not in SAVED_KINDS:
        raise PredictorError(
            f"{path}: predictor version {record.get('version')!r} kind {record.get('kind')!r}; "
            f"this project reads version {PREDICTOR_VERSION}, kinds {', '.join(SAVED_KINDS)}"
        )
    return record


def _load_models(path: Path) -> dict[str, Any]:
    """A gbm models file, refused when it holds a type outside the trusted list."""
    import skops.io

    if not path.is_file():
        raise PredictorError(f"the gbm models file {path} is missing; fit the predictor again")
    try:
        data = path.read_bytes()
        untrusted = skops.io.get_untrusted_types(data=data)
        strange = sorted(set(untrusted) - set(TRUSTED_MODEL_TYPES))
        if strange:
            raise PredictorError(f"{path}: holds types this project does not load: {strange}")
        models: dict[str, Any] = skops.io.loads(data, trusted=list(untrusted))
    except PredictorError:
        raise
    except Exception as e:  # skops and zipfile raise many types on a damaged file
        raise PredictorError(f"{path}: cannot read the gbm models ({type(e).__name__})") from None
    if not isinstance(models, dict) or set(models) != {"mean", "low", "high"}:
        raise PredictorError(f"{path}: expected the models mean, low and high")
    return models


def load_predictor(path: Path, space: Any, deployment: Deployment) -> Any:
    """A predictor saved by `save_predictor`, for `space` at `deployment`; never unpickles.

    Raises:
        PredictorError: the file is missing, not a predictor file, or damaged.
    """
    record = read_record(path)
    fitted = record.get("fitted") or {}
    predictor: Any
    try:
        if record["kind"] == "lut":
            predictor = LookupTablePredictor(load_table(fitted["table"]), space, deployment)
            predictor.coef_ = np.asarray(fitted["coef"], dtype=np.float64)
            predictor.intercept_ = float(fitted["intercept"])
            predictor.residual_rel_std_ = float(fitted["residual_rel_std"])
            predictor.n_fit_ = int(fitted["n_fit"])
        elif record["kind"] == "fewshot":
            raise PredictorError(
                f"{path}: a few-shot predictor; load it with latency_predictors.adapt.load_adapted"
            )
        elif record["kind"] == "flops":
            predictor = FlopsPredictor(space, deployment)
            predictor.k_ = float(fitted["k"])
            predictor.residual_rel_std_ = float(fitted["residual_rel_std"])
        else:
            predictor = GradientBoostingPredictor(
                space, n_estimators=int(fitted["n_estimators"]), seed=int(fitted["seed"])
            )
            predictor.models_ = _load_models(path.with_name(str(fitted["models_file"])))
        device = record.get("device")
        predictor.device_ = Device.from_dict(device) if device else None
    except (KeyError, TypeError, ValueError) as e:
        raise PredictorError(
            f"{path}: malformed predictor file ({type(e).__name__}: {e})"
        ) from None
    return predictor
