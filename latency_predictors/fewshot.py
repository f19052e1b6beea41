"""Few-shot latency prediction on a new device from other devices' latencies.

Latencies of one architecture on different hardware are strongly related: a network that is slow
on one GPU is slow on another, and CPUs and phones form their own families. So a new device's
latency is modelled from the same architectures' latencies on reference devices (measured, or
predicted by other predictors), fitted on the K architectures measured on the new device. This is
the HELP setting (Lee et al., NeurIPS 2021) without meta-learning: the reference devices are the
prior.

`FewShotRegressor` holds the model and works on plain arrays; `FewShotPredictor` looks the
reference rows of candidates up in a table of reference devices (plus FLOPs as one more column).

The model, and why. Every figure is the mean Spearman's rho over 21 devices x 20 draws on
NAS-Bench-201 under HELP's protocol (`benchmarks/fewshot_nb201.py`: each device held out in turn,
K=10 measured architectures from indices 0-899, scored on the middle 80 % of 900-1899); every
variant saw the same draws, and differences under ~0.002 are within the draws' noise.

* Non-negative least squares with a free intercept: a new device's time is a positive
  combination of related devices' times (per-operator costs scale together) plus a fixed
  overhead, which may be negative. The sign constraint selects a few related devices from the
  K samples by itself and cannot fit a spurious negative weight, so no penalty is needed.
  The previous model, `RidgeCV` (leave-one-out penalty) on standardized log latencies and log
  FLOPs, reached 0.934 (phones' minimum 0.760, below FLOPs on 4 devices); plain non-negative
  least squares 0.940 in log ms and 0.942 in ms (phones' minimum 0.796, below FLOPs on 2); a
  leave-one-out ridge penalty on top of the sign constraint 0.942 / 0.944.
* Milliseconds or log milliseconds, chosen per fit by leave-one-out squared error in ms. Some
  relations are offsets (pixel3 runs like a GPU at batch 256 minus a fixed time; in log ms the
  fit fails on it: 0.76 vs 0.80 in ms), others are powers (exact in log-log; ms alone reaches
  rho 0.89-0.96 on such a synthetic relation). The choice matched the better fixed space on the
  benchmark (0.945) and recovers multiplicative relations too.
* An ensemble over random subsets of the reference columns (random subspace: 50 members of
  70 % of the columns), averaged: it lowers the variance of which of several correlated
  references the sign constraint picks (0.942 -> 0.945). Each member is linear, so the ensemble
  is one linear model, `coef_`.

Tried and not kept: rank- or Gaussian-quantile-normalised inputs over the reference pool (0.913,
0.923; the devices' relations are closer to linear in ms or log ms than in ranks) or a ranked
target (0.899); weighting the reference devices by their correlation with the target on the K
samples (0.893-0.928) or picking the best-correlated one (0.907); averaging one-device fits by
their leave-one-out error (0.940-0.942); fixed or narrower ridge penalties (0.869-0.936); ridge
on 2-8 principal components of the reference devices (0.884-0.939); Huber, soft-L1 or Cauchy
losses against outlying samples (0.941-0.942); log and ms inputs side by side (0.944);
averaging the ms and log models (0.945); bagging the K samples (0.945 at 3-10x the cost).

What any predictor from reference devices can reach here: the best single reference device
chosen with hindsight averages 0.953 (pixel3 0.850, 1080ti_32 0.864), a linear model fitted on
900 measured architectures of the target 0.946 (log) to 0.957 (ranks), and gradient boosting on
the architecture encoding with 14,625 measured architectures of the target itself 0.965, which
bounds the targets' own measurement noise. The phones with whole-millisecond latencies are
scored against tied truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.optimize import nnls
from scipy.stats import spearmanr

from hwnas_base.errors import PredictorError

Space = Literal["auto", "linear", "log"]


def _as_latencies(x: Any, name: str, ndim: int) -> np.ndarray:
    """`x` as a float array of `ndim` dimensions of positive finite milliseconds, or raise."""
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise PredictorError(f"{name} must be numeric latencies in milliseconds") from None
    if a.ndim != ndim:
        raise PredictorError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if a.size == 0:
        raise PredictorError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise PredictorError(f"{name} holds NaN or infinite values")
    if np.any(a <= 0):
        raise PredictorError(f"{name} must be positive milliseconds, found {a.min():g}")
    return a


class FewShotRegressor:
    """Predict a target device's latency from reference latencies, fitted on a few samples.

    `X` holds positive reference latencies, one row per architecture and one column per
    reference device (any positive quantity that grows with latency, such as FLOPs, may be one
    more column); `y` the target device's latency in ms of the same rows. The model is a
    non-negative least-squares fit with intercept, in ms or in log ms (`space`), averaged over
    random subsets of the columns; see the module docstring for why.

    Args:
        space: ``"linear"`` (ms), ``"log"`` (log ms), or ``"auto"``: the one with the lower
            leave-one-out squared error in ms on the fitted samples.
        n_subsets: Members of the random-subspace ensemble.
        subset_fraction: Share of the columns each member sees (at least one column).
        random_state: Seed of the column subsets.

    Attributes (after `fit`):
        space_: The space used, ``"linear"`` or ``"log"``.
        coef_: One non-negative weight per column of `X` (on ms or log ms, per `space_`).
        intercept_: The intercept in the same space.
        loo_predictions_: Leave-one-out prediction in ms of each fitted sample.
        loo_mape_: Mean absolute percentage error of those, as a fraction.
        loo_spearman_: Spearman's rho between them and `y` (0 when undefined).
        n_features_in_: Number of columns of `X`.
    """

    def __init__(
        self,
        space: Space = "auto",
        n_subsets: int = 50,
        subset_fraction: float = 0.7,
        random_state: int = 0,
    ) -> None:
        if space not in ("auto", "linear", "log"):
            raise PredictorError(f"space must be 'auto', 'linear' or 'log', got {space!r}")
        if n_subsets < 1 or not 0.0 < subset_fraction <= 1.0:
            raise PredictorError("n_subsets must be >= 1 and subset_fraction in (0, 1]")
        self.space = space
        self.n_subsets = n_subsets
        self.subset_fraction = subset_fraction
        self.random_state = random_state
        self.space_: Literal["linear", "log"] | None = None
        self.coef_ = np.zeros(0)
        self.intercept_ = 0.0
        self.loo_predictions_ = np.zeros(0)
        self.loo_mape_ = math.nan
        self.loo_spearman_ = math.nan
        self.n_features_in_ = 0
        self._floor = 0.0

    def fit(self, X: Any, y: Any) -> FewShotRegressor:
        """Fit on `X` (n x d positive reference latencies) and `y` (n target latencies, ms)."""
        x = _as_latencies(X, "X", 2)
        t = _as_latencies(y, "y", 1)
        if x.shape[0] != t.shape[0]:
            raise PredictorError(f"X has {x.shape[0]} rows but y has {t.shape[0]} values")
        if t.shape[0] < 3:
            raise PredictorError(f"need at least 3 measured samples, got {t.shape[0]}")
        d = x.shape[1]
        size = max(1, math.ceil(self.subset_fraction * d))
        rng = np.random.default_rng(self.random_state)
        n_subsets = self.n_subsets if size < d else 1
        subsets = [np.sort(rng.choice(d, size, replace=False)) for _ in range(n_subsets)]
        spaces: list[Literal["linear", "log"]] = (
            ["linear", "log"] if self.space == "auto" else [self.space]
        )
        best: tuple[float, Literal["linear", "log"], np.ndarray] | None = None
        for space in spaces:
            loo = self._loo(x, t, subsets, space)
            err = float(np.mean((loo - t) ** 2))
            if best is None or err < best[0]:
                best = (err, space, loo)
        assert best is not None
        _, self.space_, self.loo_predictions_ = best
        self.intercept_, self.coef_ = self._fit_space(x, t, subsets, self.space_)
        self._floor = 0.5 * float(t.min())
        self.loo_mape_ = float(np.mean(np.abs(self.loo_predictions_ - t) / t))
        rho = spearmanr(self.loo_predictions_, t).statistic
        self.loo_spearman_ = float(rho) if np.isfinite(rho) else 0.0
        self.n_features_in_ = d
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Target latency in ms for each row of `X` (positive reference latencies)."""
        if self.space_ is None:
            raise PredictorError("the few-shot regressor is not fitted; call fit first")
        x = _as_latencies(X, "X", 2)
        if x.shape[1] != self.n_features_in_:
            raise PredictorError(
                f"X has {x.shape[1]} columns but the regressor was fitted on {self.n_features_in_}"
            )
        return self._predict(x, self.intercept_, self.coef_, self.space_, self._floor)

    def _loo(
        self, x: np.ndarray, t: np.ndarray, subsets: list[np.ndarray], space: str
    ) -> np.ndarray:
        """Leave-one-out predictions (ms) of the model in `space`."""
        out = np.empty(len(t))
        for i in range(len(t)):
            keep = np.arange(len(t)) != i
            b0, w = self._fit_space(x[keep], t[keep], subsets, space)
            out[i] = self._predict(x[i : i + 1], b0, w, space, 0.5 * float(t[keep].min()))[0]
        return out

    @staticmethod
    def _fit_space(
        x: np.ndarray, t: np.ndarray, subsets: list[np.ndarray], space: str
    ) -> tuple[float, np.ndarray]:
        """Intercept and weights of the subspace ensemble of non-negative least squares."""
        a = np.log(x) if space == "log" else x
        target = np.log(t) if space == "log" else t
        centre = a.mean(axis=0)
        scale = a.std(axis=0)
        scale[scale == 0] = 1.0  # a constant column gets weight 0 anyway
        z = (a - centre) / scale  # NNLS is scale-invariant; this only conditions it
        coef = np.zeros(a.shape[1])
        for cols in subsets:
            w, _ = nnls(z[:, cols], target - target.mean())
            coef[cols] += w / scale[cols]
        coef /= len(subsets)
        return float(target.mean() - centre @ coef), coef

    @staticmethod
    def _predict(
        x: np.ndarray, intercept: float, coef: np.ndarray, space: str, floor: float
    ) -> np.ndarray:
        """Predictions in ms; a linear-space value under `floor` is mapped monotonically above 0.

        ``floor * exp(p / floor - 1)`` meets the identity at `floor` with slope 1, so the order of
        the predictions is kept while every one is a positive latency.
        """
        if space == "log":
            return np.asarray(np.exp(intercept + np.log(x) @ coef))
        p = intercept + x @ coef
        low = p < floor
        p[low] = floor * np.exp(p[low] / floor - 1.0)
        return np.asarray(p)


