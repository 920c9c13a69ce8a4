"""The OpenAI-compatible API against a real server, through the official `openai` client: every output
is compared with what `toolkit.generate` / `toolkit.mix` give for that model alone."""

import math
import shutil

import pytest

import toolkit

from .servers import Alone, served

PROMPTS = ["The cat", "my sister likes", ""]


@pytest.fixture(scope="module")
def api_store(tmp_path_factory, trained_adapters, many_adapters):
    """The trained adapters (quickstart, poems, poems8, and elsewhere, trained on another base) and two
    random ones (a00, a01), whose texts differ from each other and from the base's."""
    root = tmp_path_factory.mktemp("api") / "store"
    shutil.copytree(trained_adapters, root)
    for name in ("a00", "a01"):
        shutil.copytree(many_adapters / name, root / name)
    return root


@pytest.fixture(scope="module")
def api(api_store, tiny_model):
    with served(store=str(api_store), max_batch=8) as running:
        yield running


@pytest.fixture(scope="module")
def alone(api_store, tiny_model):
    return Alone(api_store, tiny_model)


def test_models_lists_the_base_and_every_adapter_with_its_figures(api, api_store, tiny_model):
    models = {m.id: m for m in api.client.models.list().data}
    base = str(tiny_model)
    assert set(models) == {base, "quickstart", "poems", "poems8", "elsewhere", "a00", "a01"}
    assert models[base].parent is None and models["poems"].parent == base
    assert models["elsewhere"].parent != base  # listed with its own base; serving it is refused (test_bad_input)
    recorded = toolkit.AdapterStore(api_store).info("poems").metrics
    poems = models["poems"].model_dump()
    assert poems["base_perplexity"] == recorded["base"]["perplexity"]
    assert poems["adapted_perplexity"] == recorded["adapted"]["perplexity"]
    assert models["a00"].model_dump()["adapted_perplexity"] is None  # imported: no figures


def test_greedy_completions_equal_each_model_alone(api, alone, tiny_model):
    texts = {}
    for model in ("a00", "a01", str(tiny_model), "quickstart"):
        for prompt in PROMPTS:
            got = api.client.completions.create(model=model, prompt=prompt, max_tokens=20, temperature=0)
            assert got.choices[0].text == alone(None if model == str(tiny_model) else model, prompt, 20), (
                model,
                prompt,
            )
            texts[model, prompt] = got.choices[0].text
    # The comparison can tell the models apart: their texts differ.
    assert len({texts[m, "The cat"] for m in ("a00", "a01", str(tiny_model))}) == 3


def test_a_stream_joins_into_the_text_that_is_not_streamed(api):
    for prompt in PROMPTS:
        whole = api.client.completions.create(model="a01", prompt=prompt, max_tokens=30, temperature=0)
        chunks = list(
            api.client.completions.create(model="a01", prompt=prompt, max_tokens=30, temperature=0, stream=True)
        )
        assert len(chunks) > 1
        assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
        assert [c.choices[0].finish_reason for c in chunks][-1] == whole.choices[0].finish_reason
        assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_n_samples_with_a_seed_are_reproducible(api):
    def sample(seed):
        got = api.client.completions.create(
            model="a00", prompt="The cat", max_tokens=12, n=3, seed=seed, temperature=1.0
        )
        assert [c.index for c in got.choices] == [0, 1, 2]
        return [c.text for c in got.choices]

    first = sample(7)
    assert sample(7) == first
    assert len(set(first)) == 3  # three different samples
    assert sample(8) != first


def test_a_mix_equals_the_toolkit_mix_model(api, api_store):
    model, tokenizer = toolkit.load(["a00", "a01"], store=api_store)
    toolkit.mix(model, {"a00": 0.7, "a01": 0.3})
    for prompt in PROMPTS:
        expected = toolkit.generate(model, tokenizer, prompt, max_new_tokens=20, greedy=True)[0]
        got = api.client.completions.create(model="a00=0.7,a01=0.3", prompt=prompt, max_tokens=20, temperature=0)
        assert got.choices[0].text == expected
        assert got.model == "a00=0.7,a01=0.3"


