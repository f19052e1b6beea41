"""Devices, latency measurement backends and latency caches."""

from latency_predictors.backends import BACKENDS, LatencyBackend, LatencyResult, make_backend
from latency_predictors.cache import LatencyCache
from latency_predictors.device import Device

__all__ = ["BACKENDS", "Device", "LatencyBackend", "LatencyCache", "LatencyResult", "make_backend"]
