"""One error hierarchy for the project, rooted in `NASError`.

The root and the errors that `search_spaces` and `latency_predictors` raise live in
`hwnas_base.errors` (those packages do not import `nas`); they are re-exported here beside the
errors only `nas` raises, so `from nas.errors import ...` finds every one. Each subclass also
inherits the matching builtin, so callers that catch `ValueError` or `KeyError` keep working.
The CLI turns any `NASError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

from hwnas_base.errors import (
    CompressionError,
    ExportError,
    LatencyError,
    NASError,
    PredictorError,
    TableError,
    UnknownSpaceError,
)

__all__ = [
    "CompressionError",
    "ConfigError",
    "DatasetError",
    "ExportError",
    "LatencyError",
    "NASError",
    "PredictorError",
    "RunError",
    "SearchError",
    "TableError",
    "TrainingDivergedError",
    "UnknownSpaceError",
    "UnknownTrialError",
]


class ConfigError(NASError, ValueError):
    """A run config is missing, unreadable or invalid."""


class DatasetError(NASError, ValueError):
    """A dataset is missing, empty or malformed."""


class TrainingDivergedError(NASError, FloatingPointError):
    """Proxy training produced a non-finite loss."""


class RunError(NASError, ValueError):
    """A run directory is missing, or does not hold what a command needs."""


class UnknownTrialError(RunError, KeyError):
    """A trial number or candidate that the run does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown trial"


class SearchError(NASError, RuntimeError):
    """A search could not go on; the message says how to resume."""