def test_usage_counts_prompts_once_and_every_generated_token(api, alone):
    tokenizer = alone.tokenizer or toolkit.load(base=str(alone.base))[1]
    prompts = ["The cat", "a dog sees the moon"]
    got = api.client.completions.create(model="a00", prompt=prompts, max_tokens=7, n=2, temperature=0)
    prompt_tokens = sum(len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    assert [c.index for c in got.choices] == [0, 1, 2, 3]
    assert got.choices[0].text == got.choices[1].text  # greedy: n copies
    assert got.usage.prompt_tokens == prompt_tokens
    assert all(c.finish_reason == "length" for c in got.choices)
    assert got.usage.completion_tokens == 4 * 7
    assert got.usage.total_tokens == prompt_tokens + 28


def test_echo_and_logprobs_are_the_models_own(api, api_store):
    import torch

    got = api.client.completions.create(
        model="a00", prompt="The cat", max_tokens=5, temperature=0, echo=True, logprobs=3
    )
    choice = got.choices[0]
    logprobs = choice.logprobs
    assert choice.text.startswith("The cat")
    model, tokenizer = toolkit.load("a00", store=api_store)
    ids = tokenizer("The cat", add_special_tokens=False)["input_ids"]
    assert len(logprobs.tokens) == len(ids) + 5 and logprobs.token_logprobs[0] is None
    generated = tokenizer(choice.text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        expected = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    # The prompt's second token given its first, and the first generated token given the prompt.
    assert logprobs.token_logprobs[1] == pytest.approx(float(expected[0, ids[1]]), abs=1e-4)
    assert logprobs.token_logprobs[len(ids)] == pytest.approx(float(expected[-1].max()), abs=1e-4)
    assert all(len(top) in (3, 4) for top in logprobs.top_logprobs[1:])
    assert max(logprobs.top_logprobs[len(ids)].values()) == pytest.approx(logprobs.token_logprobs[len(ids)])
    assert logprobs.text_offset[:2] == [0, len(tokenizer.decode(ids[:1]))]
    assert generated[: len(ids)] == ids
    scored = api.client.completions.create(model="a00", prompt="The cat", max_tokens=0, echo=True, logprobs=0)
    assert scored.choices[0].text == "The cat" and scored.usage.completion_tokens == 0
    assert math.isclose(
        sum(scored.choices[0].logprobs.token_logprobs[1:]), sum(logprobs.token_logprobs[1 : len(ids)]), abs_tol=1e-4
    )


def test_a_stop_sequence_ends_the_text_before_it(api, alone):
    text = alone("a01", "The cat", 30)
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop and stop in text
    got = api.client.completions.create(
        model="a01", prompt="The cat", max_tokens=30, temperature=0, stop=[stop, "never here"]
    )
    assert got.choices[0].text == text[: text.index(stop)]
    assert got.choices[0].finish_reason == "stop"
    chunks = list(
        api.client.completions.create(
            model="a01", prompt="The cat", max_tokens=30, temperature=0, stop=stop, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == text[: text.index(stop)]


def test_the_health_route_and_the_page_are_served(api):
    assert api.call("GET", "/health").body == {"status": "ok"}
    page = api.call("GET", "/")
    assert page.status == 200 and "<title>gpt2-adapt serve</title>" in page.body


def test_metrics_count_requests_tokens_and_loaded_adapters(api):
    before = api.metrics()
    api.client.completions.create(model="a00", prompt="The", max_tokens=4, temperature=0)
    after = api.metrics()
    key = 'gpt2_adapt_requests_total{model="a00",route="/v1/completions",status="200"}'
    assert after[key] == before.get(key, 0) + 1
    tokens = 'gpt2_adapt_generated_tokens_total{model="a00"}'
    assert after[tokens] == before.get(tokens, 0) + 4
    assert after["gpt2_adapt_loaded_adapters"] >= 1
    assert after["gpt2_adapt_queue_rows"] == 0
    assert 'gpt2_adapt_request_seconds_count{model="a00"}' in after
