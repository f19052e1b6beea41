"""Who may use the service: whoever holds its token.

The token is generated at the first start into ``RUNS/.service/token``, readable by its owner
only, and printed with the URL. API clients send ``Authorization: Bearer TOKEN``; the browser
logs in once on ``/login``, which sets an HttpOnly, SameSite=Strict cookie. Every route but
``/healthz`` and the login page needs one of the two.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fastapi import Request

COOKIE = "nas_token"
TOKEN_FILE = "token"


def load_or_create_token(folder: Path) -> str:
    """The service's token, created (owner-only) if the folder has none yet."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / TOKEN_FILE
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def presented_token(request: Request) -> str | None:
    """The token a request carries, in its Authorization header or its cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return request.cookies.get(COOKIE)


def token_matches(given: str | None, token: str) -> bool:
    """Whether `given` is the token (compared in constant time)."""
    return bool(given) and secrets.compare_digest(str(given).encode(), token.encode())


def is_authorized(request: Request, token: str) -> bool:
    return token_matches(presented_token(request), token)


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this site only, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
