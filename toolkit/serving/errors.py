"""One place that turns every failure into an OpenAI-style error body and its status:

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": null}}

Status, type / code, and when:

- 400 invalid_request_error: malformed JSON, a field of the wrong type or out of range, an unknown field, a bad mix,
  a prompt too long for the context, chat with an adapter that has no prompt template.
- 401 invalid_request_error / invalid_api_key: no API key, or a wrong one.
- 404 invalid_request_error / model_not_found: a model that is not in the store, a route that does not exist.
- 408 timeout_error / timeout: the request took longer than the server's timeout; its generation was stopped.
- 409 invalid_request_error / adapter_changed: an adapter retrained with another prompt template while the request
  waited (send it again).
- 422 invalid_request_error / adapter_refused: an adapter that fails verification (damaged, or trained on another
  base).
- 429 rate_limit_error / queue_full: the queue is full; `Retry-After` says when to try again.
- 499 invalid_request_error / client_closed: the client closed the connection before its answer (logged; no one
  receives it).
- 413 invalid_request_error / body_too_large: the body is larger than `--max-body`.
- 503 server_error / shutting_down, worker_stopped: the server is shutting down, or its generation worker stopped
  (restart it).
- 500 server_error: a bug: logged with its traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import ToolkitError
from .access import printable
from .types import ErrorBody, ErrorDetail

log = logging.getLogger(__name__)


class ServingError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ):
        super().__init__(message)
        self.message, self.param, self.headers = message, param, headers or {}
        if status is not None:  # an HTTP error of the framework's (405, ...), kept as it is
            self.status = status
            self.type = "invalid_request_error" if status < 500 else "server_error"

    def body(self) -> ErrorBody:
        return ErrorBody(error=ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code))


class BadRequest(ServingError):
    status, type = 400, "invalid_request_error"


class Unauthorized(ServingError):
    status, type, code = 401, "invalid_request_error", "invalid_api_key"


class NotFound(ServingError):
    status, type = 404, "invalid_request_error"


class ModelNotFound(NotFound):
    code = "model_not_found"


class RequestTimeout(ServingError):
    status, type, code = 408, "timeout_error", "timeout"


class AdapterChanged(ServingError):
    status, type, code = 409, "invalid_request_error", "adapter_changed"


class AdapterRefused(ServingError):
    status, type, code = 422, "invalid_request_error", "adapter_refused"


class QueueFull(ServingError):
    status, type, code = 429, "rate_limit_error", "queue_full"


class BodyTooLarge(ServingError):
    status, type, code = 413, "invalid_request_error", "body_too_large"


class ClientClosed(ServingError):
    """The client left before its answer: nobody reads this one, but the request's handler ends with it."""

    status, type, code = 499, "invalid_request_error", "client_closed"


class ShuttingDown(ServingError):
    status, code = 503, "shutting_down"


class WorkerStopped(ServingError):
    status, code = 503, "worker_stopped"


def message(err: ToolkitError) -> str:
    """A library error's problems as one line, each parameter spelled as a client of this server can act on it."""
    return "; ".join(err.spelled(_spelling))


def _spelling(name: str, value: str | None) -> str:
    if name == "strict":  # a client cannot load what fails verification: only the command line can
        return "the unverified loading that `gpt2-adapt generate` offers (this server serves verified adapters only)"
    return "--" + name.replace("_", "-")


def response(err: ServingError) -> JSONResponse:
    return JSONResponse(err.body().model_dump(), status_code=err.status, headers=err.headers)


def from_validation(err: RequestValidationError) -> BadRequest:
    """One line per wrong field, each naming it; `param` is the first."""
    lines, first = [], None
    for e in err.errors():
        loc = [str(p) for p in e["loc"] if p != "body"]
        if e["type"] == "json_invalid":
            return BadRequest(f"the body is not valid JSON ({e.get('ctx', {}).get('error', e['msg'])})")
        field = ".".join(loc) if loc else None
        first = first or (loc[0] if loc else None)
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            message = "is required"
        elif e["type"] == "extra_forbidden":
            message = "is not a field of this request"
        lines.append(f"{field}: {message}" if field else message)
    return BadRequest("; ".join(dict.fromkeys(lines)) or "the body is not a valid request", param=first)


def install(app: FastAPI) -> None:
    """Every failure an app can meet, answered in the one shape."""

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, err: ServingError):
        return response(err)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        return response(from_validation(err))

    @app.exception_handler(ToolkitError)
    async def toolkit_error(request: Request, err: ToolkitError):
        return response(BadRequest(message(err)))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return response(ServingError(str(err.detail), headers=dict(err.headers or {}), status=err.status_code))

    @app.exception_handler(Exception)
    async def bug(request: Request, err: Exception):
        log.exception("%s %s failed", printable(request.method), printable(request.url.path))
        return response(ServingError(f"internal error ({type(err).__name__}); the server's log has the details"))
