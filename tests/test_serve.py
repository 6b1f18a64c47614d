"""``reasonlab serve`` driven over loopback with the official ``openai`` client and with ``HTTPLM``:
the same greedy text and log-probabilities as the local model, streaming, errors in OpenAI's
shape, dynamic batching, 503 when overloaded, and a rerun served by the request cache alone."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
import torch

from reasonlab.device import torch_threads
from reasonlab.lm.http import HTTPConfig, HTTPLM
from reasonlab.lm.local import LocalLM
from serve_utils import PROMPTS, micro_model, running_server

KEY = "test-key"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def local(tiny_tokenizer):
    return LocalLM(micro_model(tiny_tokenizer), tiny_tokenizer, device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def served(local):
    with running_server(local, api_key=KEY, max_batch=8, max_tokens_limit=64, max_n=8) as (url, srv):
        yield url, srv


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0], api_key=KEY, max_retries=0)


def http_lm(url: str, **kw) -> HTTPLM:
    kw.setdefault("cache", None)
    return HTTPLM(HTTPConfig(base_url=url, model="micro", api_key=KEY, backoff_s=0.05, **kw))


# ---------------------------------------------------------------- the official client
def test_openai_completions_equal_local_greedy(client, local):
    ref = local.generate(PROMPTS, max_new_tokens=12)
    r = client.completions.create(model="micro", prompt=PROMPTS, max_tokens=12, temperature=0,
                                  logprobs=0, extra_body={"return_token_ids": True})
    assert len(r.choices) == len(PROMPTS)
    assert len({g.text for g in ref}) > 1  # the micro model says different things
    for c, g in zip(sorted(r.choices, key=lambda c: c.index), ref):
        assert c.text == g.text
        assert c.model_extra["token_ids"] == g.token_ids
        assert c.logprobs.token_logprobs == pytest.approx(g.logprobs, abs=1e-4)
        assert c.finish_reason == g.finish_reason
    assert r.usage.completion_tokens == sum(len(g.token_ids) for g in ref)


def test_openai_chat_and_streaming_equal_local(client, local):
    msgs = [{"role": "user", "content": "Tom has 3 apples. How many?"}]
    ref = local.chat([msgs], max_new_tokens=10)[0]
    r = client.chat.completions.create(model="micro", messages=msgs, max_tokens=10, temperature=0,
                                       logprobs=True, top_logprobs=3)
    c = r.choices[0]
    assert c.message.role == "assistant" and c.message.content == ref.text
    lps = [t.logprob for t in c.logprobs.content]
    assert lps == pytest.approx(ref.logprobs, abs=1e-4)
    for t in c.logprobs.content:  # greedy: the chosen token is the most likely one
        assert len(t.top_logprobs) == 3
        assert t.top_logprobs[0].logprob == pytest.approx(t.logprob, abs=1e-4)
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob
    stream = client.chat.completions.create(model="micro", messages=msgs, max_tokens=10,
                                            temperature=0, stream=True)
    chunks = list(stream)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == ref.text
    assert len(chunks) >= 3 and chunks[-1].choices[0].finish_reason == ref.finish_reason
    prompt_ref = local.generate(["Tom has"], max_new_tokens=9)[0]
    pieces = list(client.completions.create(model="micro", prompt="Tom has", max_tokens=9,
                                            temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == prompt_ref.text
    assert pieces[-1].choices[0].finish_reason == "length"


def test_echo_logprobs_are_teacher_forced(client, local):
    text = "Tom has 3 apples and buys 4 more."
    r = client.completions.create(model="micro", prompt=text, max_tokens=0, echo=True, logprobs=2,
                                  temperature=0)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == text
    ids = local.encode(text)
    assert len(lp.tokens) == len(ids) and lp.token_logprobs[0] is None
    ref = local.score([local.decode(ids[:1])], [text])[0]  # every token after BOS
    assert lp.token_logprobs[1:] == pytest.approx(ref.token_logprobs, abs=1e-4)
    assert all(max(top.values()) >= v - 1e-5 for top, v in zip(lp.top_logprobs[1:], lp.token_logprobs[1:]))
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)


# ---------------------------------------------------------------- our LanguageModel
def test_httplm_generate_chat_score_equal_local(served, local):
    lm = http_lm(served[0])
    gens = lm.generate(PROMPTS + PROMPTS[:2], max_new_tokens=12, stop=["\n"])
    ref = local.generate(PROMPTS + PROMPTS[:2], max_new_tokens=12, stop=["\n"])
    for g, r in zip(gens, ref):
        assert (g.text, g.token_ids, g.finish_reason) == (r.text, r.token_ids, r.finish_reason)
        assert g.logprobs == pytest.approx(r.logprobs, abs=1e-4)
    assert lm.counters["requests"] == len(PROMPTS)  # the repeated prompts share a request
    conv = [[{"role": "user", "content": "Hello world!"}]]
    assert lm.chat(conv, max_new_tokens=8)[0].text == local.chat(conv, max_new_tokens=8)[0].text
    conts = [" 3 apples", " 60 km in 2 hours", "!"]
    scored = lm.score(PROMPTS[:3], conts)
    for s, r in zip(scored, local.score(PROMPTS[:3], conts)):
        assert s.token_ids == r.token_ids
        assert s.token_logprobs == pytest.approx(r.token_logprobs, abs=1e-4)
    lm.close()


def test_httplm_seeded_samples_equal_local_and_n_groups(served, local):
    lm = http_lm(served[0])
    got = lm.generate(["A train"] * 4, max_new_tokens=8, temperature=1.0, seed=5)
    ref = local.generate(["A train"] * 4, max_new_tokens=8, temperature=1.0, seed=5)
    assert [g.token_ids for g in got] == [r.token_ids for r in ref]
    assert len({tuple(g.token_ids) for g in got}) > 1  # four different samples, one request
    assert lm.counters["requests"] == 1
    lm.close()


# ---------------------------------------------------------------- errors
def _post(url: str, path: str, content: bytes | str, key: str | None = KEY) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(url + path, content=content, headers=headers, timeout=30)


def _error(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]


def test_errors_name_status_and_field(served):
    url = served[0]
    ok = {"model": "micro", "prompt": "Tom has", "max_tokens": 4}
    r = _post(url, "/completions", "{not json")
    assert r.status_code == 400 and "malformed JSON" in _error(r)["message"]
    r = _post(url, "/completions", json.dumps(ok)[:-7])  # truncated
    assert r.status_code == 400 and "truncated" in _error(r)["message"]
    r = _post(url, "/completions", json.dumps(ok), key="wrong")
    assert r.status_code == 401 and _error(r)["code"] == "invalid_api_key"
    assert "API key" in _error(r)["message"]
    assert _post(url, "/completions", json.dumps(ok), key=None).status_code == 401
    r = _post(url, "/completions", json.dumps({**ok, "max_tokens": -1}))
    err = _error(r)
    assert r.status_code == 400 and err["param"] == "max_tokens" and "max_tokens" in err["message"]
    r = _post(url, "/completions", json.dumps({**ok, "prompt": "Tom has 3 apples. " * 40}))
    err = _error(r)
    assert r.status_code == 400 and err["param"] == "prompt" and "context of 128" in err["message"]
    r = _post(url, "/completions", json.dumps({**ok, "max_tokens": 65}))
    assert r.status_code == 400 and _error(r)["param"] == "max_tokens"
    r = _post(url, "/completions", json.dumps({**ok, "n": 9}))
    assert r.status_code == 400 and _error(r)["param"] == "n"
    r = _post(url, "/completions", json.dumps({**ok, "model": "other"}))
    assert r.status_code == 404 and _error(r)["param"] == "model"
    r = _post(url, "/completions", json.dumps({"model": "micro"}))
    assert r.status_code == 400 and _error(r)["param"] == "prompt"
    r = _post(url, "/chat/completions", json.dumps({"model": "micro", "messages": [{"role": "user"}]}))
    assert r.status_code == 400 and _error(r)["param"] == "messages.0.content"
    r = _post(url, "/completions", json.dumps({**ok, "prompt": "x" * (2 << 20)}))
    assert r.status_code == 413
    r = httpx.get(url + "/nothing-here", timeout=10)
    assert r.status_code == 404 and "error" in r.json()
    h = httpx.get(url.removesuffix("/v1") + "/health", timeout=10).json()
    assert h["status"] == "ok" and h["model"] == "micro"
    models = httpx.get(url + "/models", headers={"authorization": f"Bearer {KEY}"}, timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["micro"]


# ---------------------------------------------------------------- batching and overload
class Gated:
    """A LocalLM whose generate waits for ``gate`` and records each batch's size."""

    def __init__(self, lm):
        self.lm, self.gate, self.batches = lm, threading.Event(), []

    def __getattr__(self, name):
        return getattr(self.lm, name)

    def generate(self, prompts, **kw):
        assert self.gate.wait(30)
        self.batches.append(len(prompts))
        return self.lm.generate(prompts, **kw)


