"""Exports: a trial exported in a runtime's format as a background job, its model card, and the
export folder as a zip archive."""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, PlainTextResponse

from nas import api
from nas.config import RUN_NAME_PATTERN
from nas.service.errors import Problem
from nas.service.jobs import EXPORT, FINISHED, QUEUED, Job
from nas.service.models import ExportRequest, ExportView
from nas.service.routes.searches import ERRORS
from nas.service.state import Service, authorized, service

router = APIRouter(tags=["exports"], dependencies=[Depends(authorized)], responses=ERRORS)
ExportId = Annotated[str, PathParam(pattern=r"^x[0-9a-f]{12}$", description="an export's id")]
Name = Annotated[str, PathParam(pattern=RUN_NAME_PATTERN, description="the run's name")]
Svc = Annotated[Service, Depends(service)]


def export_view(svc: Service, job: Job) -> ExportView:
    card = None
    if job.state == FINISHED:
        path = svc.store.folder(job.id) / "export" / "model_card.json"
        card = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    return ExportView(
        id=job.id,
        run=job.run,
        trial=int(job.params["trial"]),
        format=job.params.get("format"),
        precision=job.params.get("precision"),
        state=job.state,
        created=job.created,
        ended=job.ended,
        message=job.message,
        card=card,
    )


def _job(svc: Service, export_id: str) -> Job:
    job = svc.store.get(export_id)
    if job is None or job.kind != EXPORT:
        raise Problem(404, f"no export {export_id}")
    return job


@router.post("/api/searches/{name}/exports", status_code=202, response_model=ExportView)
def start_export(name: Name, body: ExportRequest, svc: Svc) -> ExportView:
    """Export a completed trial in the background; checked first as `nas export` checks."""
    run_dir = svc.reader.run_dir(name)
    export_id = "x" + secrets.token_hex(6)
    folder = svc.store.folder(export_id)
    options = api.ExportOptions(
        out=folder / "export",
        trial=body.trial,
        format=body.format,
        precision=body.precision,
        weights=body.weights,
        min_agreement=body.min_agreement,
    )
    api.check_export(run_dir, options)
    folder.mkdir(parents=True, exist_ok=True)
    job = Job(id=export_id, kind=EXPORT, run=name, state=QUEUED, params=body.model_dump())
    return export_view(svc, svc.store.add(job))


@router.get("/api/exports", response_model=list[ExportView])
def list_exports(svc: Svc) -> list[ExportView]:
    return [export_view(svc, j) for j in reversed(svc.store.list(kind=EXPORT))]


@router.get("/api/exports/{export_id}", response_model=ExportView)
def get_export(export_id: ExportId, svc: Svc) -> ExportView:
    return export_view(svc, _job(svc, export_id))


def _finished_folder(svc: Service, export_id: str) -> Path:
    job = _job(svc, export_id)
    if job.state != FINISHED:
        raise Problem(409, f"export {export_id} is {job.state}; its files come once it finished")
    return svc.store.folder(export_id) / "export"


@router.get(
    "/api/exports/{export_id}/archive",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "the export folder"}},
)
def archive(export_id: ExportId, svc: Svc) -> Any:
    """The export folder (model files, model card, example script) as a zip archive."""
    folder = _finished_folder(svc, export_id)
    target = folder.parent / f"{export_id}.zip"
    if not target.is_file():
        with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
            made = shutil.make_archive(str(Path(tmp) / export_id), "zip", root_dir=folder)
            Path(made).replace(target)
    job = _job(svc, export_id)
    filename = f"{job.run}-trial{job.params['trial']}-{export_id}.zip"
    return FileResponse(target, media_type="application/zip", filename=filename)


@router.get(
    "/api/exports/{export_id}/card",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/markdown": {}}, "description": "MODEL_CARD.md"}},
)
def card(export_id: ExportId, svc: Svc) -> PlainTextResponse:
    text = (_finished_folder(svc, export_id) / "MODEL_CARD.md").read_text(encoding="utf-8")
    return PlainTextResponse(text, media_type="text/markdown")
