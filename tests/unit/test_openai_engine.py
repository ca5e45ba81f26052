"""Retry/backoff policy of the openai backend against a scripted local HTTP server.

The real protocol is exercised against `vllm serve` in tests/integration/test_openai_vllm_serve.py.
"""
import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dataset_builder.llm import EngineConfig, EngineError, Sampling
from dataset_builder.llm.openai_engine import OpenAIEngine

OK = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 5, "completion_tokens": 1}}


@pytest.fixture
def server():
    script, seen = [], []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.headers.get("Authorization"), body))
            status, payload = script.pop(0) if script else (200, OK)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1", script, seen
    httpd.shutdown()


def _engine(url, **kw):
    return OpenAIEngine(EngineConfig(backend="openai", base_url=url, model="m", backoff_s=0.01,
                                     api_key_env="TEST_LLM_KEY", **kw))


def test_retries_429_and_5xx_then_succeeds(server, monkeypatch):
    url, script, seen = server
    monkeypatch.setenv("TEST_LLM_KEY", "sk-secret-value")
    script += [(429, {"error": "slow down"}), (503, {"error": "busy"})]
    e = _engine(url)
    c = asyncio.run(e.chat([{"role": "user", "content": "x"}], Sampling(regex="[a-z]+",
                                                                         min_tokens=3)))
    assert c.text == "hi" and c.output_tokens == 1
    assert e.metrics()["retries"] == 2 and len(seen) == 3
    assert seen[0][0] == "Bearer sk-secret-value"
    assert seen[0][1]["structured_outputs"] == {"regex": "[a-z]+"} and seen[0][1]["min_tokens"] == 3


def test_other_4xx_fails_at_once_without_leaking_key(server, monkeypatch):
    url, script, seen = server
    monkeypatch.setenv("TEST_LLM_KEY", "sk-secret-value")
    script.append((400, {"error": "bad request: unknown field"}))
    with pytest.raises(EngineError, match="answered 400") as info:
        asyncio.run(_engine(url).chat([{"role": "user", "content": "x"}], Sampling()))
    assert len(seen) == 1 and "sk-secret" not in str(info.value)


def test_gives_up_after_max_retries(server):
    url, script, seen = server
    script += [(500, {})] * 10
    with pytest.raises(EngineError, match="answered 500"):
        asyncio.run(_engine(url, max_retries=2).chat([{"role": "user", "content": "x"}],
                                                     Sampling()))
    assert len(seen) == 3


def test_unreachable_endpoint_is_an_engine_error():
    with pytest.raises(EngineError, match="ConnectError"):
        asyncio.run(_engine("http://127.0.0.1:9/v1", max_retries=1).chat(
            [{"role": "user", "content": "x"}], Sampling()))


def test_concurrency_limit(server):
    url, _, _ = server
    e = _engine(url, max_concurrency=2)

    async def go():
        return await asyncio.gather(*(e.chat([{"role": "user", "content": str(i)}], Sampling())
                                      for i in range(6)))
    assert len(asyncio.run(go())) == 6 and e._sem._value == 2


def test_model_turn_token_ids_are_not_sent(server):
    """`token_ids` on a model turn is for the vllm backend's renderer; the API gets text only."""
    url, _, seen = server
    msgs = [{"role": "user", "content": "x"},
            {"role": "assistant", "content": "y", "token_ids": [1, 2]},
            {"role": "user", "content": "z"}]
    asyncio.run(_engine(url).chat(msgs, Sampling()))
    assert seen[0][1]["messages"][1] == {"role": "assistant", "content": "y"}
    assert msgs[1]["token_ids"] == [1, 2]  # the caller's messages are left as they were


def test_penalties_are_sent_only_when_set(server):
    url, _, seen = server
    e = _engine(url)
    asyncio.run(e.chat([{"role": "user", "content": "x"}], Sampling()))
    asyncio.run(e.chat([{"role": "user", "content": "x"}], Sampling(
        repetition_penalty=1.15, frequency_penalty=0.5, presence_penalty=0.25)))
    plain, pen = seen[0][1], seen[1][1]
    assert not {"repetition_penalty", "frequency_penalty", "presence_penalty"} & set(plain)
    assert (pen["repetition_penalty"], pen["frequency_penalty"], pen["presence_penalty"]) == \
        (1.15, 0.5, 0.25)