def _wait_for(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_concurrent_requests_are_batched(local):
    gated = Gated(local)
    with running_server(gated, max_batch=8, batch_wait_ms=2) as (url, srv):
        results: dict[int, str] = {}

        def ask(i: int) -> None:
            r = httpx.post(url + "/completions", json={"model": "micro", "prompt": PROMPTS[i % 6],
                                                       "max_tokens": 10, "temperature": 0},
                           timeout=60)
            results[i] = r.json()["choices"][0]["text"]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        threads[0].start()
        _wait_for(lambda: srv.batcher.stats["batches"] == 1)  # the first batch holds the model
        for t in threads[1:]:
            t.start()
        _wait_for(lambda: srv.batcher.queued_rows == 7)
        gated.gate.set()
        for t in threads:
            t.join(60)
    assert gated.batches == [1, 7]
    ref = local.generate(PROMPTS, max_new_tokens=10)
    assert [results[i] for i in range(8)] == [ref[i % 6].text for i in range(8)]


def test_overloaded_server_answers_503(local):
    gated = Gated(local)
    with running_server(gated, max_batch=1, max_queue=1, batch_wait_ms=0) as (url, srv):
        body = {"model": "micro", "prompt": "Tom has", "max_tokens": 4, "temperature": 0}
        out = []
        first = threading.Thread(target=lambda: out.append(httpx.post(url + "/completions", json=body, timeout=60)))
        first.start()
        _wait_for(lambda: srv.batcher.stats["batches"] == 1)
        second = threading.Thread(target=lambda: out.append(httpx.post(url + "/completions", json=body, timeout=60)))
        second.start()
        _wait_for(lambda: srv.batcher.queued_rows == 1)
        r = httpx.post(url + "/completions", json=body, timeout=60)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert _error(r)["code"] == "overloaded"
        gated.gate.set()
        first.join(60)
        second.join(60)
    assert [o.status_code for o in out] == [200, 200]


# ---------------------------------------------------------------- the request cache
def test_rerun_against_stopped_server_comes_from_cache(local, tmp_path):
    cache = tmp_path / "requests.sqlite"
    prompts = PROMPTS[:4] + ["A train"] * 3
    with running_server(local, max_batch=8) as (url, _):
        lm = HTTPLM(HTTPConfig(base_url=url, model="micro", cache=str(cache)))
        greedy = lm.generate(prompts, max_new_tokens=8)
        seeded = lm.generate(["Tom has"] * 3, max_new_tokens=8, temperature=1.0, seed=7)
        first = lm.generate(["Tom has"] * 2, max_new_tokens=8, temperature=1.0)
        second = lm.generate(["Tom has"] * 2, max_new_tokens=8, temperature=1.0)
        made = lm.counters["requests"]
        lm.close()
    assert made == 5 + 1 + 1 + 1
    assert [g.token_ids for g in first] != [g.token_ids for g in second]  # unseeded: new samples
    # the server is stopped: a rerun is answered by the cache alone, in the same order
    again = HTTPLM(HTTPConfig(base_url=url, model="micro", cache=str(cache), max_retries=0))
    assert [g.text for g in again.generate(prompts, max_new_tokens=8)] == [g.text for g in greedy]
    assert [g.token_ids for g in again.generate(["Tom has"] * 3, max_new_tokens=8, temperature=1.0,
                                                seed=7)] == [g.token_ids for g in seeded]
    assert [g.token_ids for g in again.generate(["Tom has"] * 2, max_new_tokens=8,
                                                temperature=1.0)] == [g.token_ids for g in first]
    assert [g.token_ids for g in again.generate(["Tom has"] * 2, max_new_tokens=8,
                                                temperature=1.0)] == [g.token_ids for g in second]
    assert again.counters["requests"] == 0 and again.counters["cache_hits"] == 8
    assert again.cache.journal_mode() == "wal" and len(again.cache) == 8
    with pytest.raises(openai.APIConnectionError):  # a request it has not seen needs the server
        again.generate(["Never asked"], max_new_tokens=4)
    again.close()
