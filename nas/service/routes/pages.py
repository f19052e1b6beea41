"""The web UI: server-rendered pages (Jinja2) with a little JavaScript (``static/app.js``) that
calls the JSON API, listens to a search's events and draws plots with plotly.js from the plotly
package; nothing comes from the internet and nothing is built with Node."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import plotly
from fastapi import APIRouter, Depends, Form, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

import nas
from nas import api
from nas.config import RUN_NAME_PATTERN
from nas.service.auth import COOKIE, safe_next, token_matches
from nas.service.jobs import EXPORT, SEARCH
from nas.service.routes.exports import export_view
from nas.service.routes.searches import search_view
from nas.service.state import Service, authorized, service

HERE = Path(__file__).resolve().parents[1]
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals["version"] = nas.__version__  # in static URLs: a new release, a new URL
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
QUICKSTART = Path(__file__).resolve().parents[3] / "configs" / "quickstart.yaml"

router = APIRouter(include_in_schema=False)
Svc = Annotated[Service, Depends(service)]
Name = Annotated[str, PathParam(pattern=RUN_NAME_PATTERN)]


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context)


# plotly.js is 4.8 MB: a browser keeps it (and the small files) for a day.
CACHED = {"Cache-Control": "public, max-age=86400"}


@router.get("/static/{name}")
def static(name: str) -> Response:
    if name == "plotly.min.js":
        return FileResponse(PLOTLY_JS, media_type="text/javascript", headers=CACHED)
    if name not in STATIC:
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(HERE / "static" / name, media_type=STATIC[name], headers=CACHED)


@router.get("/login")
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return _page(request, "login.html", next=safe_next(next), error="")


@router.post("/login")
def login(
    request: Request, svc: Svc, token: Annotated[str, Form()], next: Annotated[str, Form()] = "/"
) -> Response:
    if not token_matches(token, svc.token):
        page = _page(request, "login.html", next=safe_next(next), error="That is not the token.")
        page.status_code = 401
        return page
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/", dependencies=[Depends(authorized)])
def searches_page(request: Request, svc: Svc) -> HTMLResponse:
    jobs = {j.id: j for j in svc.store.list(kind=SEARCH)}
    names = sorted(set(jobs) | set(svc.reader.names()))
    rows = [search_view(svc, n, jobs.get(n)) for n in names]
    example = QUICKSTART.read_text(encoding="utf-8") if QUICKSTART.is_file() else ""
    return _page(request, "searches.html", searches=rows, example=example)


@router.get("/searches/{name}", dependencies=[Depends(authorized)])
def search_page(request: Request, name: Name, svc: Svc) -> HTMLResponse:
    job = svc.store.get(name)
    if job is None:
        svc.reader.run_dir(name)  # 404 unless the run is there
    return _page(request, "search.html", name=name, search=search_view(svc, name, job))


@router.get("/searches/{name}/trials/{number}", dependencies=[Depends(authorized)])
def trial_page(request: Request, name: Name, number: int, svc: Svc) -> HTMLResponse:
    record = svc.reader.trial(name, number)
    formats = ("onnx", "onnx-fp16", "onnx-int8", "openvino", "tensorrt", "torchscript", "pt2")
    return _page(request, "trial.html", name=name, number=number, record=record, formats=formats)


def _operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The API's operations, readable: method, path, parameters, body and responses."""
    found = []
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            parameters = [
                {
                    **p,
                    "type": (p.get("schema") or {}).get("type")
                    or " | ".join(
                        str(a.get("type")) for a in (p.get("schema") or {}).get("anyOf", [])
                    ),
                    "description": p.get("description")
                    or (p.get("schema") or {}).get("description", ""),
                }
                for p in op.get("parameters", [])
            ]
            body = op.get("requestBody", {}).get("content", {})
            kinds = [
                f"{ctype} {content.get('schema', {}).get('$ref', '').rsplit('/', 1)[-1]}".strip()
                for ctype, content in body.items()
            ]
            found.append(
                {
                    "id": op.get("operationId", f"{method}-{path}"),
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "parameters": parameters,
                    "body": ", ".join(kinds),
                    "responses": [
                        (c, r.get("description", "")) for c, r in op["responses"].items()
                    ],
                }
            )
    return found


@router.get("/docs", dependencies=[Depends(authorized)])
def docs_page(request: Request) -> HTMLResponse:
    """The API's documentation, drawn from its OpenAPI schema without anything from the
    internet."""
    schema = request.app.openapi()
    return _page(request, "docs.html", schema=schema, operations=_operations(schema))


@router.get("/devices", dependencies=[Depends(authorized)])
def devices_page(request: Request, svc: Svc) -> HTMLResponse:
    return _page(request, "devices.html", devices=api.list_devices(svc.runs_dir))


@router.get("/exports", dependencies=[Depends(authorized)])
def exports_page(request: Request, svc: Svc) -> HTMLResponse:
    exports = [export_view(svc, j) for j in reversed(svc.store.list(kind=EXPORT))]
    return _page(request, "exports.html", exports=exports)
