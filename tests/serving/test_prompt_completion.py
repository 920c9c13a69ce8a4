"""A prompt/completion adapter behind the server, through the official `openai` client: a string prompt is
wrapped in the adapter's template exactly as `toolkit.generate` wraps it, chat takes one user message as
the prompt, and what cannot be prompted that way is refused with a 400 that says why."""

import json

import openai
import pytest

import toolkit
from toolkit.generation.generate import prompt_tokens

from .servers import QA_TEMPLATE, Alone, served

PROMPTS = ["the cat finds the moon. What does the cat find?", "a dog finds an apple. What does a dog find?"]
USER = [{"role": "user", "content": PROMPTS[0]}]


@pytest.fixture(scope="module")
def qa(qa_store):
    with served(store=str(qa_store), max_batch=8) as running:
        yield running


@pytest.fixture(scope="module")
def alone(qa_store, tiny_model):
    alone = Alone(qa_store, tiny_model)
    alone(None, "", 1)  # loads the base: alone.tokenizer
    return alone


def test_a_string_prompt_is_wrapped_in_the_template_as_generate_wraps_it(qa, alone):
    for prompt in PROMPTS:
        expected = alone("qa", prompt, 12)
        got = qa.client.completions.create(model="qa", prompt=prompt, max_tokens=12, temperature=0)
        choice = got.choices[0]
        assert choice.text == expected
        assert choice.finish_reason == "stop" and got.usage.completion_tokens < 12  # the adapter learnt to end at EOS
        ids = prompt_tokens(alone.tokenizer, prompt, QA_TEMPLATE)
        assert ids[0] == alone.tokenizer.eos_token_id and got.usage.prompt_tokens == len(ids)
        # Token ids are taken as given: the templated ones give the same text, the bare prompt's another.
        as_ids = qa.client.completions.create(model="qa", prompt=ids, max_tokens=12, temperature=0)
        assert as_ids.choices[0].text == expected
        bare = alone.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert (
            qa.client.completions.create(model="qa", prompt=bare, max_tokens=12, temperature=0).choices[0].text
            != expected
        )
    assert alone("qa", PROMPTS[0], 12).endswith(".")  # it answers in the completions' form, then EOS


def test_echo_gives_back_the_prompt_as_sent(qa, alone):
    got = qa.client.completions.create(model="qa", prompt=PROMPTS[1], max_tokens=12, temperature=0, echo=True)
    assert got.choices[0].text == PROMPTS[1] + alone("qa", PROMPTS[1], 12)


def test_text_adapters_and_the_base_are_prompted_as_before(qa, alone, tiny_model):
    for model, name in (("text", "text"), (str(tiny_model), None)):
        got = qa.client.completions.create(model=model, prompt="The cat", max_tokens=10, temperature=0)
        assert got.choices[0].text == alone(name, "The cat", 10)
        assert got.usage.prompt_tokens == len(alone.tokenizer("The cat", add_special_tokens=False)["input_ids"])


def test_a_mix_of_adapters_sharing_a_template_is_prompted_with_it(qa, qa_store):
    model, tokenizer = toolkit.load(["qa"], store=qa_store)
    toolkit.mix(model, {"qa": 0.5})
    expected = toolkit.generate(model, tokenizer, PROMPTS[0], max_new_tokens=12, greedy=True)[0]
    got = qa.client.completions.create(model="qa=0.5", prompt=PROMPTS[0], max_tokens=12, temperature=0)
    assert got.choices[0].text == expected
    chat = qa.client.chat.completions.create(model="qa=0.5", messages=USER, max_tokens=12, temperature=0)
    assert chat.choices[0].message.content == expected


def test_chat_answers_one_user_message_as_the_adapter_answers_its_prompt(qa, alone):
    expected = alone("qa", PROMPTS[0], 12)
    got = qa.client.chat.completions.create(model="qa", messages=USER, max_tokens=12, temperature=0)
    assert got.object == "chat.completion" and got.id.startswith("chatcmpl-") and got.model == "qa"
    [choice] = got.choices
    assert choice.index == 0 and choice.message.role == "assistant" and choice.message.content == expected
    assert choice.finish_reason == "stop"
    assert got.usage.prompt_tokens == len(prompt_tokens(alone.tokenizer, PROMPTS[0], QA_TEMPLATE))
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens
    # No max_tokens: up to the end of the context, and EOS ends it first; max_completion_tokens is max_tokens.
    unbounded = qa.client.chat.completions.create(model="qa", messages=USER, temperature=0)
    assert unbounded.choices[0].message.content == expected
    newer = qa.client.chat.completions.create(model="qa", messages=USER, max_completion_tokens=2, temperature=0)
    assert newer.choices[0].finish_reason == "length" and newer.usage.completion_tokens == 2
    sampled = qa.client.chat.completions.create(model="qa", messages=USER, max_tokens=12, n=3, seed=5)
    assert [c.index for c in sampled.choices] == [0, 1, 2]


