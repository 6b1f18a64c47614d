"""The generation-heavy runners take an endpoint wherever they take a local model: accuracy
through a ``http://host:port/v1#name`` spec gives the local model's numbers, and rejection
sampling over HTTP reruns from the request cache with zero requests and the same samples."""

from __future__ import annotations

import pytest

from reasonlab.data.problem import Problem
from reasonlab.device import torch_threads
from reasonlab.evals.accuracy import AccuracyConfig, run_accuracy
from reasonlab.lm.http import HTTPConfig, HTTPLM
from reasonlab.lm.local import LocalLM
from reasonlab.posttrain import run_rejection_sampling
from reasonlab.posttrain.config import SamplingConfig
from reasonlab.runs import read_jsonl
from serve_utils import micro_model, running_server

PROBLEMS = [Problem(id=f"p{i}", question=f"Tom has {i} apples and buys {i + 1} more. How many?",
                    solution="", answer=str(2 * i + 1), skills=["add"]) for i in range(6)]


@pytest.fixture(scope="module")
def local(tiny_tokenizer):
    with torch_threads(1):
        yield LocalLM(micro_model(tiny_tokenizer), tiny_tokenizer, device="cpu", batch_size=8)


def test_accuracy_through_an_endpoint_spec_equals_local(local, tmp_path, monkeypatch):
    monkeypatch.setenv("REASONLAB_REQUEST_CACHE", str(tmp_path / "cache.sqlite"))
    cfg = AccuracyConfig(limit=None, max_new_tokens=16, batch_size=4, bootstrap=0)
    ref = run_accuracy(cfg, local, tmp_path / "local", problems=PROBLEMS, progress=False)
    with running_server(local, max_batch=8) as (url, _):
        got = run_accuracy(cfg, f"{url}#micro", tmp_path / "http", problems=PROBLEMS, progress=False)
    assert got["overall"] == ref["overall"]
    local_preds = [r["completions"] for r in read_jsonl(tmp_path / "local" / "predictions.jsonl")]
    http_preds = [r["completions"] for r in read_jsonl(tmp_path / "http" / "predictions.jsonl")]
    assert http_preds == local_preds and len({c[0] for c in http_preds}) > 1


def test_rejection_sampling_over_http_reruns_from_cache(local, tmp_path):
    cfg = SamplingConfig(k=3, temperature=1.0, max_new_tokens=12, batch_size=2, n_prompts=0, seed=3)
    cache = str(tmp_path / "cache.sqlite")
    with running_server(local, max_batch=8) as (url, _):
        lm = HTTPLM(HTTPConfig(base_url=url, model="micro", cache=cache))
        res = run_rejection_sampling(lm, PROBLEMS, cfg, tmp_path / "rs1", progress=False)
        made = lm.counters["requests"]
        lm.close()
    assert res["prompts"] == 6 and res["samples"] == 18 and made == 6  # one n=3 request a prompt
    first = list(read_jsonl(tmp_path / "rs1" / "samples.jsonl"))
    for rec in first:
        texts = [s["text"] for s in rec["samples"]]
        assert len(set(texts)) > 1  # k different samples, not one cached answer three times
        assert all(s["n_tokens"] > 0 and s["logprob"] < 0 for s in rec["samples"])
    again = HTTPLM(HTTPConfig(base_url=url, model="micro", cache=cache, max_retries=0))
    run_rejection_sampling(again, PROBLEMS, cfg, tmp_path / "rs2", progress=False)
    assert again.counters["requests"] == 0 and again.counters["cache_hits"] == 6
    assert list(read_jsonl(tmp_path / "rs2" / "samples.jsonl")) == first
    again.close()
