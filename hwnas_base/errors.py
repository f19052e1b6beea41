"""The root of the project's error hierarchy, and the errors the standalone packages raise.

Each subclass also inherits the matching builtin, so callers that catch `ValueError` or
`KeyError` keep working. The CLI turns any `NASError` into one line on stderr and exit code 2.
The errors that only `nas` raises are in `nas.errors`, which re-exports these.
"""

from __future__ import annotations


class NASError(Exception):
    """Base of every error the project raises on purpose."""


class UnknownSpaceError(NASError, KeyError):
    """No search space is registered under the requested name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown search space"


class LatencyError(NASError, RuntimeError):
    """A latency backend could not measure a model."""


class TableError(NASError, ValueError):
    """A latency table is missing, malformed, or does not fit the device or search space."""


class PredictorError(NASError, ValueError):
    """A latency predictor is missing, unfitted, or asked for something it cannot predict."""


class ExportError(NASError, RuntimeError):
    """An export failed or did not match the torch model; nothing was written."""


class CompressionError(NASError, RuntimeError):
    """Pruning, quantization or scoring of a compressed artifact failed."""