class FewShotPredictor:
    """Predict a new device's latency from K measurements and reference devices' tables.

    A thin layer over `FewShotRegressor` that takes candidates instead of arrays.

    Args:
        reference: Latency in ms, one row per architecture (the index holds the candidates'
            strings) and one column per reference device. Every architecture to predict must
            have a row.
        flops: Optional FLOPs per row of `reference`, used as one more input column.
        regressor: The regressor to fit; a default `FewShotRegressor` when omitted.
    """

    kind = "fewshot"

    def __init__(
        self,
        reference: pd.DataFrame,
        flops: Sequence[float] | np.ndarray | None = None,
        regressor: FewShotRegressor | None = None,
    ) -> None:
        if reference.empty or reference.shape[1] < 1:
            raise PredictorError("few-shot prediction needs at least one reference device")
        values = reference.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise PredictorError("reference latencies must be positive finite milliseconds")
        if flops is not None:
            f = np.asarray(flops, dtype=np.float64)
            if f.shape != (len(reference),) or not np.all(np.isfinite(f)) or np.any(f <= 0):
                raise PredictorError("flops must hold one positive value per reference row")
            values = np.column_stack([values, f])
        self._inputs = values
        self._row = {str(k): i for i, k in enumerate(reference.index)}
        self.devices = list(reference.columns)
        self.model_: FewShotRegressor | None = None
        self._regressor = regressor

    def features(self, candidates: Sequence[Any]) -> np.ndarray:
        """The regressor's input rows of `candidates`: reference latencies, then FLOPs."""
        return np.asarray(self._inputs[self._rows(candidates)])

    def _rows(self, candidates: Sequence[Any]) -> np.ndarray:
        try:
            return np.array([self._row[str(c)] for c in candidates], dtype=np.int64)
        except KeyError as e:
            raise PredictorError(f"architecture {e.args[0]} has no reference latencies") from None

    def fit(
        self, candidates: Sequence[Any], latency_ms: Sequence[float] | np.ndarray
    ) -> FewShotPredictor:
        """Fit on the candidates measured on the new device and their latencies (ms)."""
        y = np.asarray(latency_ms, dtype=np.float64)
        if len(y) != len(candidates) or len(y) < 3:
            raise PredictorError(f"need at least 3 measured architectures, got {len(y)}")
        model = self._regressor if self._regressor is not None else FewShotRegressor()
        self.model_ = model.fit(self._inputs[self._rows(candidates)], y)
        return self

    def predict(self, candidates: Sequence[Any]) -> np.ndarray:
        """Predicted latency (ms) of each candidate on the new device."""
        if self.model_ is None:
            raise PredictorError("the few-shot predictor is not fitted; call fit first")
        return self.model_.predict(self._inputs[self._rows(candidates)])
