"""Devices: the built-in backends and latency tables with their predictor reports, and adding
a new device's latency table."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool

from nas import api
from nas.service.errors import Problem
from nas.service.models import DeviceView, TableAdded
from nas.service.routes.searches import ERRORS
from nas.service.state import MAX_METADATA_BYTES, MAX_TABLE_BYTES, Service, authorized, service

router = APIRouter(
    prefix="/api/devices",
    tags=["devices"],
    dependencies=[Depends(authorized)],
    responses={**ERRORS, 413: {"description": "an upload over its size limit"}},
)
Svc = Annotated[Service, Depends(service)]


@router.get("", response_model=list[DeviceView])
def devices(svc: Svc) -> list[DeviceView]:
    return [DeviceView(**row) for row in api.list_devices(svc.runs_dir)]


async def _read(upload: UploadFile, limit: int, what: str) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise Problem(413, f"{what} is over {limit // 2**20} MiB; a latency table is far smaller")
    return data


@router.post("/tables", status_code=201, response_model=TableAdded)
async def add_table(
    svc: Svc,
    table: Annotated[UploadFile, File(description="the table (.csv)")],
    metadata: Annotated[UploadFile, File(description="its side file (.json)")],
    replace: Annotated[bool, Form()] = False,
) -> TableAdded:
    """Add a device's latency table, checked as a search checks it; a refused table leaves
    nothing behind. The file names given are not used."""
    csv = await _read(table, MAX_TABLE_BYTES, "the table")
    meta = await _read(metadata, MAX_METADATA_BYTES, "the metadata")
    path = await run_in_threadpool(api.add_table, csv, meta, svc.runs_dir, replace=replace)
    return TableAdded(device=path.name.split("__")[0], table=path.name)
