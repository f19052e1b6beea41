"""The one place where errors become HTTP statuses: every error is one message, `{"detail":
"..."}`, naming what is wrong and what is allowed, the same line the CLI would print."""

from __future__ import annotations

from nas.errors import (
    CompressionError,
    ConfigError,
    DatasetError,
    ExportError,
    LatencyError,
    NASError,
    PredictorError,
    RunError,
    SearchError,
    TableError,
    UnknownSpaceError,
    UnknownTrialError,
)
from nas.service.reader import UnknownRun


class Problem(Exception):
    """An HTTP error of the service's own (not a library error): a status and one message."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class NotAuthenticated(Exception):
    """The request carries no valid token."""


# Most specific first: the first class an error is an instance of decides.
STATUS: tuple[tuple[type[NASError], int], ...] = (
    (UnknownTrialError, 404),
    (UnknownRun, 404),
    (UnknownSpaceError, 404),
    (RunError, 409),
    (SearchError, 409),
    (ConfigError, 422),
    (DatasetError, 422),
    (TableError, 422),
    (PredictorError, 422),
    (LatencyError, 422),
    (CompressionError, 422),
    (ExportError, 422),
)


def status_of(error: NASError) -> int:
    for kind, status in STATUS:
        if isinstance(error, kind):
            return status
    return 400
