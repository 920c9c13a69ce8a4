"""The ASGI app: thin routes over the service. `create_app(...)` builds it; the model loads at start-up.

    GET  /health                 public: {"status": "ok"} once the model is loaded
    GET  /                       public: the page (an empty shell; its data comes from the routes below)
    GET  /metrics                Prometheus text format
    GET  /v1/models              the base and every adapter of the store
    POST /v1/completions         OpenAI's completions, streamed as server-sent events with "stream": true
    POST /v1/chat/completions    for adapters with a prompt template; none has one yet (400)
"""

from __future__ import annotations

import asyncio
import contextlib
from importlib import resources

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from .. import __version__
from . import errors
from .access import AccessLog
from .auth import require_key
from .errors import BadRequest
from .metrics import Metrics
from .service import Service
from .settings import ServerSettings
from .types import ChatCompletionRequest, Completion, CompletionRequest, ErrorBody, ModelList

ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 404, 408, 422, 429, 503)}


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

    app = FastAPI(title="gpt2-adapt", version=__version__, lifespan=lifespan, responses=ERRORS)
    app.state.service = service
    errors.install(app)
    app.add_middleware(AccessLog, metrics=metrics)

    public = APIRouter()
    private = APIRouter(dependencies=[Depends(require_key(settings.api_key))])

    @public.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @public.get("/", response_class=HTMLResponse, include_in_schema=False)
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

    @private.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request):
        target = service.catalog.target(body.model)
        request.state.model = target.metric_label
        # Issue 16 gives recipes prompt templates: an adapter with one will render `messages` into a prompt
        # here and run it as a completion. Until then every model takes plain text only.
        if not target.weights:
            what = "the base"
        else:
            what = f"the mix {target.name!r}" if target.mix else f"adapter {target.name!r}"
        raise BadRequest(
            f"{what} was trained on plain text: its recipe defines no prompt template, so it cannot take chat "
            "messages; send the text as a prompt to /v1/completions", param="messages",
        )

    app.include_router(public)
    app.include_router(private)
    return app
