"""One error hierarchy for the project, rooted in `NASError`.

Each subclass also inherits the matching builtin, so callers that catch `ValueError` or
`KeyError` keep working. The CLI turns any `NASError` into one line on stderr and exit code 2.
"""

from __future__ import annotations


class NASError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(NASError, ValueError):
    """A run config is missing, unreadable or invalid."""


class UnknownSpaceError(NASError, KeyError):
    """No search space is registered under the requested name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown search space"


class DatasetError(NASError, ValueError):
    """A dataset is missing, empty or malformed."""


class CandidateError(NASError, ValueError):
    """A candidate string cannot be read, or the candidate is outside the space."""


class TrainingDivergedError(NASError, FloatingPointError):
    """Proxy training produced a non-finite loss."""


class LatencyError(NASError, RuntimeError):
    """A latency backend could not measure a model."""


class RunError(NASError, ValueError):
    """A run directory is missing, or does not hold what a command needs."""


class UnknownTrialError(RunError, KeyError):
    """A trial number or candidate that the run does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown trial"


class SearchError(NASError, RuntimeError):
    """A search could not go on; the message says how to resume."""


class ExportError(NASError, RuntimeError):
    """An export failed or did not match the torch model; nothing was written."""


class TableError(NASError, ValueError):
    """A latency table is missing, malformed, or does not fit the device or search space."""


class PredictorError(NASError, ValueError):
    """A latency predictor is missing, unfitted, or asked for something it cannot predict."""


class CompressionError(NASError, RuntimeError):
    """Pruning, quantization or scoring of a compressed artifact failed."""