def test_a_chat_stream_joins_into_the_answer_and_ends_with_usage(qa):
    whole = qa.client.chat.completions.create(model="qa", messages=USER, max_tokens=12, temperature=0)
    chunks = list(
        qa.client.chat.completions.create(
            model="qa", messages=USER, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True}
        )
    )
    *pieces, last = chunks
    assert all(c.object == "chat.completion.chunk" and c.id == pieces[0].id for c in chunks)
    assert pieces[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in pieces[1:])
    assert "".join(c.choices[0].delta.content or "" for c in pieces) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in pieces][-1] == "stop"
    assert last.choices == [] and last.usage == whole.usage
    # On the wire: server-sent events ending with [DONE].
    reply = qa.call("POST", "/v1/chat/completions", {"model": "qa", "messages": USER, "max_tokens": 3, "stream": True})
    events = [e.removeprefix("data: ") for e in reply.body.strip().split("\n\n")]
    assert events[-1] == "[DONE]" and json.loads(events[0])["object"] == "chat.completion.chunk"


# (name, body merged into a good chat request, status, param, words in the message)
CHAT_REFUSED = [
    ("the base", {"model": "BASE"}, 400, "messages", "the base was trained on plain text"),
    ("a text adapter", {"model": "text"}, 400, "messages", "adapter 'text' was trained on plain text"),
    (
        "a system message",
        {"messages": [{"role": "system", "content": "Be brief."}, *USER]},
        400,
        "messages",
        "send one user message, the prompt, and nothing else (got: system, user)",
    ),
    (
        "a second turn",
        {"messages": [*USER, {"role": "assistant", "content": " the moon."}, *USER]},
        400,
        "messages",
        "single prompts",
    ),
    ("a mix of a template and text", {"model": "qa=0.5,text=0.5"}, 400, "model", "prompted differently"),
    (
        "max_tokens and max_completion_tokens",
        {"max_tokens": 3, "max_completion_tokens": 3},
        400,
        "max_completion_tokens",
        "not both",
    ),
    (
        "a message beyond the context",
        {"messages": [{"role": "user", "content": "the cat " * 40}]},
        400,
        "messages",
        "no room to generate",
    ),
    ("a prompt and max_tokens beyond the context", {"max_tokens": 60}, 400, "max_tokens", "context of 64"),
    ("an unknown model", {"model": "ghost"}, 404, "model", "no model named 'ghost'"),
    ("logprobs", {"logprobs": True}, 400, "logprobs", "not a field"),
]


@pytest.mark.parametrize("name, body, status, param, words", CHAT_REFUSED, ids=[c[0] for c in CHAT_REFUSED])
def test_chat_refuses_what_a_template_cannot_take(qa, tiny_model, name, body, status, param, words):
    request = {"model": "qa", "messages": USER, **body}
    if request["model"] == "BASE":
        request["model"] = str(tiny_model)
    reply = qa.call("POST", "/v1/chat/completions", request)
    assert reply.status == status, reply.body
    error = reply.body["error"]
    assert error["param"] == param and words in error["message"], error


def test_completions_refuse_what_a_template_cannot_take(qa):
    mixed = qa.call("POST", "/v1/completions", {"model": "qa=0.5,text=0.5", "prompt": "The cat"})
    assert mixed.status == 400 and mixed.body["error"]["param"] == "model"
    assert "qa: template 'Q: {prompt}\\nA:'; text: text" in mixed.body["error"]["message"]
    scored = qa.call("POST", "/v1/completions", {"model": "qa", "prompt": "The cat", "echo": True, "logprobs": 1})
    assert scored.status == 400 and scored.body["error"]["param"] == "echo"
    assert "token ids" in scored.body["error"]["message"]
    with pytest.raises(openai.BadRequestError):  # the client sees it as OpenAI's own
        qa.client.chat.completions.create(model="text", messages=USER)
    assert qa.client.completions.create(model="qa", prompt=PROMPTS[0], max_tokens=2).choices[0].text  # still serving


def test_a_template_changed_while_a_request_waited_answers_409(qa_store):
    """The request read one template from the store and the adapter loaded with another (retrained in
    between): its prompt was tokenized for the wrong one, so it is refused, to be sent again."""
    import asyncio
    from dataclasses import replace

    from toolkit.serving.jobs import Failure
    from toolkit.serving.metrics import Metrics
    from toolkit.serving.service import Service
    from toolkit.serving.settings import ServerSettings
    from toolkit.serving.types import CompletionRequest

    service = Service(ServerSettings(store=str(qa_store)), Metrics())
    service.open()

    async def stale_request():
        stale = replace(service.catalog.target("qa"), template="Question: {prompt}\n")
        prepared = await service.completions.prepare(CompletionRequest(model="qa", prompt="x", max_tokens=2), stale)
        return await service.batcher.submit(stale, prepared.rows).events.get()

    try:
        event = asyncio.run(stale_request())
    finally:
        service.close()
    assert isinstance(event, Failure) and event.error.status == 409 and event.error.code == "adapter_changed"
    assert (
        "adapter 'qa' was retrained with another prompt template ('Q: {prompt}\\nA:', not 'Question: {prompt}\\n')"
        in (event.error.message)
    )
