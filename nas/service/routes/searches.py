"""Searches: submit, list, watch, cancel, resume; their trials, front and plot; choosing."""

from __future__ import annotations

import io
import json
import threading
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from nas import api
from nas.config import RUN_NAME_PATTERN
from nas.errors import NASError
from nas.record import TRIAL_COLUMNS
from nas.service.errors import Problem
from nas.service.events import event_stream
from nas.service.jobs import ENDED, QUEUED, RUNNING, SEARCH, Job
from nas.service.models import (
    CompareView,
    FrontView,
    PickView,
    SearchDetail,
    SearchRequest,
    SearchView,
    TrialDetail,
    TrialPage,
    TrialRow,
)
from nas.service.state import Service, authorized, service

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid token"},
    404: {"description": "no such search or trial"},
    409: {"description": "the search's state does not allow this"},
    422: {"description": "a value that is not allowed"},
}
router = APIRouter(
    prefix="/api/searches", tags=["searches"], dependencies=[Depends(authorized)], responses=ERRORS
)
Name = Annotated[str, Path(pattern=RUN_NAME_PATTERN, description="the run's name")]
Svc = Annotated[Service, Depends(service)]
_submitting = threading.Lock()


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-safe dicts (NaN and NA become null)."""
    rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return rows


def search_view(svc: Service, name: str, job: Job | None) -> SearchView:
    progress = None
    try:
        progress = svc.reader.progress(
            name, job.started if job else None, job.ended if job else None
        )
    except NASError:  # queued, its run not written yet
        progress = None
    return SearchView(
        name=name,
        state=job.state if job else None,
        created=job.created if job else None,
        started=job.started if job else None,
        ended=job.ended if job else None,
        message=job.message if job else "",
        progress=progress,
    )


@router.get("", response_model=list[SearchView])
def list_searches(svc: Svc) -> list[SearchView]:
    jobs = {j.id: j for j in svc.store.list(kind=SEARCH)}
    names = sorted(set(jobs) | set(svc.reader.names()))
    return [search_view(svc, n, jobs.get(n)) for n in names]


@router.post("", status_code=201, response_model=SearchView)
def submit(body: SearchRequest, svc: Svc) -> SearchView:
    """Queue a search; its config is checked as `nas search` checks it, and nothing is
    created when it is refused."""
    config = api.search_config(
        body.config, name=body.name, n_trials=body.n_trials, timeout=body.timeout
    )
    with _submitting:
        existing = svc.store.get(config.name)
        if existing is not None:
            how = "cancel it first" if existing.state not in ENDED else "resume it"
            raise Problem(
                409, f"search {config.name} exists ({existing.state}); {how} or pick another name"
            )
        api.check_search(
            config, svc.runs_dir, source="submitted config", here=svc.options.address is None
        )
        folder = svc.store.folder(config.name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
        job = svc.store.add(Job(id=config.name, kind=SEARCH, run=config.name, state=QUEUED))
    return search_view(svc, config.name, job)


@router.get("/{name}", response_model=SearchDetail)
def detail(name: Name, svc: Svc) -> SearchDetail:
    job = svc.store.get(name)
    if job is None:
        config = svc.reader.config(name)
    else:
        config = api.search_config(
            (svc.store.folder(name) / "config.yaml").read_text(encoding="utf-8"),
            source=f"search {name}",
        ).model_dump(mode="json")
    return SearchDetail(**search_view(svc, name, job).model_dump(), config=config)


@router.post("/{name}/cancel", status_code=202, response_model=SearchView)
def cancel(name: Name, svc: Svc) -> SearchView:
    job = svc.store.get(name)
    if job is None or job.state not in (QUEUED, RUNNING):
        state = job.state if job else "not a job of this service"
        raise Problem(409, f"search {name} is {state}; only a queued or running search cancels")
    svc.scheduler.cancel(job)
    return search_view(svc, name, svc.store.get(name))


@router.post("/{name}/resume", status_code=202, response_model=SearchView)
def resume(name: Name, svc: Svc) -> SearchView:
    """Queue an ended search again (or adopt a run made by `nas search`); it goes on from its
    study, finished trials kept."""
    job = svc.store.get(name)
    if job is not None and job.state not in ENDED:
        raise Problem(409, f"search {name} is {job.state}; it resumes once it has ended")
    if job is None:
        run = svc.reader.run_dir(name)
        folder = svc.store.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_bytes((run / "config.yaml").read_bytes())
        job = svc.store.add(Job(id=name, kind=SEARCH, run=name, state=QUEUED, message="adopted"))
    else:
        svc.scheduler.resume(job)
    return search_view(svc, name, svc.store.get(name))


@router.get(
    "/{name}/trials",
    response_model=TrialPage,
    responses={200: {"content": {"text/csv": {}}, "description": "a page of trials"}},
)
def trials(
    name: Name,
    svc: Svc,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    sort: Annotated[str, Query(description="a column of trials.csv")] = "number",
    order: Literal["asc", "desc"] = "asc",
    format: Literal["json", "csv"] = "json",
) -> Any:
    if sort not in TRIAL_COLUMNS:
        raise Problem(422, f"sort = {sort!r}: not a column; allowed: {', '.join(TRIAL_COLUMNS)}")
    frame = svc.reader.trials(name)
    ordered = frame.sort_values(sort, ascending=order == "asc", kind="stable", na_position="last")
    page = ordered.iloc[offset : offset + limit]
    if format == "csv":
        buffer = io.StringIO()
        page[TRIAL_COLUMNS].to_csv(buffer, index=False)
        return Response(buffer.getvalue(), media_type="text/csv")
    rows = [TrialRow(**r) for r in records(page[TRIAL_COLUMNS])]
    return TrialPage(
        total=len(frame), offset=offset, limit=limit, sort=sort, order=order, trials=rows
    )


@router.get("/{name}/trials/{number}", response_model=TrialDetail)
def trial(name: Name, number: Annotated[int, Path(ge=0)], svc: Svc) -> TrialDetail:
    record = svc.reader.trial(name, number)
    return TrialDetail(**record)


@router.get("/{name}/front", response_model=FrontView)
def front(name: Name, svc: Svc) -> FrontView:
    members, knee = svc.reader.front(name)
    rows = records(members[TRIAL_COLUMNS])
    return FrontView(trials=[TrialRow(**r) for r in rows], knee=knee)


@router.get("/{name}/pick", response_model=PickView)
def pick(name: Name, svc: Svc, max_latency_ms: Annotated[float, Query(gt=0, le=1e6)]) -> PickView:
    """The most accurate trial under a latency budget."""
    best = api.best_under(svc.reader.trials(name), max_latency_ms)
    if best is None:
        return PickView(
            max_latency_ms=max_latency_ms,
            trial=None,
            message=f"no completed feasible trial is as fast as {max_latency_ms:g} ms",
        )
    row = TrialRow(**records(best.to_frame().T[TRIAL_COLUMNS])[0])
    message = (
        f"trial {row.number}: accuracy {row.accuracy:.4f} at {row.latency_p50_ms:.3f} ms"
        if row.accuracy is not None and row.latency_p50_ms is not None
        else f"trial {row.number}"
    )
    return PickView(max_latency_ms=max_latency_ms, trial=row, message=message)


@router.get("/{name}/compare", response_model=CompareView)
def compare(
    name: Name,
    svc: Svc,
    a: Annotated[int, Query(ge=0)],
    b: Annotated[int, Query(ge=0)],
) -> CompareView:
    """Two trials side by side: b's accuracy in points over a, latency and size as ratios."""
    frame = svc.reader.trials(name)
    chosen = []
    for n in (a, b):
        match = frame[frame["number"] == n]
        if match.empty:
            raise Problem(404, f"trial {n} not in search {name} (trials: 0..{len(frame) - 1})")
        chosen.append(match.iloc[0])
    rows = records(pd.DataFrame(chosen)[TRIAL_COLUMNS])
    return CompareView(
        a=TrialRow(**rows[0]),
        b=TrialRow(**rows[1]),
        difference=api.side_by_side(chosen[0], chosen[1]),
    )


@router.get("/{name}/plot", response_model=dict[str, Any])
def plot(name: Name, svc: Svc) -> dict[str, Any]:
    """The accuracy/latency plot as plotly figure JSON (pareto.html draws the same)."""
    figure = api.pareto_figure(svc.reader.trials(name), f"{name}: accuracy vs latency")
    data: dict[str, Any] = json.loads(figure.to_json())
    return data


@router.get(
    "/{name}/events",
    responses={200: {"content": {"text/event-stream": {}}, "description": "progress events"}},
)
async def events(name: Name, request: Request, svc: Svc) -> StreamingResponse:
    """Server-sent events: ``progress`` whenever the search changes, ``end`` once it ended."""
    if svc.store.get(name) is None:
        await run_in_threadpool(svc.reader.run_dir, name)  # 404 for a search that is not there
    return StreamingResponse(
        event_stream(request, svc, name),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
