"""Latency of candidates on devices: measurement backends, latency tables, predictors.

Standalone: it takes plain values (a device name, threads, a deployment shape, a search space)
and imports nothing from `nas`.
"""

from latency_predictors.backends import BACKENDS, LatencyBackend, LatencyResult, make_backend
from latency_predictors.cache import LatencyCache
from latency_predictors.deployment import Deployment
from latency_predictors.device import Device

__all__ = [
    "BACKENDS",
    "Deployment",
    "Device",
    "LatencyBackend",
    "LatencyCache",
    "LatencyResult",
    "make_backend",
]
