"""The openai backend against a real OpenAI-compatible vLLM server on 127.0.0.1 (tiny model),
started with an API key: chat, structured output, forced lengths, auth failure, no key leaks."""
import asyncio
import json
import re

import pytest

from dataset_builder.llm import EngineConfig, EngineError, Sampling
from dataset_builder.llm.openai_engine import OpenAIEngine
from dataset_builder.llm.server import free_port, start_server, stop_server

pytestmark = pytest.mark.integration
KEY = "sk-test-" + "k" * 24
MSG = [{"role": "user", "content": "Write about rivers."}]


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc = start_server(tiny_model, port, 2048, log, served_name="tiny", api_key=KEY)
    yield f"http://127.0.0.1:{port}/v1", log
    stop_server(proc)


def _engine(url, monkeypatch, key=KEY, **kw):
    monkeypatch.setenv("LW_TEST_KEY", key)
    return OpenAIEngine(EngineConfig(backend="openai", base_url=url, model="tiny",
                                     api_key_env="LW_TEST_KEY", backoff_s=0.05, **kw))


def test_chat_structured_and_forced_length(server, monkeypatch):
    url, _ = server
    e = _engine(url, monkeypatch)

    async def go():
        plain = await e.chat(MSG, Sampling(max_tokens=12, min_tokens=12, ignore_eos=True))
        rx = await e.chat(MSG, Sampling(max_tokens=20, regex=r"(yes|no) [0-9]{3}"))
        schema = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1,
                                                             "maximum": 5}},
                  "required": ["score"], "additionalProperties": False}
        js = await e.chat(MSG, Sampling(max_tokens=30, json_schema=schema, temperature=0.0))
        await e.aclose()
        return plain, rx, js
    plain, rx, js = asyncio.run(go())
    assert plain.output_tokens == 12 and plain.prompt_tokens > 0
    assert re.fullmatch(r"(yes|no) [0-9]{3}", rx.text), rx.text
    assert 1 <= json.loads(js.text)["score"] <= 5
    assert e.metrics()["requests"] == 3 and e.metrics()["retries"] == 0


def test_wrong_key_fails_at_once_and_never_appears(server, monkeypatch):
    url, log = server
    e = _engine(url, monkeypatch, key="sk-wrong-" + "w" * 20)
    with pytest.raises(EngineError, match="answered 401") as info:
        asyncio.run(e.chat(MSG, Sampling(max_tokens=4)))
    assert e.metrics()["retries"] == 0
    assert "sk-wrong" not in str(info.value) and KEY not in str(info.value)
    assert KEY not in log.read_text(errors="replace")


def test_context_overflow_is_a_clear_error(server, monkeypatch):
    url, _ = server
    e = _engine(url, monkeypatch)
    with pytest.raises(EngineError, match="answered 400"):
        asyncio.run(e.chat([{"role": "user", "content": "word " * 5000}], Sampling(max_tokens=4)))
