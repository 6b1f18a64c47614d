"""The HTTP client's parts on their own: cache keys and the SQLite WAL cache, backoff with
Retry-After (against a loopback endpoint that answers 429 and 503 first), echo parsing as vLLM
sends it, model specs, and config errors that name the key."""

from __future__ import annotations

import random
import threading
import time

import pytest
from fastapi import Request

from reasonlab.config import ConfigError
from reasonlab.lm.http import (HTTPConfig, HTTPLM, ScoringUnsupported, backoff_delay, echo_scored,
                               retry_after_s)
from reasonlab.lm.load import load_lm, parse_http_spec, register_resolver
from reasonlab.lm.request_cache import RequestCache, request_key
from serve_utils import free_port


def test_request_key_covers_every_field():
    body = {"model": "m", "prompt": "p", "n": 2, "temperature": 1.0, "seed": 3}
    k = request_key("http://h/v1", "m", "completions", body)
    assert k == request_key("http://h/v1/", "m", "completions", dict(reversed(body.items())))
    others = [request_key("http://h/v1", "m", "completions", {**body, "n": 3}),
              request_key("http://h/v1", "m", "completions", {**body, "seed": 4}),
              request_key("http://h/v1", "m", "chat", body),
              request_key("http://h2/v1", "m", "completions", body),
              request_key("http://h/v1", "m2", "completions", body),
              request_key("http://h/v1", "m", "completions", body, repeat=1)]
    assert len({k, *others}) == 7


def test_cache_is_wal_shared_and_durable(tmp_path):
    path = tmp_path / "c.sqlite"
    a, b = RequestCache(path), RequestCache(path)
    assert a.journal_mode() == "wal"

    def write(start: int) -> None:
        for i in range(start, start + 50):
            a.put(f"k{i}", "e", "m", {"i": i}, {"answer": i})

    threads = [threading.Thread(target=write, args=(s,)) for s in (0, 50, 100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(b) == 150 and b.get("k123") == {"answer": 123} and b.get("nope") is None
    a.put("k1", "e", "m", {}, {"answer": "changed"})  # the first answer stays
    a.close()
    assert RequestCache(path).get("k1") == {"answer": 1}
    (tmp_path / "bad.sqlite").write_text("not a database " * 100)
    with pytest.raises(ValueError, match="bad.sqlite"):
        RequestCache(tmp_path / "bad.sqlite")


def test_backoff_grows_with_jitter_and_honours_retry_after():
    rng = random.Random(0)
    d = [[backoff_delay(a, 0.5, 8.0, None, rng) for _ in range(2000)] for a in range(6)]
    for a, ds in enumerate(d):
        cap = min(8.0, 0.5 * 2 ** a)
        assert 0 <= min(ds) and max(ds) <= cap
        assert sum(ds) / len(ds) == pytest.approx(cap / 2, rel=0.08)  # uniform(0, cap)
    assert backoff_delay(0, 0.5, 8.0, 3.0, rng) == 3.0
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({}) is None
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


def test_client_retries_429_and_5xx_honouring_retry_after():
    """A loopback endpoint answers 429 (Retry-After 0.4 s), then 503, then a completion."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    calls: list[float] = []
    app = FastAPI()

    @app.post("/v1/completions")
    async def completions(request: Request):
        if (await request.json()).get("echo"):  # a server that cannot score
            return JSONResponse({"error": {"message": "echo is not supported"}}, 400)
        calls.append(time.monotonic())
        if len(calls) == 1:
            return JSONResponse({"error": {"message": "slow down"}}, 429, {"Retry-After": "0.4"})
        if len(calls) == 2:
            return JSONResponse({"error": {"message": "busy"}}, 503)
        return {"id": "x", "object": "text_completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "text": " ok", "finish_reason": "stop",
                             "logprobs": {"tokens": [" ok"], "token_logprobs": [-0.5],
                                          "text_offset": [0]}, "token_ids": [7]}]}

    @app.post("/v1/chat/completions")
    async def chat():
        return JSONResponse({"error": {"message": "bad key"}}, 401)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        lm = HTTPLM(HTTPConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", cache=None,
                               backoff_s=0.01, max_backoff_s=0.05))
        g = lm.generate(["hi"], max_new_tokens=2)[0]
        assert (g.text, g.token_ids, g.logprobs, g.finish_reason) == (" ok", [7], [-0.5], "stop")
        assert lm.counters == {"requests": 3, "retries": 2, "cache_hits": 0}
        assert calls[1] - calls[0] >= 0.4  # waited as asked
        import openai

        with pytest.raises(openai.AuthenticationError):  # 401 is not retried
            lm.chat([[{"role": "user", "content": "x"}]])
        assert lm.counters["requests"] == 4
        with pytest.raises(ScoringUnsupported, match="cannot score: .*echo is not supported"):
            lm.score(["Tom has"], [" 3"])
        lm.close()
    finally:
        server.should_exit = True
        thread.join(10)


def test_echo_parsing_with_vllm_style_offsets():
    # vLLM counts the BOS token's text in the offsets; the split is taken from the end
    choice = {"logprobs": {"tokens": ["<s>", "Tom", " has", " 3", " apples", "!"],
                           "token_logprobs": [None, -1.0, -2.0, -3.0, -4.0, -9.0],
                           "text_offset": [0, 3, 6, 10, 12, 19]},
              "prompt_token_ids": [1, 10, 11, 12, 13]}
    s = echo_scored(choice, " 3 apples", generated=1)
    assert s.token_logprobs == [-3.0, -4.0] and s.token_ids == [12, 13] and s.total == -7.0
    straddle = echo_scored(choice, "s 3 apples", generated=1)  # " has" straddles the boundary
    assert straddle.token_logprobs == [-2.0, -3.0, -4.0]
    with pytest.raises(ScoringUnsupported, match="echo"):
        echo_scored({"logprobs": None}, " x", generated=1)


def test_model_specs_and_config_errors(tmp_path):
    assert parse_http_spec("http://127.0.0.1:8000/v1#tiny") == ("http://127.0.0.1:8000/v1", "tiny")
    lm = load_lm("http://127.0.0.1:9/v1#tiny", cache=None)
    assert isinstance(lm, HTTPLM) and lm.model_name == "tiny"
    assert lm.cfg.base_url == "http://127.0.0.1:9/v1"
    lm.close()
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_lm("no-such-model")
    from reasonlab.lm import load

    def resolver(spec):
        return tmp_path if spec == "recipe-x" else None

    register_resolver(resolver)
    try:
        with pytest.raises((OSError, ValueError), match="config.json"):  # an empty folder
            load_lm("recipe-x")
    finally:
        load._RESOLVERS.remove(resolver)
    with pytest.raises(ConfigError, match="base_url"):
        HTTPConfig(base_url="ftp://x")
    with pytest.raises(ConfigError, match="max_concurrency"):
        HTTPConfig(base_url="http://x/v1", max_concurrency=0)
    with pytest.raises(ValueError, match="tokenizer"):
        HTTPLM(HTTPConfig(base_url="http://x/v1", model="m", cache=None)).apply_chat_template(
            [{"role": "user", "content": "hi"}])
