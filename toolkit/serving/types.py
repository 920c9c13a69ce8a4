"""The requests and responses of the OpenAI-compatible API, as pydantic models.

A request with a field of the wrong type or out of range, or a field the API does not have, is refused
with a 400 that names the field (see errors.py). OpenAI fields this server does not implement are
accepted at their neutral value only (`presence_penalty: 0`, `best_of: 1`, ...), so that a client
sending its defaults works and one asking for more is told.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

MAX_N = 16  # completions per prompt
MAX_LOGPROBS = 20  # top tokens per position
MAX_STOP = 4  # stop sequences, as OpenAI allows
MAX_MODEL_CHARS = 2048  # a name is at most 64 characters; a mix of 16 adapters fits well within this
SEEDS = {"ge": -(2**63), "le": 2**64 - 1}  # what torch.Generator.manual_seed takes


def _encodable(text: str) -> str:
    """JSON can carry a lone UTF-16 surrogate ("\\ud800"), which is no text: refused here, not by the tokenizer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"holds {text[err.start]!r} at character {err.start}, a lone surrogate that is not valid "
            "Unicode; send valid text"
        ) from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]
Prompt = str | list[str] | list[int] | list[list[int]]  # its strings are checked by _prompt_shape
NEUTRAL = {
    "presence_penalty": (0.0,),
    "frequency_penalty": (0.0,),
    "logit_bias": (None, {}),
    "best_of": (None, 1),
    "suffix": (None, ""),
}  # the values of the OpenAI fields not implemented that mean "off"


class Strict(BaseModel):
    """No field the API does not have, and no silent conversion ("5" is not 5)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(Strict):
    include_usage: bool = False  # a last chunk with the usage and no choices


class Request(Strict):
    """What every request may carry: here, the OpenAI fields this server accepts at their neutral value only."""

    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    best_of: int | None = None
    suffix: Text | None = None

    @field_validator(*NEUTRAL)
    @classmethod
    def _neutral(cls, value, info: ValidationInfo):
        if value not in NEUTRAL[info.field_name]:
            raise ValueError(f"not supported by this server; leave it out or send {NEUTRAL[info.field_name][-1]!r}")
        return value


class CompletionRequest(Request):
    model: Text = Field(min_length=1, max_length=MAX_MODEL_CHARS)  # an adapter, the base, or a mix "a=0.7,b=0.3"
    prompt: Prompt
    echo: bool = False  # the prompt is returned before the completion (and scored, with logprobs)
    max_tokens: int = Field(16, ge=0)  # 0 only with echo: the prompt scored, nothing generated
    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)  # 0: greedy, always the likeliest token
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    stop: Text | list[Text] | None = None
    seed: int | None = Field(None, **SEEDS)
    user: Text | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, value):
        ok = isinstance(value, str) or (
            isinstance(value, list)
            and value
            and (all(isinstance(v, str) for v in value) or all(_token_ids(v) for v in value) or _token_ids(value))
        )
        if not ok:
            raise ValueError(
                "must be a string, a non-empty list of strings, a list of token ids, or a list of lists of token ids"
            )
        for text in [value] if isinstance(value, str) else value:
            if isinstance(text, str):
                _encodable(text)
        return value

    @field_validator("stop", mode="after")
    @classmethod
    def _stop(cls, value):
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise ValueError(f"give at most {MAX_STOP} non-empty stop sequences")
        return value

    @field_validator("max_tokens")
    @classmethod
    def _zero_only_with_echo(cls, value, info: ValidationInfo):
        if value == 0 and not info.data.get("echo"):
            raise ValueError("0 generates nothing; it is for scoring a prompt, with echo: true")
        return value

    @property
    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: a string, or a list of token ids."""
        if isinstance(self.prompt, str) or (self.prompt and isinstance(self.prompt[0], int)):
            return [self.prompt]
        return list(self.prompt)

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


def _token_ids(value) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant"]
    content: Text


class ChatCompletionRequest(Request):
    """Generated only for models with a prompt template (chat.py says what the messages may be)."""

    model: Text = Field(min_length=1, max_length=MAX_MODEL_CHARS)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)  # None: up to the end of the context (EOS ends it before)
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name for max_tokens
    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Text | list[Text] | None = None
    seed: int | None = Field(None, **SEEDS)
    user: Text | None = None

    @field_validator("max_completion_tokens")
    @classmethod
    def _one_limit(cls, value, info: ValidationInfo):
        if value is not None and info.data.get("max_tokens") is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        return value

    @property
    def limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# ---------------------------------------------------------------- responses


class Logprobs(BaseModel):
    tokens: list[str] = []
    token_logprobs: list[float | None] = []  # None for a prompt's first token, which nothing predicts
    top_logprobs: list[dict[str, float] | None] = []
    text_offset: list[int] = []


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: Logprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class Answer(BaseModel):
    """What a completion, a chat completion and each chunk of a stream carry, in OpenAI's order; each kind
    narrows `object` and `choices`."""

    id: str
    object: str
    created: int
    model: str
    choices: list
    usage: Usage | None = None


class Completion(Answer):
    """A response, or (object "text_completion" too, as OpenAI streams it) one chunk of a stream."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoiceBase(BaseModel):
    """What a chat choice and a chunk's choice share; each adds its text (`message`, `delta`) after these."""

    index: int
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatChoice(ChatChoiceBase):
    message: AssistantMessage


class ChatCompletion(Answer):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None  # in a choice's first chunk only
    content: str | None = None


class ChatChunkChoice(ChatChoiceBase):
    delta: ChatDelta


class ChatCompletionChunk(Answer):
    """One event of a streamed chat completion; the last (with stream_options.include_usage) has no choices."""

    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "gpt2-adapt"
    root: str  # the base it runs on
    parent: str | None = None  # the base, for an adapter (vLLM's convention); None for the base itself
    dataset: str | None = None
    base_perplexity: float | None = None
    adapted_perplexity: float | None = None
    error: str | None = None  # what is wrong with a damaged adapter (a request for it says so too)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
