"""Schemathesis against the live service's OpenAPI schema, a bounded number of generated
requests per operation: never a 5xx, never a status, content type or body the schema does not
declare.

The service is fed a finished run to read; the jobs that generated submissions may start are
killed when the test ends. The event stream is left out: it stays open while a search runs
(and a generated submission may start one), so it is tested on its own (test_api.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.nas.service.conftest import Served, start_service

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _kill_jobs(runs: Path) -> None:
    jobs = runs / ".service" / "jobs.db"
    if not jobs.is_file():
        return
    with contextlib.closing(sqlite3.connect(jobs)) as db:
        pids = [pid for (pid,) in db.execute("SELECT pid FROM jobs WHERE pid IS NOT NULL")]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, finished_run: Path) -> Iterator[Served]:
    runs = tmp_path_factory.mktemp("fuzz") / "runs"
    shutil.copytree(finished_run, runs / "small")
    service = start_service(runs)
    yield service
    service.stop()
    _kill_jobs(runs)


MAX_EXAMPLES = 12


def _at_the_real_run(case: schemathesis.Case) -> schemathesis.Case:
    parameters = case.path_parameters or {}
    if "name" in parameters:
        parameters["name"] = "small"
    if isinstance(parameters.get("number"), int):
        parameters["number"] %= 3
    return case


def test_no_server_error_and_no_answer_the_schema_does_not_declare(fuzzed: Served) -> None:
    auth = {"Authorization": f"Bearer {fuzzed.token}"}
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json", headers=auth)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if not op.path.endswith("/events")]
    assert len(operations) >= 15

    for operation in operations:
        generated = operation.as_strategy()
        # Half the cases aim at the run that exists, so operations get past "no such search".
        aimed = generated.map(_at_the_real_run)

        @given(case=st.one_of(generated, aimed))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=auth, checks=CHECKS, timeout=60)

        try:
            check()
        except Exception as e:  # hypothesis re-raises the first failing check, minimised
            failures.append(f"{operation.label}: {type(e).__name__}: {str(e)[:400]}")
    assert failures == []
