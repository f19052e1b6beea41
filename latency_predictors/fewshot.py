"""Few-shot latency prediction on a new device from other devices' measurements.

Latencies of one architecture on different hardware are strongly related (a network that is slow
on one GPU is slow on another; CPUs and phones form their own families). So a new device's
latency is modelled as a ridge regression of its log latency on the standardized log latencies
of the same architectures on the reference devices (plus log FLOPs), fitted on the K
architectures measured on the new device. Ridge's penalty is chosen by leave-one-out
cross-validation on those K (scikit-learn's `RidgeCV`), which is what keeps 20 inputs and 10
samples from overfitting. This is the HELP setting (Lee et al., NeurIPS 2021) without
meta-learning: the reference devices' tables are the prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hwnas_base.errors import PredictorError


class FewShotPredictor:
    """Predict a new device's latency from K measurements and reference devices' tables.

    Args:
        reference: Latency in ms, one row per architecture (the index holds the candidates'
            strings) and one column per reference device. Every architecture to predict must
            have a row.
        flops: Optional FLOPs per row of `reference`, used as one more input.
    """

    kind = "fewshot"

    def __init__(self, reference: pd.DataFrame, flops: Sequence[float] | None = None) -> None:
        if reference.empty or reference.shape[1] < 1:
            raise PredictorError("few-shot prediction needs at least one reference device")
        values = reference.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise PredictorError("reference latencies must be positive finite milliseconds")
        inputs = np.log(values)
        if flops is not None:
            f = np.asarray(flops, dtype=np.float64)
            if f.shape != (len(reference),) or np.any(f <= 0):
                raise PredictorError("flops must hold one positive value per reference row")
            inputs = np.column_stack([inputs, np.log(f)])
        std = inputs.std(axis=0)
        std[std == 0] = 1.0
        self._inputs = (inputs - inputs.mean(axis=0)) / std
        self._row = {str(k): i for i, k in enumerate(reference.index)}
        self.devices = list(reference.columns)
        self.model_: Any = None

    def _rows(self, candidates: Sequence[Any]) -> np.ndarray:
        try:
            return np.array([self._row[str(c)] for c in candidates], dtype=np.int64)
        except KeyError as e:
            raise PredictorError(f"architecture {e.args[0]} has no reference latencies") from None

    def fit(self, candidates: Sequence[Any], latency_ms: Sequence[float]) -> FewShotPredictor:
        from sklearn.linear_model import RidgeCV

        y = np.asarray(latency_ms, dtype=np.float64)
        if len(y) != len(candidates) or len(y) < 3:
            raise PredictorError(f"need at least 3 measured architectures, got {len(y)}")
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise PredictorError("latencies must be positive finite milliseconds")
        x = self._inputs[self._rows(candidates)]
        self.model_ = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(x, np.log(y))
        return self

    def predict(self, candidates: Sequence[Any]) -> np.ndarray:
        if self.model_ is None:
            raise PredictorError("the few-shot predictor is not fitted; call fit first")
        return np.asarray(np.exp(self.model_.predict(self._inputs[self._rows(candidates)])))
