"""`--api-key`: every route but /health (and the page's empty shell) requires `Authorization: Bearer KEY`."""

from __future__ import annotations

import secrets

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import Unauthorized

_bearer = HTTPBearer(auto_error=False)  # we answer a missing key ourselves, in the OpenAI error shape


def require_key(api_key: str | None):
    """A FastAPI dependency that refuses a request without the key (none: every request passes)."""

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
        if api_key is None:
            return
        if credentials is None:
            raise Unauthorized(
                "this server requires an API key: send the header `Authorization: Bearer KEY`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not secrets.compare_digest(credentials.credentials.encode(), api_key.encode()):
            raise Unauthorized("the API key is wrong", headers={"WWW-Authenticate": "Bearer"})

    return check
