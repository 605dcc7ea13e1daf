import pytest
from fake_openai import FakeOpenAI

from selfinstruct_utils.llm import TABLE4, LMClient, LMRequestError, ResponseCache, SamplingParams

KEY = "sk-test-PLANTED-SECRET-123456"


def test_cache_key_covers_model_identity_and_parameters():
    p = SamplingParams(max_tokens=5)
    k = ResponseCache.key("completions", "m", "hello", p, "gguf-sha256:a")
    assert k == ResponseCache.key("completions", "m", "hello", SamplingParams(max_tokens=5), "gguf-sha256:a")
    assert k != ResponseCache.key("completions", "m", "hello", p, "gguf-sha256:b")
    assert k != ResponseCache.key("completions", "m", "hello", p.replace(seed=1), "gguf-sha256:a")
    assert k != ResponseCache.key("chat", "m", "hello", p, "gguf-sha256:a")
    assert k != ResponseCache.key("completions", "m2", "hello", p, "gguf-sha256:a")


def test_completions_chat_usage_and_cache(tmp_path):
    with FakeOpenAI(text=" Yes") as fake:
        client = LMClient("fake-model", base_url=fake.base_url, api_key=KEY, cache_dir=tmp_path / "c",
                          price_per_million=(1.0, 2.0))
        out = client.complete(["a", "b", "c"], TABLE4["classification"], step="classification")
        assert [c.text for c in out] == [" Yes"] * 3 and not any(c.cached for c in out)
        u = client.usage["classification"]
        assert (u.requests, u.prompt_tokens, u.completion_tokens) == (3, 33, 6)
        assert u.cost_usd == pytest.approx((33 * 1 + 6 * 2) / 1e6)
        again = client.complete(["a", "b", "c"], TABLE4["classification"], step="classification")
        assert all(c.cached for c in again) and len(fake.requests) == 3
        assert fake.requests[0]["stop"] == ["\n", "Task:"] and fake.requests[0]["max_tokens"] == 3
        chat = LMClient("fake-model", base_url=fake.base_url, api_key=KEY, api="chat")
        assert chat.complete(["hi"], SamplingParams())[0].text == "Yes"
        assert fake.requests[-1]["messages"] == [{"role": "user", "content": "hi"}]
        assert fake.auth[0] == f"Bearer {KEY}"
    # the key is nowhere in the cache
    for f in (tmp_path / "c").rglob("*"):
        if f.is_file():
            assert KEY not in f.read_text()
    assert KEY not in repr(client) and KEY not in str(client.describe())


def test_transient_faults_are_retried():
    with FakeOpenAI(script=["429", "503", "500"]) as fake:
        client = LMClient("m", base_url=fake.base_url, api_key=KEY, max_retries=3)
        assert client.complete(["x"], SamplingParams())[0].text == " Yes"
        assert len(fake.requests) == 4


def test_permanent_fault_names_step_request_and_cause():
    with FakeOpenAI(default="500") as fake:
        client = LMClient("m", base_url=fake.base_url, api_key=KEY, max_retries=1)
        with pytest.raises(LMRequestError) as err:
            client.complete(["x", "y"], SamplingParams(), step="instances", request_ids=[7, 8])
    msg = str(err.value)
    assert "step 'instances'" in msg and "request" in msg and "InternalServerError" in msg and KEY not in msg


def test_garbage_responses_are_clear_errors_or_empty_completions():
    with FakeOpenAI(script=["empty_choices", "length"]) as fake:
        client = LMClient("m", base_url=fake.base_url, api_key=KEY, max_concurrency=1)
        first, second = client.complete(["x", "y"], SamplingParams())
        assert first.text == "" and first.finish_reason is None
        assert second.finish_reason == "length"
    with FakeOpenAI(default="bad_json") as fake:
        client = LMClient("m", base_url=fake.base_url, api_key=KEY, max_retries=0)
        with pytest.raises(LMRequestError, match="request 0"):
            client.complete(["x"], SamplingParams(), step="classification")


def test_timeout_is_retried_then_reported():
    with FakeOpenAI(default=("slow", 2.0)) as fake:
        client = LMClient("m", base_url=fake.base_url, api_key=KEY, timeout=0.3, max_retries=1)
        with pytest.raises(LMRequestError, match="Timeout"):
            client.complete(["x"], SamplingParams(), step="instructions")


def test_connection_refused_is_reported():
    from selfinstruct_utils.local_lm import free_port

    client = LMClient("m", base_url=f"http://127.0.0.1:{free_port()}/v1", api_key=KEY, max_retries=1)
    with pytest.raises(LMRequestError, match="Connection"):
        client.complete(["x"], SamplingParams())


def test_openai_needs_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        LMClient("gpt-3.5-turbo-instruct")


def test_works_inside_a_running_event_loop():
    import asyncio

    async def inside():
        with FakeOpenAI() as fake:
            return LMClient("m", base_url=fake.base_url, api_key=KEY).complete(["x"], SamplingParams())

    assert asyncio.run(inside())[0].text == " Yes"
