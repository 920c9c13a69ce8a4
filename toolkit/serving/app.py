"""The ASGI app: thin routes over the service. `create_app(...)` builds it; the model loads at start-up.

GET  /health                 public: {"status": "ok"} while the server can generate; else 503 and why
GET  /                       public: the page (an empty shell; its data comes from the routes below)
GET  /docs, /redoc           the API's documentation, served only when no API key is set
GET  /metrics                Prometheus text format
GET  /v1/models              the base and every adapter of the store
POST /v1/completions         OpenAI's completions, streamed as server-sent events with "stream": true
POST /v1/chat/completions    OpenAI's chat, for models with a prompt template (one user message: the prompt)
"""

from __future__ import annotations

import asyncio
import contextlib
from importlib import resources

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from .. import __version__
from . import errors
from .access import AccessLog
from .auth import require_key
from .limits import BodyLimit
from .metrics import Metrics
from .service import Service
from .settings import ServerSettings
from .types import ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest, ErrorBody, ModelList

ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 404, 408, 409, 413, 422, 429, 503)}


def create_app(settings: ServerSettings | None = None, **fields) -> FastAPI:
    """The server as an ASGI app. `settings`, or ServerSettings' fields as keywords (store=..., base=...)."""
    settings = settings or ServerSettings(**fields)
    metrics = Metrics()
    service = Service(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if not service.opened:  # toolkit.serve opens it before listening, to report bad settings at once
            await asyncio.to_thread(service.open)
        yield
        await asyncio.to_thread(service.close)

    # With a key, the API's documentation is not served: /docs, /redoc and /openapi.json answer 404.
    documented = {} if settings.api_key is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="gpt2-adapt", version=__version__, lifespan=lifespan, responses=ERRORS, **documented)
    app.state.service = service
    errors.install(app)
    app.add_middleware(BodyLimit, max_body=settings.max_body, read_timeout=settings.read_timeout)
    app.add_middleware(AccessLog, metrics=metrics)  # added last: the outermost, so it logs the 413s and 408s too

    public = APIRouter()
    private = APIRouter(dependencies=[Depends(require_key(settings.api_key))])

    @public.get("/health")
    async def health():
        problem = service.health()
        if problem is None:
            return {"status": "ok"}
        return JSONResponse({"status": "error", "reason": problem}, status_code=503)

    @public.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")

    @private.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.text(), media_type=metrics.content_type)

    @private.get("/v1/models", response_model=ModelList)
    def models() -> ModelList:  # reads the store: run in the thread pool, off the event loop
        return ModelList(data=service.catalog.cards())

    @private.post("/v1/completions", response_model=Completion, response_model_exclude_none=False)
    async def completions(body: CompletionRequest, request: Request):
        if body.stream:
            events = await service.completions.stream(body, request)
            return StreamingResponse(events, media_type="text/event-stream")
        return await service.completions.complete(body, request)

    @private.post("/v1/chat/completions", response_model=ChatCompletion)
    async def chat(body: ChatCompletionRequest, request: Request):
        if body.stream:
            events = await service.chat.stream(body, request)
            return StreamingResponse(events, media_type="text/event-stream")
        return await service.chat.complete(body, request)

    app.include_router(public)
    app.include_router(private)
    return app
