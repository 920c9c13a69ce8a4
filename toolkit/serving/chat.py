"""POST /v1/chat/completions: the conversation rendered into a prompt, run as a completion (completions.py),
answered in chat's shape (`chat.completion`, or `chat.completion.chunk` events when streamed).

Only a model with a prompt template takes chat: a prompt/completion adapter, or a mix of adapters that
share one template. Such an adapter was trained on single prompts and their completions, so the
conversation must be exactly one user message: its content is the prompt, which the template wraps after
EOS, as `toolkit.generate` prompts the adapter. A system message or earlier turns had no place in what the
adapter saw in training: they are refused rather than guessed into the prompt. The base and adapters
trained on plain text are refused too: they take text, on /v1/completions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request

from .catalog import Target
from .completions import Completions
from .errors import BadRequest
from .types import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatMessage,
    Completion,
    CompletionRequest,
)


class Chat:
    def __init__(self, completions: Completions):
        self.completions = completions

    async def complete(self, body: ChatCompletionRequest, request: Request) -> ChatCompletion:
        target, completion = await self._prepare(body, request)
        return reply(await self.completions.complete(completion, request, target))

    async def stream(self, body: ChatCompletionRequest, request: Request) -> AsyncIterator[bytes]:
        target, completion = await self._prepare(body, request)
        return await self.completions.stream(completion, request, target, shape=Chunks())

    async def _prepare(self, body: ChatCompletionRequest, request: Request) -> tuple[Target, CompletionRequest]:
        """The target and the completion request a chat request stands for, or a 400/404 saying why not; the
        messages are measured before anything is tokenized, and tokenized off the event loop."""
        completions = self.completions
        longest = max((len(m.content) for m in body.messages), default=0)
        if -(-longest // completions.longest_token) >= completions.context:
            raise BadRequest(
                f"a message has {longest} characters, more than the model's context of "
                f"{completions.context} tokens can hold; shorten it",
                param="messages",
            )
        target, ids = await completions.off_loop(self._tokens, body)
        request.state.model = target.metric_label
        context = completions.context
        if len(ids) >= context:
            raise BadRequest(
                f"the prompt (the user message inside the template) has {len(ids)} tokens, the model's "
                f"context {context}: no room to generate; shorten the message",
                param="messages",
            )
        # The prompt goes on as token ids: tokenized once, and taken as they are.
        completion = CompletionRequest(
            model=body.model,
            prompt=ids,
            max_tokens=body.limit or context - len(ids),
            temperature=body.temperature,
            top_p=body.top_p,
            n=body.n,
            stream=body.stream,
            stream_options=body.stream_options,
            stop=body.stop,
            seed=body.seed,
            user=body.user,
        )
        return target, completion

    def _tokens(self, body: ChatCompletionRequest) -> tuple[Target, list[int]]:
        target = self.completions.catalog.target(body.model)
        return target, self.completions.tokens(chat_prompt(target, body.messages), target.template)


def chat_prompt(target: Target, messages: list[ChatMessage]) -> str:
    """The prompt a conversation stands for: its one user message."""
    if target.template is None:
        raise BadRequest(
            f"{target.description} was trained on plain text: its recipe defines no prompt template, so it cannot "
            "take chat messages; send the text as a prompt to /v1/completions",
            param="messages",
        )
    roles = [m.role for m in messages]
    if roles != ["user"]:
        got = ", ".join(roles[:5]) + (f" and {len(roles) - 5} more" if len(roles) > 5 else "")
        raise BadRequest(
            f"{target.description} was trained on single prompts and their completions (template "
            f"{target.template!r}): send one user message, the prompt, and nothing else (got: {got})",
            param="messages",
        )
    return messages[0].content


def reply(completion: Completion) -> ChatCompletion:
    choices = [
        ChatChoice(index=c.index, message=AssistantMessage(content=c.text), finish_reason=c.finish_reason)
        for c in completion.choices
    ]
    return ChatCompletion(
        id=_chat_id(completion.id),
        created=completion.created,
        model=completion.model,
        choices=choices,
        usage=completion.usage,
    )


class Chunks:
    """Completion chunks into chat chunks; a choice's first one says who speaks, as OpenAI streams them."""

    def __init__(self):
        self.started: set[int] = set()

    def __call__(self, chunk: Completion) -> ChatCompletionChunk:
        choices = []
        for c in chunk.choices:
            role = None if c.index in self.started else "assistant"
            self.started.add(c.index)
            choices.append(
                ChatChunkChoice(
                    index=c.index, delta=ChatDelta(role=role, content=c.text), finish_reason=c.finish_reason
                )
            )
        return ChatCompletionChunk(
            id=_chat_id(chunk.id), created=chunk.created, model=chunk.model, choices=choices, usage=chunk.usage
        )


def _chat_id(completion_id: str) -> str:
    return "chat" + completion_id  # "chatcmpl-...", as OpenAI names chat completions
