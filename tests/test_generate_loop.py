"""The batched decoding loop of ``LocalLM``: equal to ``transformers``' ``model.generate`` (greedy
and seeded sampling, stop tokens and stop strings), equal to one prompt at a time when rows finish
at different steps, and doing per-row work only for the rows whose new token may end a stop."""

from __future__ import annotations

import pytest
import torch

from reasonlab.device import torch_threads
from reasonlab.lm.local import LocalLM

PROMPTS = ["Tom has", "The answer is 7 and the quick brown fox", "A train", "Hello world! Step 1:",
           "Mia reads 12 pages", "Step 1: 60 / 2", "How many apples", "The quick"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture()
def lm(tiny_model, tiny_tokenizer):
    return LocalLM(tiny_model, tiny_tokenizer, device="cpu", batch_size=8)


def hf_rows(lm, prompts, *, max_new_tokens, temperature, stops, seed):
    """``model.generate`` on the same left-padded rows; new tokens per row."""
    ids, attn = lm._left_pad([lm.encode(p) for p in prompts])
    kw = dict(max_new_tokens=max_new_tokens, pad_token_id=lm.pad_token_id,
              eos_token_id=sorted(lm.stop_token_ids), top_k=None, top_p=None)
    if stops:
        kw.update(stop_strings=list(stops), tokenizer=lm.tokenizer)
    kw.update(do_sample=True, temperature=temperature) if temperature else \
        kw.update(do_sample=False, temperature=None)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = lm.model.generate(input_ids=ids, attention_mask=attn, **kw)
    return out[:, ids.shape[1]:].tolist()


def by_length(lm, prompts):
    return sorted(prompts, key=lambda p: len(lm.encode(p)))  # generate's own batching order


def test_choose_is_multinomial_and_independent_of_finished_rows():
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(logits / 0.7, -1)
    want = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(5)).squeeze(-1)
    got = LocalLM._choose(logits, 0.7, 1.0, torch.Generator().manual_seed(5))
    assert got.tolist() == want.tolist()
    rows = torch.tensor([1, 4, 5])  # rows 0, 2, 3 have left the batch
    sub = LocalLM._choose(logits[rows], 0.7, 1.0, torch.Generator().manual_seed(5), rows, 6)
    assert sub.tolist() == want[rows].tolist()


@pytest.mark.parametrize("temperature,stops", [(0.0, []), (0.0, ["e", "\n"]), (1.0, ["e"]),
                                               (1.0, [])])
def test_generate_equals_transformers_generate(lm, temperature, stops):
    prompts = by_length(lm, PROMPTS)
    ours = lm.generate(prompts, max_new_tokens=20, temperature=temperature, stop=stops, seed=3)
    theirs = hf_rows(lm, prompts, max_new_tokens=20, temperature=temperature, stops=stops, seed=3)
    lengths = {len(g.token_ids) for g in ours}
    if stops:
        assert len(lengths) > 2  # rows finished at different steps
    for g, row in zip(ours, theirs):
        n = len(g.token_ids)
        assert g.token_ids == row[:n]
        assert n == 20 or len(row) == n or row[n] == lm.pad_token_id  # the library stopped too


def test_prefill_groups_rows_of_different_lengths(lm):
    prompts = by_length(lm, PROMPTS)
    lens = [len(lm.encode(p)) for p in prompts]
    assert lens[-1] > 2 * lens[0]  # more than one prefill group
    lm.reset_counters()
    ours = lm.generate(prompts, max_new_tokens=1)
    assert lm.reset_counters()["forward_tokens"] < len(prompts) * lens[-1]  # less padding
    theirs = hf_rows(lm, prompts, max_new_tokens=1, temperature=0.0, stops=[], seed=0)
    assert [g.token_ids for g in ours] == theirs


def test_rows_finishing_early_equal_one_at_a_time(lm):
    stops = ["e", "!"]
    batched = lm.generate(PROMPTS, max_new_tokens=24, stop=stops)
    reasons = {g.finish_reason for g in batched}
    assert reasons == {"stop", "length"} or len({len(g.token_ids) for g in batched}) > 2
    for p, g in zip(PROMPTS, batched):
        one = lm.generate([p], max_new_tokens=24, stop=stops)[0]
        assert (g.text, g.token_ids, g.finish_reason, g.stop_reason) == \
            (one.text, one.token_ids, one.finish_reason, one.stop_reason)
        assert g.logprobs == pytest.approx(one.logprobs, abs=1e-5)
        if g.finish_reason == "stop":
            assert g.stop_reason not in g.text and g.stop_reason in lm.decode(g.token_ids)


def test_stop_checks_decode_only_rows_that_may_stop(lm, monkeypatch):
    stops = ["\nQ:"]
    _, may_stop = lm._token_masks(stops, len(lm.tokenizer), torch.device("cpu"))
    texts = [lm.decode([i]) for i in range(len(lm.tokenizer))]
    assert all(may_stop[i] for i, t in enumerate(texts) if ":" in t)
    assert not any(may_stop[i] for i, t in enumerate(texts) if ":" not in t)
    _, may_stop_euro = lm._token_masks(["€"], len(lm.tokenizer), torch.device("cpu"))
    assert all(may_stop_euro[i] for i, t in enumerate(texts) if "\ufffd" in t)
    calls = []
    real = lm.decode
    monkeypatch.setattr(lm, "decode", lambda ids: calls.append(len(ids)) or real(ids))
    gens = lm.generate(PROMPTS, max_new_tokens=30, stop=stops)
    tokens = sum(len(g.token_ids) for g in gens)
    flagged = sum(bool(may_stop[t]) for g in gens for t in g.token_ids)
    # one decode per finished row, plus a tail (and maybe a full) decode per flagged token
    assert len(calls) <= len(gens) + 2 * flagged
    assert len(calls) < tokens / 2  # a decode per row per step would be `tokens` calls


def test_finished_rows_leave_the_batch(lm):
    prompts = by_length(lm, PROMPTS)
    full = lm.generate(prompts, max_new_tokens=24)
    stop_at = [full[i].text[3] if len(full[i].text) > 3 else "x" for i in range(4)]
    lm.reset_counters()
    gens = lm.generate(prompts, max_new_tokens=24, stop=stop_at)
    counts = lm.reset_counters()
    assert counts["generated_tokens"] == sum(len(g.token_ids) for g in gens)
    prompt_tokens = len(prompts) * max(len(lm.encode(p)) for p in prompts)
    assert sum(g.finish_reason == "stop" for g in gens) >= 4  # rows 0-3 stop by their 4th char
    assert counts["forward_tokens"] - prompt_tokens < len(prompts) * 23  # they left the batch
