"""The names of what a run records, stated once: the objectives and their directions, the
attributes the search sets on a trial beside its outcome, and the columns of ``trials.csv``
and ``pareto.csv``.

Nothing here imports a heavy library, so the CLI and the service can read it freely.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The objectives, in study order, and whether each is maximised.
ACCURACY = "accuracy"
LATENCY = "latency_p50_ms"
OBJECTIVES = (ACCURACY, LATENCY)
MAXIMIZE = (True, False)

# What a trial is: the candidate's string and, in a compression search, its compression.
CANDIDATE = "candidate"
COMPRESSION = "compression"

# Attributes the search loop sets; everything else on a completed trial is its outcome.
INTERRUPTED = "interrupted"  # its process died or was stopped; it does not count
SURPLUS = "surplus"  # asked by a worker after others had taken the target's last places
RETRY_OF = "retry_of"  # the interrupted trial this one runs again
DUPLICATE_OF = "duplicate_of"  # the earlier trial whose results this one reuses
FAILURE_REASON = "failure_reason"
LOOP_ATTRS = frozenset({INTERRUPTED, SURPLUS, RETRY_OF, DUPLICATE_OF, FAILURE_REASON})
STOP_REASON = "stop_reason"  # why early stopping ended its training

# What a compressed trial records beside its objectives (trials.csv, model cards).
COMPRESSION_COLUMNS = (
    "accuracy_trained",
    "accuracy_pruned",
    "accuracy_finetuned",
    "latency_parent_ms",
    "speedup_vs_parent",
    "slower_than_parent",
)

# The columns of trials.csv (pareto.csv holds the front's rows of the same columns).
TRIAL_COLUMNS = [
    "number",
    "state",
    "feasible",
    "on_front",
    CANDIDATE,
    "prune_ratio",
    "precision",
    ACCURACY,
    "accuracy_source",
    LATENCY,
    "latency_p90_ms",
    "latency_std_ms",
    "latency_spread",
    "latency_drift",
    "latency_source",
    "latency_predicted_ms",
    "latency_measured_ms",
    "params",
    "flops",
    *COMPRESSION_COLUMNS,
    "params_parent",
    "duration_s",
    "device",
    DUPLICATE_OF,
    STOP_REASON,
    FAILURE_REASON,
]


def trial_key(attrs: Mapping[str, Any]) -> str:
    """Architecture and compression: what makes two trials the same evaluation."""
    text, compression = str(attrs.get(CANDIDATE, "")), attrs.get(COMPRESSION)
    return f"{text}|{compression}" if compression else text
