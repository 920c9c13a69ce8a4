"""POST /v1/completions: a request into rows for the batcher, and the rows' updates into a response or a
stream of server-sent events.

Rows: one per prompt and per `n`, prompt-major (choice i*n+j is the j-th completion of prompt i), as
OpenAI numbers them. Usage counts each prompt once, and every generated token (EOS included).

A string prompt for a prompt/completion adapter becomes EOS and the prompt inside the adapter's template,
exactly as `toolkit.generate` prompts it; token ids are taken as given. Chat (chat.py) runs through here
too, with its own shape of response.

No request makes the event loop do more than a bounded amount of work: its rows are counted and its
prompts measured before anything is tokenized (a prompt of more characters than the context's tokens
could ever spell is refused unread), and tokenizing, with the store reads that find the target, runs on
one thread of its own (a fast tokenizer must not be used by two threads at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import Request
from pydantic import BaseModel

from ..generation.generate import prompt_tokens
from .batcher import Batcher
from .catalog import Catalog, Target
from .errors import BadRequest, RequestTimeout, ServingError
from .jobs import Failure, Job, RowSpec, TokenInfo, Update
from .sampling import Sampling, row_seeds
from .types import Completion, CompletionChoice, CompletionRequest, Logprobs, Usage

DONE = b"data: [DONE]\n\n"  # how OpenAI ends a stream
ANSWER_MARGIN = 10.0  # seconds past a job's deadline after which the event loop answers for a silent worker


def _event(data: str) -> bytes:
    """One server-sent event (the JSON holds no newline)."""
    return b"data: " + data.encode() + b"\n\n"


@dataclass(frozen=True)
class Prepared:
    target: Target
    rows: list[RowSpec]
    echoes: list[str]  # per row: the text put before its completion ("" without echo)
    prompt_tokens: int


class Completions:
    def __init__(self, catalog: Catalog, batcher: Batcher, tokenizer, context: int, vocab_size: int):
        # `tokenizer` is this side's own: the batcher's worker decodes with another instance.
        self.catalog, self.batcher, self.tokenizer = catalog, batcher, tokenizer
        self.context, self.vocab_size = context, vocab_size
        # A token spells at most this many characters (a byte-level token: one per byte of its text).
        self.longest_token = max(map(len, tokenizer.get_vocab()))
        self.tokenizing = ThreadPoolExecutor(1, thread_name_prefix="gpt2-adapt-tokenize")

    def close(self) -> None:
        self.tokenizing.shutdown(wait=False, cancel_futures=True)

    async def off_loop(self, work: Callable, *args):
        """Run `work` (tokenizing, reading the store) on the tokenizing thread."""
        return await asyncio.get_running_loop().run_in_executor(self.tokenizing, work, *args)

    async def prepare(self, body: CompletionRequest, target: Target | None = None) -> Prepared:
        """The rows of a request (on `target`, else the model it names), or a 400/404 saying why there are none."""
        self.check_size(body)
        return await self.off_loop(self._prepare, body, target)

    def check_size(self, body: CompletionRequest) -> None:
        """What can be refused without tokenizing: too many rows, a prompt longer than the context allows."""
        count = len(body.prompts) * body.n
        if count > self.batcher.max_queue:
            raise BadRequest(
                f"{len(body.prompts)} prompts x n={body.n} is {count} rows, more than this server queues "
                f"at once ({self.batcher.max_queue}); send fewer per request",
                param="n",
            )
        room = self.context - body.max_tokens
        for number, prompt in enumerate(body.prompts):
            at_least = len(prompt) if isinstance(prompt, list) else -(-len(prompt) // self.longest_token)
            if at_least > room:
                which = f"prompt {number}" if len(body.prompts) > 1 else "the prompt"
                size = (
                    f"{len(prompt)} tokens"
                    if isinstance(prompt, list)
                    else f"{len(prompt)} characters, at least {at_least} tokens,"
                )
                raise BadRequest(self._too_long(which, size, body.max_tokens, room), param="max_tokens")

    def _too_long(self, which: str, size: str, max_tokens: int, room: int) -> str:
        return (
            f"{which} has {size} and max_tokens is {max_tokens}: more than the model's context of {self.context}; "
            f"shorten the prompt, or lower max_tokens"
            + (f" (the prompt may have at most {room} tokens)" if room > 0 else "")
        )

    def _prepare(self, body: CompletionRequest, target: Target | None) -> Prepared:
        target = target or self.catalog.target(body.model)
        scores_text = body.echo and body.logprobs is not None and any(isinstance(p, str) for p in body.prompts)
        if target.template is not None and scores_text:
            # The echo is the prompt as sent; the tokens scored are the templated ones: they would not line up.
            raise BadRequest(
                f"{target.description} wraps a string prompt in its template {target.template!r}, so the prompt's "
                "log-probabilities (echo with logprobs) are not of the text echoed; send the templated prompt's token "
                "ids to score it",
                param="echo",
            )
        prompts = [self.tokens(p, target.template) for p in body.prompts]
        for number, ids in enumerate(prompts):
            if len(ids) + body.max_tokens > self.context:
                which = f"prompt {number}" if len(prompts) > 1 else "the prompt"
                raise BadRequest(
                    self._too_long(which, f"{len(ids)} tokens", body.max_tokens, self.context - body.max_tokens),
                    param="max_tokens",
                )
        count = len(prompts) * body.n
        seeds = row_seeds(body.seed, count)
        rows, echoes = [], []
        for i, ids in enumerate(prompts):
            echo = (
                (body.prompts[i] if isinstance(body.prompts[i], str) else self.tokenizer.decode(ids))
                if body.echo
                else ""
            )
            for j in range(body.n):
                index = i * body.n + j
                sampling = Sampling(body.temperature, body.top_p, seeds[index])
                rows.append(RowSpec(index, ids, body.max_tokens, sampling, body.logprobs, body.echo, body.stops))
                echoes.append(echo)
        return Prepared(target, rows, echoes, sum(map(len, prompts)))

    def tokens(self, prompt: str | list[int], template: str | None = None) -> list[int]:
        """What the model continues: token ids as given; a string as `toolkit.generate` tokenizes it for a model
        with `template` (None: plain text, BOS for an empty string)."""
        if isinstance(prompt, list):
            bad = [t for t in prompt if not 0 <= t < self.vocab_size]
            if bad:
                raise BadRequest(
                    f"token ids {bad[:5]} are not in the vocabulary (0 to {self.vocab_size - 1})", param="prompt"
                )
            return prompt
        return prompt_tokens(self.tokenizer, prompt, template)

    # ---------------------------------------------------------------- answering

    async def complete(self, body: CompletionRequest, request: Request, target: Target | None = None) -> Completion:
        prepared = await self.prepare(body, target)
        request.state.model = prepared.target.metric_label
        job = self.batcher.submit(prepared.target, prepared.rows, streamed=False)
        answer = Answer(prepared, body)
        watcher = asyncio.create_task(_cancel_on_disconnect(request, job))
        try:
            async for update in _updates(job):
                answer.add(update, chunk=False)
        finally:
            watcher.cancel()
            job.cancel()  # a no-op when it is over
        return answer.completion()

    async def stream(
        self,
        body: CompletionRequest,
        request: Request,
        target: Target | None = None,
        shape: Callable[[Completion], BaseModel] | None = None,
    ) -> AsyncIterator[bytes]:
        """Server-sent events; the first is awaited before the response starts, so that a request refused
        when its turn comes (its adapter damaged, say) still gets its error status. `shape` turns each
        chunk into what is sent (chat's chunks); without it, the chunk itself."""
        prepared = await self.prepare(body, target)
        request.state.model = prepared.target.metric_label
        job = self.batcher.submit(prepared.target, prepared.rows, streamed=True)
        updates = _updates(job)
        watcher = asyncio.create_task(_cancel_on_disconnect(request, job))
        try:
            first = await anext(updates)
        except BaseException:
            job.cancel()
            raise
        finally:
            watcher.cancel()  # from here the streaming response itself notices a client that leaves
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        return self._events(prepared, body, job, first, updates, shape or (lambda chunk: chunk))

    async def _events(
        self,
        prepared: Prepared,
        body: CompletionRequest,
        job: Job,
        first: Update,
        updates: AsyncIterator[Update],
        shape: Callable[[Completion], BaseModel],
    ) -> AsyncIterator[bytes]:
        answer = Answer(prepared, body)
        try:
            update = first
            while update is not None:
                chunk = answer.add(update)
                yield _event(shape(chunk).model_dump_json())
                update = await anext(updates, None)
            if body.stream_options and body.stream_options.include_usage:
                last = answer.completion().model_copy(update={"choices": []})
                yield _event(shape(last).model_dump_json())
        except Exception as err:  # noqa: BLE001 - the response has started: the error travels as an event
            error = err if isinstance(err, ServingError) else ServingError(f"generation failed ({type(err).__name__})")
            yield _event(error.body().model_dump_json())
        finally:
            job.cancel()  # the client left (the stream was cancelled), or the job is over anyway
        yield DONE


class Answer:
    """A response built from a job's updates; each update also as a chunk of a stream."""

    def __init__(self, prepared: Prepared, body: CompletionRequest):
        self.prepared, self.body = prepared, body
        self.id, self.created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        count = len(prepared.rows)
        self.texts = [""] * count
        self.logprobs = [Logprobs() if body.logprobs is not None else None for _ in range(count)]
        self.finish: list[str | None] = [None] * count
        self.generated = [0] * count
        self.started = [False] * count

    def add(self, update: Update, chunk: bool = True) -> Completion | None:
        """Take in a row's update; returns it as a chunk of a stream (None when `chunk` is False)."""
        i = update.index
        text = update.text
        if not self.started[i]:  # the echo goes before the row's first piece
            self.started[i] = True
            text = self.prepared.echoes[i] + text
        self.texts[i] += text
        logprobs = _logprobs(update.tokens, len(self.prepared.echoes[i])) if self.logprobs[i] is not None else None
        if logprobs is not None:
            mine = self.logprobs[i]
            for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
                getattr(mine, key).extend(getattr(logprobs, key))
        self.finish[i] = update.finish_reason
        self.generated[i] = update.completion_tokens
        if not chunk:
            return None
        choice = CompletionChoice(index=i, text=text, logprobs=logprobs, finish_reason=update.finish_reason)
        return Completion(id=self.id, created=self.created, model=self.prepared.target.name, choices=[choice])

    def completion(self) -> Completion:
        completion_tokens = sum(self.generated)
        prompt_tokens = self.prepared.prompt_tokens
        choices = [
            CompletionChoice(index=i, text=t, logprobs=lp, finish_reason=f)
            for i, (t, lp, f) in enumerate(zip(self.texts, self.logprobs, self.finish))
        ]
        usage = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )
        return Completion(
            id=self.id, created=self.created, model=self.prepared.target.name, choices=choices, usage=usage
        )


def _logprobs(tokens: tuple[TokenInfo, ...], echo_length: int) -> Logprobs:
    """OpenAI's logprobs object for some tokens; offsets count from the start of the choice's text."""
    return Logprobs(
        tokens=[t.token for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=[t.top for t in tokens],
        text_offset=[t.offset if t.prompt else t.offset + echo_length for t in tokens],
    )


async def _updates(job: Job) -> AsyncIterator[Update]:
    """A job's updates until all its rows have ended; a failure is raised. The worker answers every job it
    accepted; should it ever fall silent, the request is still answered once its deadline has long passed."""
    running = len(job.rows)
    while running:
        try:
            async with asyncio.timeout(max(job.deadline - time.monotonic(), 0) + ANSWER_MARGIN):
                event = await job.events.get()
        except TimeoutError:
            job.cancel()
            raise RequestTimeout(
                "the request got no answer from the generation worker within the server's timeout; "
                "the server's log may say why"
            ) from None
        if isinstance(event, Failure):
            raise event.error
        if event.finish_reason is not None:
            running -= 1
        yield event


async def _cancel_on_disconnect(request: Request, job: Job) -> None:
    """Once the body is read, the next message a server sends is the client leaving."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            job.cancel()
            return
