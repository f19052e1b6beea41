"""The FastAPI application: routers by resource, the web UI, health and metrics, and the one
place where errors become HTTP responses."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse

import nas
from nas.errors import NASError
from nas.service.errors import NotAuthenticated, Problem, status_of
from nas.service.metrics import exposition, registry_for
from nas.service.models import Health
from nas.service.routes import devices, exports, pages, searches
from nas.service.state import MAX_METADATA_BYTES, MAX_TABLE_BYTES, ServeOptions, Service, authorized

# A request body larger than this is refused before it is read (uploads are the largest).
MAX_REQUEST_BYTES = MAX_TABLE_BYTES + MAX_METADATA_BYTES + 2**20


def _problem(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for e in error.errors():
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        value = f" = {e['input']!r}" if "input" in e and e.get("type") != "missing" else ""
        parts.append(f"{where}{value}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _wants_page(request: Request) -> bool:
    path = request.url.path
    return not (path.startswith("/api/") or path in ("/metrics", "/openapi.json"))


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NASError)
    async def nas_error(request: Request, error: NASError) -> Response:
        return _problem(status_of(error), str(error))

    @app.exception_handler(Problem)
    async def problem(request: Request, error: Problem) -> Response:
        return _problem(error.status, error.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        return _problem(422, _validation_message(error))

    @app.exception_handler(NotAuthenticated)
    async def unauthenticated(request: Request, error: NotAuthenticated) -> Response:
        if _wants_page(request) and request.method == "GET":
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        detail = "log in: send Authorization: Bearer TOKEN (the token nas serve printed)"
        return _problem(401, detail, **{"WWW-Authenticate": "Bearer"})


def create_app(options: ServeOptions) -> FastAPI:
    """The service for `options`; its scheduler runs while the application does."""
    svc = Service(options)
    registry, http_metrics = registry_for(svc)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.scheduler.start()
        threading.Thread(target=svc.reader.warm, name="nas-warm", daemon=True).start()
        try:
            yield
        finally:
            svc.scheduler.stop()

    app = FastAPI(
        title="hwnas",
        version=nas.__version__,
        description="Hardware-aware neural architecture search as a service: submit searches, "
        "watch them, choose a candidate, export it, add devices' latency tables.",
        lifespan=lifespan,
        docs_url=None,  # the default pages load their scripts from the internet; see /docs
        redoc_url=None,
        openapi_url=None,  # served below, behind the token like every other route
    )
    app.state.service = svc
    add_error_handlers(app)

    @app.middleware("http")
    async def limit_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_REQUEST_BYTES:
            return _problem(413, f"request body over {MAX_REQUEST_BYTES // 2**20} MiB")
        return await call_next(request)

    app.middleware("http")(http_metrics)

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get(
        "/metrics",
        tags=["service"],
        dependencies=[Depends(authorized)],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus metrics"}},
    )
    def metrics() -> Response:
        body, kwargs = exposition(registry)
        return Response(body, **kwargs)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(authorized)])
    def openapi() -> dict[str, Any]:
        return app.openapi()

    for router in (searches.router, exports.router, devices.router, pages.router):
        app.include_router(router)
    return app
