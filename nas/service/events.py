"""Server-sent events of a search: a ``progress`` event whenever its state, progress or exports
change, and ``end`` once it has ended; a comment now and then keeps the connection open.

The service looks at the study once a second (reads are cached while the study is unchanged);
the browser only listens.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from nas.errors import NASError
from nas.service.jobs import ENDED, EXPORT
from nas.service.state import Service

LOOK_EVERY_S = 1.0
KEEPALIVE_S = 15.0


def snapshot(svc: Service, name: str) -> dict[str, Any]:
    """What the page of search `name` shows that can change."""
    job = svc.store.get(name)
    progress = None
    try:
        progress = svc.reader.progress(
            name, job.started if job else None, job.ended if job else None
        ).to_dict()
        progress.pop("elapsed_s")  # changes every second; the page counts it itself
    except NASError:
        progress = None
    exports = [
        {"id": j.id, "state": j.state, "trial": j.params.get("trial"), "message": j.message}
        for j in svc.store.list(kind=EXPORT)
        if j.run == name
    ]
    return {
        "name": name,
        "state": job.state if job else None,
        "message": job.message if job else "",
        "started": job.started if job else None,
        "progress": progress,
        "exports": exports,
        "ended": job is None or job.state in ENDED,
    }


async def event_stream(request: Request, svc: Service, name: str) -> AsyncIterator[str]:
    last: dict[str, Any] | None = None
    quiet_since = time.monotonic()
    while not await request.is_disconnected():
        snap = await run_in_threadpool(snapshot, svc, name)
        exports_busy = any(e["state"] not in ENDED for e in snap["exports"])
        if snap != last:
            yield f"event: progress\ndata: {json.dumps(snap)}\n\n"
            last, quiet_since = snap, time.monotonic()
        elif time.monotonic() - quiet_since > KEEPALIVE_S:
            yield ": still here\n\n"
            quiet_since = time.monotonic()
        if snap["ended"] and not exports_busy:
            yield "event: end\ndata: {}\n\n"
            return
        await asyncio.sleep(LOOK_EVERY_S)
